package lean

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

// Objects with equal labels share one set; objects with other labels do
// not; a set no object holds is forgotten.
func TestLabelSetsShare(t *testing.T) {
	var sets labelSets
	a := sets.share(labels.Set{"app": "web", "tier": "gold"})
	b := sets.share(labels.Set{"tier": "gold", "app": "web"})
	if a == nil || a != b {
		t.Fatalf("equal labels got sets %p and %p, want one", a, b)
	}
	for _, other := range []labels.Set{
		{"app": "web"},
		{"app": "web", "tier": "silver"},
		{"app": "web", "tier": "gold", "x": ""},
		// Keys and values that would run together if not delimited.
		{"app": "webtier", "": "gold"},
		{"ap": "pweb", "tier": "gold"},
	} {
		if got := sets.share(other); got == a || !labels.Equals(got.set, other) {
			t.Errorf("labels %v got the set %v", other, got.set)
		}
	}
	if sets.share(nil) != nil || sets.share(labels.Set{}) != nil {
		t.Error("no labels got a set")
	}
	if n := sets.size(); n != 6 {
		t.Errorf("%d sets held, want 6", n)
	}
	runtime.KeepAlive(a)

	// Only a and b are held from here on; the others are collected.
	held := []*labelSet{a}
	for i := range 1000 {
		sets.share(labels.Set{"object": fmt.Sprint(i)})
	}
	deadline := time.Now().Add(10 * time.Second)
	for sets.size() > 1 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := sets.size(); n != 1 {
		t.Errorf("%d sets held after the objects holding them went, want 1", n)
	}
	if got := sets.share(labels.Set{"app": "web", "tier": "gold"}); got != held[0] {
		t.Error("a set still held was not shared")
	}
	runtime.KeepAlive(held)
}

// The objects of a cache share the sets of equal labels.
func TestObjectsShareLabels(t *testing.T) {
	s := newTestStorage()
	var objects []*Object
	for i := range 20 {
		o, err := s.compact(testReport(i % 4))
		if err != nil {
			t.Fatal(err)
		}
		objects = append(objects, o)
	}
	for i, o := range objects {
		if first := objects[i%4]; o.labels != first.labels {
			t.Errorf("object %d does not share the labels of object %d, which are equal", i, i%4)
		}
		if i%4 != 0 && o.labels == objects[0].labels {
			t.Errorf("object %d shares the labels of object 0, which differ", i)
		}
	}
}
