package lean

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/storage"
)

// pagedStore lists its objects as a store does: a page of opts' limit,
// with a continue token while objects are left, at one revision.
type pagedStore struct {
	storage.Interface
	objects []*unstructured.Unstructured
	calls   []storage.ListOptions
}

func (p *pagedStore) GetList(_ context.Context, _ string, opts storage.ListOptions, listObj runtime.Object) error {
	p.calls = append(p.calls, opts)
	start := 0
	if opts.Predicate.Continue != "" {
		start, _ = strconv.Atoi(opts.Predicate.Continue)
	}
	end := len(p.objects)
	if limit := int(opts.Predicate.Limit); limit > 0 && start+limit < end {
		end = start + limit
	}
	list := listObj.(*unstructured.UnstructuredList)
	for _, o := range p.objects[start:end] {
		list.Items = append(list.Items, *o.DeepCopy())
	}
	list.SetResourceVersion("77")
	if end < len(p.objects) {
		list.SetContinue(strconv.Itoa(end))
		left := int64(len(p.objects) - end)
		list.SetRemainingItemCount(&left)
	}
	return nil
}

// A list of the whole type reads the store a page at a time, at the first
// page's revision, and gives every object, in order, as one list; a list
// with a limit of its own is read as asked.
func TestCompactingReadsWholeListsInPages(t *testing.T) {
	s := newTestStorage()
	s.config.NewListFunc = func() runtime.Object { return &unstructured.UnstructuredList{} }
	store := &pagedStore{}
	for i := range 1200 {
		store.objects = append(store.objects, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "reports.example.com/v1", "kind": "Report",
			"metadata": map[string]any{"name": fmt.Sprintf("r%04d", i), "namespace": "team-a", "resourceVersion": strconv.Itoa(10 + i)},
		}})
	}
	c := &compacting{Interface: store, s: s}

	l := &ObjectList{}
	opts := storage.ListOptions{ResourceVersion: "5", ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
		Predicate: storage.Everything, Recursive: true}
	if err := c.GetList(context.Background(), "/reports/", opts, l); err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1200 || l.Items[0].Name != "r0000" || l.Items[1199].Name != "r1199" {
		t.Fatalf("the list holds %d objects, want r0000 to r1199", len(l.Items))
	}
	if l.ResourceVersion != "77" || l.Continue != "" || l.RemainingItemCount != nil {
		t.Errorf("the list's resourceVersion %q, continue %q, remaining %v: want 77, none, none", l.ResourceVersion, l.Continue, l.RemainingItemCount)
	}
	if len(store.calls) != 3 {
		t.Fatalf("the store was read %d times, want 3 pages", len(store.calls))
	}
	for i, call := range store.calls {
		if call.Predicate.Limit != compactingPage {
			t.Errorf("page %d asked for %d objects, want %d", i+1, call.Predicate.Limit, compactingPage)
		}
		first := i == 0
		if first != (call.ResourceVersion == "5" && call.ResourceVersionMatch == metav1.ResourceVersionMatchNotOlderThan && call.Predicate.Continue == "") {
			t.Errorf("page %d: resourceVersion %q, match %q, continue %q; only the first page carries the caller's resourceVersion, the others a continue token",
				i+1, call.ResourceVersion, call.ResourceVersionMatch, call.Predicate.Continue)
		}
	}

	// A page the caller asked for.
	store.calls = nil
	l = &ObjectList{}
	opts.Predicate.Limit = 10
	if err := c.GetList(context.Background(), "/reports/", opts, l); err != nil {
		t.Fatal(err)
	}
	if len(store.calls) != 1 || len(l.Items) != 10 || l.Continue != "10" || l.RemainingItemCount == nil || *l.RemainingItemCount != 1190 {
		t.Errorf("a page of 10: %d reads, %d objects, continue %q; want one read of 10 objects, continue 10, 1190 left", len(store.calls), len(l.Items), l.Continue)
	}
}
