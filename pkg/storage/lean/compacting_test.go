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
// page's revision, and gives every object, in order, as one list; so does
// a page larger than compactingPage, up to its limit; a smaller page is
// read as asked.
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

	// A page larger than a compacting page (the consistency check reads
	// pages of 10,000), and the page after it: read compactingPage
	// objects at a time, answered as the store answers the caller's page.
	store.calls = nil
	l = &ObjectList{}
	opts.Predicate.Limit = 700
	if err := c.GetList(context.Background(), "/reports/", opts, l); err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 700 || l.Items[699].Name != "r0699" || l.Continue != "700" || l.RemainingItemCount == nil || *l.RemainingItemCount != 500 {
		t.Fatalf("a page of 700: %d objects, continue %q; want r0000 to r0699, continue 700, 500 left", len(l.Items), l.Continue)
	}
	if len(store.calls) != 2 || store.calls[0].Predicate.Limit != compactingPage || store.calls[1].Predicate.Limit != 200 {
		t.Errorf("a page of 700 read the store %d times (%v), want pages of %d and 200", len(store.calls), store.calls, compactingPage)
	}
	store.calls = nil
	next := &ObjectList{}
	opts.ResourceVersion, opts.ResourceVersionMatch, opts.Predicate.Continue = "", "", l.Continue
	if err := c.GetList(context.Background(), "/reports/", opts, next); err != nil {
		t.Fatal(err)
	}
	if len(next.Items) != 500 || next.Items[0].Name != "r0700" || next.Continue != "" || len(store.calls) != 1 {
		t.Errorf("the page after: %d objects from %s, continue %q, %d reads; want r0700 to r1199 in one read", len(next.Items), next.Items[0].Name, next.Continue, len(store.calls))
	}
	opts.Predicate.Continue, opts.ResourceVersion, opts.ResourceVersionMatch = "", "5", metav1.ResourceVersionMatchNotOlderThan

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
