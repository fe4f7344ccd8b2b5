//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
)

const (
	// pagedReports is how many reports the pagination test lists, in pages
	// of pageLimit, after creating them with createWorkers at a time.
	pagedReports  = 3000
	pageLimit     = 500
	createWorkers = 8
)

func testPolicyReportWatchAndLists(t *testing.T) {
	t.Run("a watch from a resourceVersion resumes in order", func(t *testing.T) {
		ns := reportNamespace(t)
		ctx := testContext(t)
		reports := adminClient(t).Resource(policyReportsV1).Namespace(ns)
		a := createReport(t, ns, policyReport("a", "Deployment", "web"))
		from := a.GetResourceVersion()

		// Writes after from, in order; the watch starts only afterwards
		// and must replay exactly these.
		type event struct {
			typ  watch.EventType
			name string
			rv   string
		}
		var want []event
		patchPass := func(name string, pass int) {
			obj, err := reports.Patch(ctx, name, types.MergePatchType, fmt.Appendf(nil, `{"summary":{"pass":%d}}`, pass), metav1.PatchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, event{watch.Modified, name, obj.GetResourceVersion()})
		}
		patchPass("a", 1)
		b := createReport(t, ns, policyReport("b", "Deployment", "api"))
		want = append(want, event{watch.Added, "b", b.GetResourceVersion()})
		patchPass("a", 2)
		if err := reports.Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// The DELETED event carries the object at its deletion, whose
		// resourceVersion only the watch tells.
		want = append(want, event{watch.Deleted, "b", ""})

		w, err := reports.Watch(ctx, metav1.ListOptions{ResourceVersion: from})
		if err != nil {
			t.Fatalf("watch from resourceVersion %s: %v", from, err)
		}
		defer w.Stop()
		var got []event
		for range want {
			ev := nextEvent(t, w)
			obj := ev.Object.(*unstructured.Unstructured)
			got = append(got, event{ev.Type, obj.GetName(), obj.GetResourceVersion()})
		}
		for i := range want {
			if got[i].typ != want[i].typ || got[i].name != want[i].name || (want[i].rv != "" && got[i].rv != want[i].rv) {
				t.Fatalf("watch from resourceVersion %s delivered %v, want %v", from, got, want)
			}
		}
		if got[len(got)-1].rv == "" || got[len(got)-1].rv == got[len(got)-2].rv {
			t.Errorf("the DELETED event has resourceVersion %q, want a new one", got[len(got)-1].rv)
		}
		// Nothing else happened in the namespace.
		select {
		case ev := <-w.ResultChan():
			t.Errorf("unexpected watch event %s %s", ev.Type, objectName(ev.Object))
		case <-time.After(500 * time.Millisecond):
		}
	})

	t.Run("watch-list ends its initial events with a bookmark", func(t *testing.T) {
		ns := reportNamespace(t)
		want := []string{"x", "y", "z"}
		for _, name := range want {
			createReport(t, ns, policyReport(name, "Deployment", name))
		}
		w := watchList(t, adminClient(t).Resource(policyReportsV1).Namespace(ns), "")
		expectInitialEvents(t, w, want)
		// The same watch goes on with changes.
		createReport(t, ns, policyReport("later", "Deployment", "later"))
		for {
			ev := nextEvent(t, w)
			if ev.Type == watch.Bookmark {
				continue
			}
			if ev.Type != watch.Added || objectName(ev.Object) != "later" {
				t.Errorf("after the initial events: got %s %s, want ADDED later", ev.Type, objectName(ev.Object))
			}
			break
		}
	})

	t.Run("pages of a large list return each object once", func(t *testing.T) {
		ns := reportNamespace(t)
		reports := adminClient(t).Resource(policyReportsV1).Namespace(ns)
		start := time.Now()
		createConcurrently(t, reports, pagedReports)
		t.Logf("created %d reports with %d workers in %s", pagedReports, createWorkers, time.Since(start).Round(time.Millisecond))

		ctx := testContext(t)
		first, err := reports.List(ctx, metav1.ListOptions{Limit: pageLimit})
		if err != nil {
			t.Fatal(err)
		}
		if first.GetContinue() == "" {
			t.Fatalf("the first page of %d has no continue token", pagedReports)
		}
		if n := first.GetRemainingItemCount(); n != nil && *n != pagedReports-pageLimit {
			t.Errorf("the first page says %d items remain, want %d", *n, pagedReports-pageLimit)
		}
		// A continue token lists the snapshot of the first page: an object
		// created now does not appear, and the token can be used twice.
		createReport(t, ns, policyReport("zz-late", "Deployment", "late"))
		again, err := reports.List(ctx, metav1.ListOptions{Limit: pageLimit, Continue: first.GetContinue()})
		if err != nil {
			t.Fatalf("listing with the first continue token: %v", err)
		}

		seen := map[string]int{}
		pages := 0
		page := first
		for {
			pages++
			if len(page.Items) > pageLimit {
				t.Errorf("page %d has %d items, want at most %d", pages, len(page.Items), pageLimit)
			}
			if page.GetResourceVersion() != first.GetResourceVersion() {
				t.Errorf("page %d is at resourceVersion %s, want the first page's %s", pages, page.GetResourceVersion(), first.GetResourceVersion())
			}
			for _, item := range page.Items {
				seen[item.GetName()]++
			}
			if page.GetContinue() == "" {
				break
			}
			if pages > pagedReports/pageLimit+1 {
				t.Fatalf("still a continue token after %d pages", pages)
			}
			next, err := reports.List(ctx, metav1.ListOptions{Limit: pageLimit, Continue: page.GetContinue()})
			if err != nil {
				t.Fatalf("listing page %d: %v", pages+1, err)
			}
			if pages == 1 && !slices.Equal(itemNames(next), itemNames(again)) {
				t.Errorf("the first continue token gave different second pages")
			}
			page = next
		}
		if seen["zz-late"] != 0 {
			t.Error("a report created after the first page appeared on a later page")
		}
		var missing, twice []string
		for i := range pagedReports {
			name := pagedName(i)
			switch seen[name] {
			case 0:
				missing = append(missing, name)
			case 1:
			default:
				twice = append(twice, name)
			}
		}
		if len(missing) > 0 || len(twice) > 0 || len(seen) != pagedReports {
			t.Errorf("%d pages returned %d names; missing %d (%s), more than once %d (%s)",
				pages, len(seen), len(missing), firstFew(missing), len(twice), firstFew(twice))
		}
	})

	t.Run("field selectors on the selectable fields", func(t *testing.T) {
		ns := reportNamespace(t)
		ctx := testContext(t)
		reports := adminClient(t).Resource(policyReportsV1).Namespace(ns)
		createReport(t, ns, policyReport("d1", "Deployment", "web"))
		d2 := policyReport("d2", "Deployment", "api")
		_ = unstructured.SetNestedField(d2.Object, "pod-security", "spec", "policySet")
		createReport(t, ns, d2)
		s1 := policyReport("s1", "StatefulSet", "db")
		_ = unstructured.SetNestedField(s1.Object, "pod-security", "spec", "policySet")
		createReport(t, ns, s1)

		for _, tc := range []struct {
			selector string
			want     []string
		}{
			{"spec.scope.kind=Deployment", []string{"d1", "d2"}},
			{"spec.scope.kind!=Deployment", []string{"s1"}},
			{"spec.scope.kind=DaemonSet", nil},
			// The defaulted value is selectable.
			{"spec.policySet=default", []string{"d1"}},
			{"spec.scope.kind=Deployment,spec.policySet=pod-security", []string{"d2"}},
			{"metadata.name=s1", []string{"s1"}},
		} {
			list, err := reports.List(ctx, metav1.ListOptions{FieldSelector: tc.selector})
			if err != nil {
				t.Errorf("list with field selector %s: %v", tc.selector, err)
				continue
			}
			if got := itemNames(list); !slices.Equal(got, tc.want) {
				t.Errorf("list with field selector %s: %v, want %v", tc.selector, got, tc.want)
			}
		}

		_, err := reports.List(ctx, metav1.ListOptions{FieldSelector: "spec.scope.name=web"})
		if !apierrors.IsBadRequest(err) {
			t.Errorf("list with the unsupported field selector spec.scope.name=web: want 400 BadRequest, got %v", err)
		} else if !strings.Contains(err.Error(), "spec.scope.name") {
			t.Errorf("the 400 for spec.scope.name does not name the field: %v", err)
		}

		// A watch with a selector sees an object leave the selection as
		// DELETED and never sees objects outside it.
		list, err := reports.List(ctx, metav1.ListOptions{FieldSelector: "spec.scope.kind=Deployment"})
		if err != nil {
			t.Fatal(err)
		}
		w, err := reports.Watch(ctx, metav1.ListOptions{FieldSelector: "spec.scope.kind=Deployment", ResourceVersion: list.GetResourceVersion()})
		if err != nil {
			t.Fatalf("watch with a field selector: %v", err)
		}
		defer w.Stop()
		for _, p := range []struct{ name, patch string }{
			{"s1", `{"spec":{"scope":{"name":"db2"}}}`},
			{"d2", `{"spec":{"scope":{"kind":"DaemonSet"}}}`},
			{"d1", `{"spec":{"scope":{"name":"web2"}}}`},
		} {
			if _, err := reports.Patch(ctx, p.name, types.MergePatchType, []byte(p.patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		for _, want := range []struct {
			typ  watch.EventType
			name string
		}{{watch.Deleted, "d2"}, {watch.Modified, "d1"}} {
			ev := nextEvent(t, w)
			if ev.Type != want.typ || objectName(ev.Object) != want.name {
				t.Errorf("watch spec.scope.kind=Deployment: got %s %s, want %s %s", ev.Type, objectName(ev.Object), want.typ, want.name)
			}
		}
	})

	t.Run("conflicts", func(t *testing.T) {
		ns := reportNamespace(t)
		ctx := testContext(t)
		reports := adminClient(t).Resource(policyReportsV1).Namespace(ns)
		stale := createReport(t, ns, policyReport("contended", "Deployment", "web"))
		if _, err := reports.Patch(ctx, "contended", types.MergePatchType, []byte(`{"summary":{"pass":1}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		_ = unstructured.SetNestedField(stale.Object, int64(7), "summary", "warn")
		_, err := reports.Update(ctx, stale, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) || statusCode(err) != http.StatusConflict {
			t.Errorf("update with the stale resourceVersion %s: want 409 Conflict, got %v", stale.GetResourceVersion(), err)
		}
		if w := nestedInt64(getReport(t, ns, "contended"), "summary", "warn"); w != 0 {
			t.Errorf("the refused update was stored: summary.warn = %d", w)
		}
		_, err = reports.Create(ctx, policyReport("contended", "Deployment", "web"), metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) || statusCode(err) != http.StatusConflict {
			t.Errorf("creating an existing name: want 409 AlreadyExists, got %v", err)
		}
	})

	t.Run("schema violations are 422 naming the field", func(t *testing.T) {
		ns := reportNamespace(t)
		reports := adminClient(t).Resource(policyReportsV1).Namespace(ns)
		for _, tc := range []struct {
			name    string
			mutate  func(obj map[string]any)
			field   string
			message string
		}{
			{
				name: "enum",
				mutate: func(obj map[string]any) {
					obj["results"] = []any{map[string]any{"policy": "p", "result": "maybe"}}
				},
				field:   "results[0].result",
				message: `Unsupported value: "maybe"`,
			},
			{
				name: "type",
				mutate: func(obj map[string]any) {
					obj["spec"].(map[string]any)["scope"].(map[string]any)["kind"] = int64(5)
				},
				field:   "spec.scope.kind",
				message: "must be of type string",
			},
			{
				name: "cel",
				mutate: func(obj map[string]any) {
					obj["summary"] = map[string]any{"fail": int64(1)}
					obj["results"] = []any{map[string]any{"policy": "p", "result": "pass"}}
				},
				field:   "summary.fail",
				message: "summary.fail counts failed results but no result failed",
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				obj := policyReport("invalid-"+tc.name, "Deployment", "web")
				tc.mutate(obj.Object)
				_, err := reports.Create(testContext(t), obj, metav1.CreateOptions{})
				if !apierrors.IsInvalid(err) || statusCode(err) != http.StatusUnprocessableEntity {
					t.Fatalf("want 422 Invalid, got %v", err)
				}
				expectCauses(t, causeFields(err), tc.field)
				if !strings.Contains(err.Error(), tc.message) {
					t.Errorf("the error does not say %q: %v", tc.message, err)
				}
				if _, err := reports.Get(testContext(t), obj.GetName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("the invalid report: get: want 404 NotFound, got %v", err)
				}
			})
		}
	})

	t.Run("a watch from an expired resourceVersion is 410 Gone", func(t *testing.T) {
		// annex's etcd is compacted every 5 minutes (the apiserver's default
		// --etcd-compaction-interval) and the shared environment is not
		// changed for one test. Revision 1 is older than anything the watch
		// cache of the type holds (it started from a list long after annex
		// wrote its first objects), which is the same expiry a client sees
		// after a compaction: 410 Gone, "too old resource version".
		ns := reportNamespace(t)
		createReport(t, ns, policyReport("recent", "Deployment", "web"))
		w, err := adminClient(t).Resource(policyReportsV1).Namespace(ns).Watch(testContext(t), metav1.ListOptions{ResourceVersion: "1"})
		if err != nil {
			// Refusing the request itself is as good as an error event.
			if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
				t.Fatalf("watch from resourceVersion 1: want 410 Gone, got %v", err)
			}
			return
		}
		defer w.Stop()
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("the watch from resourceVersion 1 closed without an event, want an ERROR event with 410")
			}
			if ev.Type != watch.Error {
				t.Fatalf("watch from resourceVersion 1: got %s %s, want an ERROR event with 410 Gone", ev.Type, objectName(ev.Object))
			}
			err := apierrors.FromObject(ev.Object)
			if statusCode(err) != http.StatusGone || !apierrors.IsResourceExpired(err) || !strings.Contains(err.Error(), "too old resource version") {
				t.Errorf("watch from resourceVersion 1: ERROR event %v (code %d), want 410 Expired \"too old resource version\"", err, statusCode(err))
			}
		case <-time.After(watchEventTimeout):
			t.Fatalf("no event within %s from a watch from resourceVersion 1", watchEventTimeout)
		}
	})
}

// createConcurrently creates n reports named pagedName(i) with
// createWorkers requests in flight.
func createConcurrently(t *testing.T, reports dynamic.ResourceInterface, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	next := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range createWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				obj := policyReport(pagedName(i), []string{"Deployment", "StatefulSet", "DaemonSet"}[i%3], fmt.Sprintf("app-%d", i))
				if _, err := reports.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("creating %s: %w", obj.GetName(), err)
						cancel()
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}

func pagedName(i int) string { return fmt.Sprintf("r-%04d", i) }

func itemNames(list *unstructured.UnstructuredList) []string {
	var names []string
	for _, item := range list.Items {
		names = append(names, item.GetName())
	}
	slices.Sort(names)
	return names
}

func firstFew(names []string) string {
	if len(names) > 5 {
		return strings.Join(names[:5], ", ") + ", ..."
	}
	return strings.Join(names, ", ")
}
