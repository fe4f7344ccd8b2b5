package retention

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// obj is an object of namespace ns created age ago.
func obj(ns, name string, age time.Duration) Object {
	return Object{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name), Created: now.Add(-age)}
}

func terminating(o Object) Object {
	o.Terminating = true
	return o
}

// names renders deletions as "reason:namespace/name", in order.
func names(ds []Deletion) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%s:%s/%s", d.Reason, d.Namespace, d.Name))
	}
	return out
}

func TestSelect(t *testing.T) {
	tests := map[string]struct {
		objects []Object
		policy  Policy
		want    []string
	}{
		"no policy deletes nothing": {
			objects: []Object{obj("a", "x", 1000*time.Hour)},
		},
		"older than maxAge, oldest first": {
			objects: []Object{obj("a", "new", time.Minute), obj("a", "old", 3*time.Hour), obj("b", "older", 5*time.Hour), obj("a", "edge", time.Hour)},
			policy:  Policy{MaxAge: time.Hour},
			// Exactly maxAge old is not older than maxAge.
			want: []string{"maxAge:b/older", "maxAge:a/old"},
		},
		"the newest per namespace stay": {
			objects: []Object{
				obj("a", "a1", 5*time.Minute), obj("a", "a2", 4*time.Minute), obj("a", "a3", 3*time.Minute), obj("a", "a4", 2*time.Minute),
				obj("b", "b1", 10*time.Minute), obj("b", "b2", 9*time.Minute),
			},
			policy: Policy{MaxObjects: 2},
			want:   []string{"maxObjects:a/a1", "maxObjects:a/a2"},
		},
		"a cluster-scoped type counts as one namespace": {
			objects: []Object{obj("", "g1", 3*time.Second), obj("", "g2", 2*time.Second), obj("", "g3", time.Second)},
			policy:  Policy{MaxObjects: 1},
			want:    []string{"maxObjects:/g1", "maxObjects:/g2"},
		},
		"created in the same second: the greater name is the newer": {
			objects: []Object{obj("a", "r03", 0), obj("a", "r10", 0), obj("a", "r01", 0), obj("a", "r02", time.Second), obj("a", "r11", 0)},
			policy:  Policy{MaxObjects: 2},
			// r02 is a second older than the others, whatever its name.
			want: []string{"maxObjects:a/r02", "maxObjects:a/r01", "maxObjects:a/r03"},
		},
		"terminating objects are neither deleted again nor kept": {
			objects: []Object{
				terminating(obj("a", "t-new", 0)), obj("a", "x1", 3*time.Minute), obj("a", "x2", 2*time.Minute), obj("a", "x3", time.Minute),
				terminating(obj("a", "t-old", 10*time.Hour)),
			},
			policy: Policy{MaxAge: time.Hour, MaxObjects: 2},
			want:   []string{"maxObjects:a/x1"},
		},
		"objects past maxAge do not count toward maxObjects": {
			objects: []Object{obj("a", "old1", 2*time.Hour), obj("a", "old2", 3*time.Hour), obj("a", "x1", 2*time.Minute), obj("a", "x2", time.Minute)},
			policy:  Policy{MaxAge: time.Hour, MaxObjects: 2},
			want:    []string{"maxAge:a/old2", "maxAge:a/old1"},
		},
		"both bounds: the oldest go first whatever the reason": {
			objects: []Object{
				obj("a", "x1", 30*time.Minute), obj("a", "x2", 20*time.Minute), obj("a", "x3", 10*time.Minute),
				obj("b", "y1", 90*time.Minute), obj("b", "y2", 5*time.Minute),
			},
			policy: Policy{MaxAge: time.Hour, MaxObjects: 1},
			want:   []string{"maxAge:b/y1", "maxObjects:a/x1", "maxObjects:a/x2"},
		},
		"same name and age in two namespaces: ordered by namespace": {
			objects: []Object{obj("b", "x", 2*time.Hour), obj("a", "x", 2*time.Hour)},
			policy:  Policy{MaxAge: time.Hour},
			want:    []string{"maxAge:a/x", "maxAge:b/x"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := names(Select(slices.Clone(tc.objects), tc.policy, now))
			if !slices.Equal(got, tc.want) {
				t.Errorf("Select deletes\n  %v\nwant\n  %v", got, tc.want)
			}
			// The input order does not change the outcome.
			reversed := slices.Clone(tc.objects)
			slices.Reverse(reversed)
			if again := names(Select(reversed, tc.policy, now)); !slices.Equal(again, got) {
				t.Errorf("with the objects in reverse order, Select deletes %v, not %v", again, got)
			}
		})
	}
}

func TestSelectKeepsUIDs(t *testing.T) {
	ds := Select([]Object{obj("a", "x", 2*time.Hour)}, Policy{MaxAge: time.Hour}, now)
	if len(ds) != 1 || ds[0].UID != "a/x" {
		t.Fatalf("Select = %+v, want a/x with its UID, which the delete's precondition needs", ds)
	}
}
