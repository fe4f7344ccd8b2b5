package history

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
)

// run records a short history against a fake store and checks it.
func run(t *testing.T, f *fakeStore) *Report {
	t.Helper()
	srv := f.serve(t)
	rec, err := Start(Config{
		REST:     &rest.Config{Host: srv.URL},
		Resource: schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "things"},
		Object: func(string) *unstructured.Unstructured {
			return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "example.com/v1", "kind": "Thing"}}
		},
		Names:   []string{"a", "b", "c", "d"},
		Clients: 4, Watchers: 2,
		Pause:        time.Millisecond,
		WatchTimeout: time.Second,
		Seed:         1,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Until enough writes were acknowledged to meet every fault several
	// times, and the watches (of one second) ended twice with a bookmark;
	// the clients' pace does not matter.
	started := time.Now()
	for {
		_, acked := rec.Counts()
		if elapsed := time.Since(started); (acked >= 300 && elapsed > 2500*time.Millisecond) || elapsed > 30*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := rec.Finish(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if env := os.Getenv("ANNEX_HISTORY_DIR"); env != "" {
		dir = env
	}
	rep := Check(h, dir, time.Minute)
	t.Logf("store that %s:\n%s", f, rep)
	if rep.AckedWrites < 300 {
		t.Fatalf("only %d writes acknowledged: the run proves nothing", rep.AckedWrites)
	}
	return rep
}

func TestCorrectStorePasses(t *testing.T) {
	rep := run(t, newFakeStore())
	if !rep.OK() {
		t.Fatalf("the checker reports violations on a correct store:\n%s", rep)
	}
	if rep.Reads == 0 || rep.WatchEvents == 0 || rep.Bookmarks == 0 || rep.Resumes == 0 {
		t.Errorf("the run read %d times, received %d watch events and %d bookmarks, and resumed %d watches; it must do all four",
			rep.Reads, rep.WatchEvents, rep.Bookmarks, rep.Resumes)
	}
	if rep.ResumesGone != 0 {
		t.Errorf("%d resumed watches answered 410 on a store that keeps its whole log", rep.ResumesGone)
	}
}

// A write answered 503 "service unavailable", as the aggregator answers a
// request it did not send on, was not applied: the checker takes it as
// refused, not as of unknown outcome.
func TestUnsentWritesAreRefused(t *testing.T) {
	f := newFakeStore()
	f.unavailableEvery = 7
	rep := run(t, f)
	if !rep.OK() {
		t.Fatalf("the checker reports violations on a correct store:\n%s", rep)
	}
	if rep.RefusedWrites == 0 || rep.UnknownWrites != 0 {
		t.Fatalf("%d writes refused and %d of unknown outcome; want every 503 service unavailable refused", rep.RefusedWrites, rep.UnknownWrites)
	}
}

func TestBrokenStoresAreCaught(t *testing.T) {
	for _, tc := range []struct {
		store *fakeStore
		// caught says whether the report names the fault.
		caught func(*Report) bool
	}{
		{&fakeStore{dropEvery: 10}, func(r *Report) bool {
			return r.Linearizable == porcupine.Illegal && r.SilentGaps > 0
		}},
		{&fakeStore{staleReads: true}, func(r *Report) bool {
			return r.Linearizable == porcupine.Illegal && r.StaleReads > 0
		}},
		{&fakeStore{bookmarkBack: true}, func(r *Report) bool {
			return r.Linearizable == porcupine.Ok && r.BookmarksBack > 0
		}},
		{&fakeStore{skipEvents: 10}, func(r *Report) bool {
			return r.Linearizable == porcupine.Ok && r.SilentGaps > 0
		}},
		{&fakeStore{unavailableEvery: 10, appliesUnavailable: true}, func(r *Report) bool {
			return r.Linearizable == porcupine.Illegal
		}},
	} {
		f := tc.store
		f.rev, f.objects, f.lagged, f.changed = 1, map[string]Object{}, map[string]Object{}, make(chan struct{})
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			rep := run(t, f)
			if rep.OK() || !tc.caught(rep) {
				t.Fatalf("the checker did not report the fault:\n%s", rep)
			}
			var html string
			for _, file := range rep.Files {
				if strings.HasSuffix(file, ".html") {
					html = file
				}
			}
			if html == "" {
				t.Fatalf("no visualization written: %v", rep.Files)
			}
			data, err := os.ReadFile(html)
			if err != nil || !strings.Contains(string(data), "<html") {
				t.Fatalf("the visualization %s is not HTML: %v", html, err)
			}
			t.Logf("visualization: %s", html)
		})
	}
}

