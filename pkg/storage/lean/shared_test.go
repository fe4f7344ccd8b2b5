package lean

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

func compactReport(t *testing.T, s *Storage, name, resourceVersion, size string) *Object {
	t.Helper()
	o, err := s.compact(&unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "reports.example.com/v1", "kind": "Report",
		"metadata": map[string]any{"name": name, "namespace": "team-a", "resourceVersion": resourceVersion},
		"spec":     map[string]any{"size": size},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// encodeJSON serializes as the apiserver's encoders do, and changes the
// object it is given, as the apiserver's converters do: what one encoder
// does to its object must not reach another.
func encodeJSON(calls *int) func(runtime.Object, io.Writer) error {
	return func(obj runtime.Object, w io.Writer) error {
		*calls++
		u := obj.(*unstructured.Unstructured)
		u.SetAnnotations(map[string]string{"touched": "yes"})
		return unstructured.UnstructuredJSONScheme.Encode(u, w)
	}
}

// The watchers of one event share one object, which is decoded and
// serialized once per encoder, and each writes the same bytes.
func TestWatchersShareAnEvent(t *testing.T) {
	s := newTestStorage()
	s.shared = newSharedEvents()
	o := compactReport(t, s, "r1", "5", "3")

	var got []*sharedObject
	for range 3 {
		// Each watcher gets its own copy of the cache's object, as the
		// upstream cache gives it.
		ev, _ := s.expandEvent(watch.Event{Type: watch.Added, Object: o.DeepCopyObject()})
		got = append(got, ev.Object.(*sharedObject))
	}
	if got[0] != got[1] || got[1] != got[2] {
		t.Fatal("three watchers of one event got different objects")
	}

	var calls int
	var outs [3]bytes.Buffer
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range outs {
		wg.Go(func() {
			mu.Lock() // encodeJSON counts without a lock of its own
			defer mu.Unlock()
			if err := got[i].CacheEncode("json", encodeJSON(&calls), &outs[i]); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if calls != 1 {
		t.Errorf("the object was serialized %d times for one encoder, want once", calls)
	}
	want := `{"apiVersion":"reports.example.com/v1","kind":"Report","metadata":{"annotations":{"touched":"yes"},"name":"r1","namespace":"team-a","resourceVersion":"5"},"spec":{"size":"3"}}`
	for i := range outs {
		if strings.TrimSpace(outs[i].String()) != want {
			t.Errorf("watcher %d wrote\n%s\nwant\n%s", i, outs[i].String(), want)
		}
	}

	// Another encoder serializes its own decoding: the first encoder's
	// change is not in it.
	var other bytes.Buffer
	if err := got[0].CacheEncode("other", func(obj runtime.Object, w io.Writer) error {
		if a := obj.(*unstructured.Unstructured).GetAnnotations(); a != nil {
			t.Errorf("the second encoder got an object with annotations %v", a)
		}
		return unstructured.UnstructuredJSONScheme.Encode(obj, w)
	}, &other); err != nil {
		t.Fatal(err)
	}

	// GetObject gives each caller an object of its own.
	a, b := got[0].GetObject().(*unstructured.Unstructured), got[0].GetObject().(*unstructured.Unstructured)
	a.SetName("changed")
	if b.GetName() != "r1" {
		t.Error("changing one caller's object changed another's")
	}
}

// Events that carry different states are never shared: another object, a
// later resourceVersion, or a deletion at the resourceVersion of an update
// (the object's last state, sent to the watchers it left).
func TestDifferentEventsAreNotShared(t *testing.T) {
	s := newTestStorage()
	s.shared = newSharedEvents()
	object := func(typ watch.EventType, o *Object) *sharedObject {
		ev, _ := s.expandEvent(watch.Event{Type: typ, Object: o})
		return ev.Object.(*sharedObject)
	}
	updated := object(watch.Modified, compactReport(t, s, "r1", "6", "4"))
	for _, other := range []*sharedObject{
		object(watch.Modified, compactReport(t, s, "r2", "6", "4")),
		object(watch.Modified, compactReport(t, s, "r1", "7", "5")),
		object(watch.Deleted, compactReport(t, s, "r1", "6", "3")),
	} {
		if other == updated {
			t.Errorf("the event of %s at %s shares the update's object", other.o.key, other.o.ResourceVersion)
		}
	}
	if object(watch.Modified, compactReport(t, s, "r1", "6", "4")) != updated {
		t.Error("a second watcher of the update got an object of its own")
	}
}

// The table keeps no more serializations than its budget: past it, events
// are serialized by each watcher, and the table shares again once older
// events leave it.
func TestSharedEventsBudget(t *testing.T) {
	s := newTestStorage()
	s.shared = newSharedEvents()
	s.shared.budget = 4 << 10
	var calls int
	for i := range 100 {
		ev, _ := s.expandEvent(watch.Event{Type: watch.Added, Object: compactReport(t, s, fmt.Sprintf("r%d", i), "9", strings.Repeat("x", 200))})
		if err := ev.Object.(*sharedObject).CacheEncode("json", encodeJSON(&calls), io.Discard); err != nil {
			t.Fatal(err)
		}
		if kept := s.shared.kept.Load(); kept > s.shared.budget+1024 {
			t.Fatalf("after %d events the table keeps %d bytes, over its budget of %d", i+1, kept, s.shared.budget)
		}
	}
	if kept := s.shared.kept.Load(); kept < s.shared.budget/2 {
		t.Errorf("the table keeps %d bytes; it should fill toward its budget of %d", kept, s.shared.budget)
	}
}

// An event's metadata can be read, and a change to it is in what is
// serialized after it, as with the upstream cache's events.
func TestSharedEventMetadata(t *testing.T) {
	s := newTestStorage()
	s.shared = newSharedEvents()
	ev, _ := s.expandEvent(watch.Event{Type: watch.Modified, Object: compactReport(t, s, "r1", "8", "3")})
	so := ev.Object.(*sharedObject)
	var calls int
	if err := so.CacheEncode("json", encodeJSON(&calls), io.Discard); err != nil {
		t.Fatal(err)
	}
	if so.GetName() != "r1" || so.GetResourceVersion() != "8" {
		t.Errorf("the event's object is %s at %s, want r1 at 8", so.GetName(), so.GetResourceVersion())
	}
	so.SetResourceVersion("9")
	var out bytes.Buffer
	if err := so.CacheEncode("json", func(obj runtime.Object, w io.Writer) error {
		return unstructured.UnstructuredJSONScheme.Encode(obj, w)
	}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"resourceVersion":"9"`) {
		t.Errorf("after the resourceVersion changed, the event serialized as\n%s", out.String())
	}
}