// The model on histories written by hand.
func TestModel(t *testing.T) {
	const (
		w1 = iota // writers
		w2
		rd // reader
	)
	create := func(c int, name, value string, res Result, rv uint64, call, ret int64) Op {
		return Op{Client: c, Kind: Create, Name: name, Value: value, Result: res, RV: rv, Call: call, Return: ret}
	}
	update := func(c int, name, value string, pre uint64, res Result, rv uint64, call, ret int64) Op {
		return Op{Client: c, Kind: Update, Name: name, Value: value, Precondition: pre, Result: res, RV: rv, Call: call, Return: ret}
	}
	del := func(c int, name string, pre uint64, res Result, rv uint64, call, ret int64) Op {
		return Op{Client: c, Kind: Delete, Name: name, Precondition: pre, Result: res, RV: rv, Call: call, Return: ret}
	}
	get := func(name, value string, rv uint64, call, ret int64) Op {
		o := Op{Client: rd, Kind: Get, Name: name, Call: call, Return: ret}
		if value == "" {
			o.Result = NotFound
		} else {
			o.Result, o.Got = OK, &Object{Value: value, RV: rv}
		}
		return o
	}
	list := func(items map[string]Object, rv uint64, call, ret int64) Op {
		return Op{Client: rd, Kind: List, Result: OK, RV: rv, Items: items, Call: call, Return: ret}
	}
	for _, tc := range []struct {
		name string
		ops  []Op
		want porcupine.CheckResult
	}{
		{"create, update with the right precondition, read", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			update(w1, "a", "v2", 10, OK, 12, 20, 30),
			get("a", "v2", 12, 40, 50),
		}, porcupine.Ok},
		{"a read concurrent with a write may see either state", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			update(w1, "a", "v2", 10, OK, 12, 20, 60),
			get("a", "v1", 10, 30, 40),
			get("a", "v2", 12, 50, 55),
		}, porcupine.Ok},
		{"a read after an acknowledged write returns the old state", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			update(w1, "a", "v2", 10, OK, 12, 20, 30),
			get("a", "v1", 10, 40, 50),
		}, porcupine.Illegal},
		{"an acknowledged create is missing from a later list", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			list(map[string]Object{}, 11, 20, 30),
		}, porcupine.Illegal},
		{"a create of an existing name succeeds", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			create(w2, "a", "v2", OK, 11, 20, 30),
		}, porcupine.Illegal},
		{"an update with a stale precondition succeeds", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			update(w1, "a", "v2", 10, OK, 12, 20, 30),
			update(w2, "a", "v3", 10, OK, 14, 40, 50),
		}, porcupine.Illegal},
		{"an update with a stale precondition conflicts", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			update(w1, "a", "v2", 10, OK, 12, 20, 30),
			update(w2, "a", "v3", 10, Conflict, 0, 40, 50),
			del(w2, "a", 10, Conflict, 0, 60, 70),
			del(w2, "a", 12, OK, 15, 80, 90),
			get("a", "", 0, 100, 110),
		}, porcupine.Ok},
		{"a resourceVersion goes backwards", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			update(w1, "a", "v2", 10, OK, 9, 20, 30),
		}, porcupine.Illegal},
		{"a write of unknown outcome may take effect later", []Op{
			create(w1, "a", "v1", Unknown, 0, 0, 10),
			get("a", "", 0, 20, 30),
			get("a", "v1", 17, 40, 50),
			update(w2, "a", "v2", 17, OK, 20, 60, 70),
		}, porcupine.Ok},
		{"a write of unknown outcome may never take effect", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			update(w1, "a", "v2", 10, Unknown, 0, 20, 30),
			update(w2, "a", "v3", 10, OK, 14, 40, 50),
			get("a", "v3", 14, 60, 70),
		}, porcupine.Ok},
		{"a write of unknown outcome appears with a resourceVersion below an earlier write's", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			update(w1, "a", "v2", 10, Unknown, 0, 20, 30),
			get("a", "v2", 9, 40, 50),
		}, porcupine.Illegal},
		{"a delete of unknown outcome; the object is recreated after it", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			del(w1, "a", 10, Unknown, 0, 20, 30),
			create(w2, "a", "v2", OK, 13, 40, 50),
			list(map[string]Object{"a": {Value: "v2", RV: 13}}, 13, 60, 70),
		}, porcupine.Ok},
		{"a delete answered without a resourceVersion, then the object is read", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			del(w1, "a", 10, OK, 0, 20, 30),
			get("a", "v1", 10, 40, 50),
		}, porcupine.Illegal},
		{"a delete answered without a resourceVersion, then a create", []Op{
			create(w1, "a", "v1", OK, 10, 0, 10),
			del(w1, "a", 0, OK, 0, 20, 30),
			get("a", "", 0, 40, 50),
			create(w2, "a", "v2", OK, 12, 60, 70),
			get("a", "v2", 12, 80, 90),
		}, porcupine.Ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &History{Names: []string{"a"}, Ops: tc.ops}
			got, _ := porcupine.CheckOperationsVerbose(newModel(h), operations(h), 10*time.Second)
			if got != tc.want {
				t.Errorf("porcupine: %s, want %s", got, tc.want)
			}
		})
	}
}

// A list must be the state at its resourceVersion, even when each item
// alone could be linearized.
func TestListNotASnapshot(t *testing.T) {
	ops := []Op{
		{Client: 0, Kind: Create, Name: "a", Value: "a1", Result: OK, RV: 10, Call: 0, Return: 10},
		{Client: 0, Kind: Update, Name: "a", Value: "a2", Precondition: 10, Result: OK, RV: 12, Call: 20, Return: 100},
		{Client: 1, Kind: Create, Name: "b", Value: "b1", Result: OK, RV: 11, Call: 0, Return: 100},
	}
	for _, tc := range []struct {
		name  string
		items map[string]Object
		rv    uint64
		bad   bool
	}{
		{"the state at 11", map[string]Object{"a": {Value: "a1", RV: 10}, "b": {Value: "b1", RV: 11}}, 11, false},
		{"an item above the list's resourceVersion", map[string]Object{"a": {Value: "a2", RV: 12}, "b": {Value: "b1", RV: 11}}, 11, true},
		{"an item older than a write below the list's resourceVersion", map[string]Object{"a": {Value: "a1", RV: 10}, "b": {Value: "b1", RV: 11}}, 12, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &History{Names: []string{"a", "b"}, Ops: append(append([]Op(nil), ops...),
				Op{Client: 2, Kind: List, Result: OK, RV: tc.rv, Items: tc.items, Call: 30, Return: 40})}
			rep := Check(h, "", 10*time.Second)
			if got := rep.BadLists > 0; got != tc.bad {
				t.Errorf("lists not a snapshot: %d, want a violation: %t\n%s", rep.BadLists, tc.bad, rep)
			}
		})
	}
}

// resourceVersions follow real time across objects too.
func TestResourceVersionsFollowTime(t *testing.T) {
	for _, tc := range []struct {
		name string
		rvB  uint64
		bad  bool
	}{
		{"a later write of another object gets a higher resourceVersion", 11, false},
		{"a later write of another object gets a lower resourceVersion", 9, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &History{Names: []string{"a", "b"}, Ops: []Op{
				{Client: 0, Kind: Create, Name: "a", Value: "a1", Result: OK, RV: 10, Call: 0, Return: 10},
				{Client: 1, Kind: Create, Name: "b", Value: "b1", Result: OK, RV: tc.rvB, Call: 20, Return: 30},
			}}
			rep := Check(h, "", 10*time.Second)
			if got := rep.RVsBackwards > 0; got != tc.bad {
				t.Errorf("resourceVersions backwards: %d, want a violation: %t\n%s", rep.RVsBackwards, tc.bad, rep)
			}
		})
	}
}
