//go:build integration

package integration

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"annex.dev/annex/test/integration/framework"
)

// watchEventTimeout bounds the wait for each expected watch event.
const watchEventTimeout = 30 * time.Second

func storageBackends(t *testing.T) dynamic.ResourceInterface {
	t.Helper()
	return adminClient(t).Resource(framework.StorageBackends)
}

func TestStorageBackendCRUD(t *testing.T) {
	t.Run("create and get", func(t *testing.T) {
		name := uniqueName("crud")
		created := create(t, adminClient(t), framework.StorageBackends, storageBackend(name, "Embedded", nil))
		if ts := created.GetCreationTimestamp(); created.GetUID() == "" || created.GetResourceVersion() == "" || ts.IsZero() {
			t.Errorf("create returned metadata without uid, resourceVersion or creationTimestamp: %v", created.Object["metadata"])
		}
		if created.GetGeneration() != 1 {
			t.Errorf("metadata.generation = %d on create, want 1", created.GetGeneration())
		}
		got, err := storageBackends(t).Get(testContext(t), name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get after create: %v", err)
		}
		if got.GetUID() != created.GetUID() || nestedString(got, "spec", "type") != "Embedded" {
			t.Errorf("get returned uid=%s spec.type=%q, want uid=%s spec.type=Embedded", got.GetUID(), nestedString(got, "spec", "type"), created.GetUID())
		}
		if got.GetKind() != "StorageBackend" || got.GetAPIVersion() != groupVersion {
			t.Errorf("get returned %s %s, want %s StorageBackend", got.GetAPIVersion(), got.GetKind(), groupVersion)
		}
	})

	t.Run("update with a stale resourceVersion conflicts", func(t *testing.T) {
		name := uniqueName("stale")
		stale := create(t, adminClient(t), framework.StorageBackends, storageBackend(name, "Embedded", nil))
		// The storagebackend controller writes the status too: the first
		// update reads afresh.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			fresh, err := storageBackends(t).Get(testContext(t), name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			fresh.SetLabels(map[string]string{"writer": "first"})
			_, err = storageBackends(t).Update(testContext(t), fresh, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatalf("first update: %v", err)
		}
		stale.SetLabels(map[string]string{"writer": "second"})
		_, err = storageBackends(t).Update(testContext(t), stale, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			t.Fatalf("update with stale resourceVersion %s: want 409 Conflict, got %v", stale.GetResourceVersion(), err)
		}
		got, err := storageBackends(t).Get(testContext(t), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.GetLabels()["writer"] != "first" {
			t.Errorf("labels after the conflicting update = %v, want writer=first kept", got.GetLabels())
		}
	})

	t.Run("merge patch", func(t *testing.T) {
		name := uniqueName("merge")
		create(t, adminClient(t), framework.StorageBackends, storageBackend(name, "Etcd", nil))
		patch := `{"metadata":{"labels":{"patched":"merge"}},"spec":{"etcd":{"endpoints":["https://10.0.0.1:2379"]}}}`
		got, err := storageBackends(t).Patch(testContext(t), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		if err != nil {
			t.Fatalf("merge patch: %v", err)
		}
		if got.GetLabels()["patched"] != "merge" {
			t.Errorf("labels after merge patch = %v, want patched=merge", got.GetLabels())
		}
		if eps := nestedStrings(got, "spec", "etcd", "endpoints"); !slices.Equal(eps, []string{"https://10.0.0.1:2379"}) {
			t.Errorf("spec.etcd.endpoints after merge patch = %v, want [https://10.0.0.1:2379]", eps)
		}
		if got.GetGeneration() != 2 {
			t.Errorf("metadata.generation = %d after a spec change, want 2", got.GetGeneration())
		}
	})

	t.Run("JSON patch", func(t *testing.T) {
		name := uniqueName("jsonpatch")
		create(t, adminClient(t), framework.StorageBackends, storageBackend(name, "Etcd", nil))
		patch := `[{"op":"test","path":"/spec/type","value":"Etcd"},{"op":"add","path":"/spec/etcd/endpoints/-","value":"https://10.0.0.2:2379"}]`
		got, err := storageBackends(t).Patch(testContext(t), name, types.JSONPatchType, []byte(patch), metav1.PatchOptions{})
		if err != nil {
			t.Fatalf("JSON patch: %v", err)
		}
		want := []string{"https://127.0.0.1:2379", "https://10.0.0.2:2379"}
		if eps := nestedStrings(got, "spec", "etcd", "endpoints"); !slices.Equal(eps, want) {
			t.Errorf("spec.etcd.endpoints after JSON patch = %v, want %v", eps, want)
		}
	})

	t.Run("server-side apply conflicts and force", func(t *testing.T) {
		name := uniqueName("apply")
		t.Cleanup(func() { deleteIfExists(t, framework.StorageBackends, name) })
		apply := func(manager, endpoint string, force bool) (*unstructured.Unstructured, error) {
			obj := storageBackend(name, "Etcd", nil)
			if err := unstructured.SetNestedStringSlice(obj.Object, []string{endpoint}, "spec", "etcd", "endpoints"); err != nil {
				t.Fatal(err)
			}
			return storageBackends(t).Apply(testContext(t), name, obj, metav1.ApplyOptions{FieldManager: manager, Force: force})
		}
		if _, err := apply("manager-a", "https://a.example:2379", false); err != nil {
			t.Fatalf("apply by manager-a: %v", err)
		}
		if _, err := apply("manager-b", "https://b.example:2379", false); !apierrors.IsConflict(err) {
			t.Fatalf("conflicting apply by manager-b: want 409 Conflict, got %v", err)
		}
		got, err := apply("manager-b", "https://b.example:2379", true)
		if err != nil {
			t.Fatalf("forced apply by manager-b: %v", err)
		}
		if eps := nestedStrings(got, "spec", "etcd", "endpoints"); !slices.Equal(eps, []string{"https://b.example:2379"}) {
			t.Errorf("spec.etcd.endpoints after forced apply = %v, want manager-b's", eps)
		}
		owners := map[string]string{}
		for _, mf := range got.GetManagedFields() {
			if mf.FieldsV1 != nil {
				owners[mf.Manager] = string(mf.FieldsV1.Raw)
			}
		}
		if !strings.Contains(owners["manager-b"], `"f:endpoints"`) {
			t.Errorf("managedFields: manager-b does not own spec.etcd.endpoints after a forced apply; managedFields = %v", owners)
		}
		if strings.Contains(owners["manager-a"], `"f:endpoints"`) {
			t.Errorf("managedFields: manager-a still owns spec.etcd.endpoints after manager-b forced it; managedFields = %v", owners)
		}
	})

	t.Run("status subresource", func(t *testing.T) {
		name := uniqueName("status")
		create(t, adminClient(t), framework.StorageBackends, storageBackend(name, "Etcd", nil))

		// Through /status: status changes, a spec change in the same body is ignored.
		var updated *unstructured.Unstructured
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			obj, err := storageBackends(t).Get(testContext(t), name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			setTestCondition(t, obj, "set through /status")
			if err := unstructured.SetNestedStringSlice(obj.Object, []string{"https://ignored.example:2379"}, "spec", "etcd", "endpoints"); err != nil {
				t.Fatal(err)
			}
			updated, err = storageBackends(t).UpdateStatus(testContext(t), obj, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatalf("updating status: %v", err)
		}
		if msg := testConditionMessage(updated); msg != "set through /status" {
			t.Errorf("status after a /status update: IntegrationTest condition message = %q, want %q; status = %v", msg, "set through /status", updated.Object["status"])
		}
		if eps := nestedStrings(updated, "spec", "etcd", "endpoints"); !slices.Equal(eps, []string{"https://127.0.0.1:2379"}) {
			t.Errorf("a /status update changed spec.etcd.endpoints to %v; spec changes must be ignored there", eps)
		}
		got, err := storageBackends(t).Get(testContext(t), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if eps := nestedStrings(got, "spec", "etcd", "endpoints"); !slices.Equal(eps, []string{"https://127.0.0.1:2379"}) {
			t.Errorf("stored spec.etcd.endpoints = %v after a /status update, want unchanged", eps)
		}

		// Through the main resource: a status change is ignored, a label change is kept.
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			obj, err := storageBackends(t).Get(testContext(t), name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			// A copy: setTestCondition edits the status map in place.
			before := runtime.DeepCopyJSONValue(obj.Object["status"])
			setTestCondition(t, obj, "set through the main resource")
			obj.SetLabels(map[string]string{"main": "update"})
			updated, err = storageBackends(t).Update(testContext(t), obj, metav1.UpdateOptions{})
			if err != nil {
				return err
			}
			if !apiequality.Semantic.DeepEqual(updated.Object["status"], before) {
				t.Errorf("an update of the main resource changed status from %v to %v; status changes must be ignored there", before, updated.Object["status"])
			}
			return nil
		})
		if err != nil {
			t.Fatalf("updating the main resource: %v", err)
		}
		if updated.GetLabels()["main"] != "update" {
			t.Errorf("labels after an update of the main resource = %v, want main=update", updated.GetLabels())
		}
	})

	t.Run("delete then get is 404", func(t *testing.T) {
		name := uniqueName("delete")
		create(t, adminClient(t), framework.StorageBackends, storageBackend(name, "Embedded", nil))
		if err := storageBackends(t).Delete(testContext(t), name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete: %v", err)
		}
		expectAbsent(t, framework.StorageBackends, name)
	})

	t.Run("dry-run create stores nothing", func(t *testing.T) {
		name := uniqueName("dryrun")
		got, err := storageBackends(t).Create(testContext(t), storageBackend(name, "Embedded", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatalf("dry-run create: %v", err)
		}
		if got.GetName() != name || nestedString(got, "spec", "type") != "Embedded" {
			t.Errorf("dry-run create returned name=%q spec.type=%q, want the object", got.GetName(), nestedString(got, "spec", "type"))
		}
		expectAbsent(t, framework.StorageBackends, name)
	})
}

func TestStorageBackendLists(t *testing.T) {
	// Five objects under one label, so that other tests' objects never
	// count: three Etcd and two Embedded, with an index label each.
	run := uniqueName("list")
	selector := "run=" + run
	var all, etcd []string
	for i := range 5 {
		name := run + "-" + strconv.Itoa(i)
		typ := "Embedded"
		if i%2 == 0 {
			typ = "Etcd"
			etcd = append(etcd, name)
		}
		create(t, adminClient(t), framework.StorageBackends, storageBackend(name, typ, map[string]string{"run": run, "index": strconv.Itoa(i)}))
		all = append(all, name)
	}

	t.Run("limit and continue see every object once", func(t *testing.T) {
		seen := map[string]int{}
		opts := metav1.ListOptions{LabelSelector: selector, Limit: 2}
		pages := 0
		for {
			list, err := storageBackends(t).List(testContext(t), opts)
			if err != nil {
				t.Fatalf("list page %d: %v", pages+1, err)
			}
			pages++
			if len(list.Items) > 2 {
				t.Errorf("page %d has %d items, want at most limit=2", pages, len(list.Items))
			}
			for _, item := range list.Items {
				seen[item.GetName()]++
			}
			if list.GetContinue() == "" {
				break
			}
			if pages > 10 {
				t.Fatalf("more than 10 pages for 5 objects: the continue token does not advance")
			}
			opts.Continue = list.GetContinue()
		}
		if pages != 3 {
			t.Errorf("listed 5 objects with limit=2 in %d pages, want 3", pages)
		}
		for _, name := range all {
			if seen[name] != 1 {
				t.Errorf("%s seen %d times across pages, want exactly once", name, seen[name])
			}
		}
		if len(seen) != len(all) {
			t.Errorf("pages returned %v, want exactly %v", mapsKeys(seen), all)
		}
	})

	t.Run("label selector", func(t *testing.T) {
		got := listNames(t, metav1.ListOptions{LabelSelector: selector + ",index in (1,3)"})
		want := []string{run + "-1", run + "-3"}
		if !slices.Equal(got, want) {
			t.Errorf("list with label selector index in (1,3) = %v, want %v", got, want)
		}
	})

	t.Run("field selector", func(t *testing.T) {
		if got := listNames(t, metav1.ListOptions{LabelSelector: selector, FieldSelector: "spec.type=Etcd"}); !slices.Equal(got, etcd) {
			t.Errorf("list with field selector spec.type=Etcd = %v, want %v", got, etcd)
		}
		if got := listNames(t, metav1.ListOptions{FieldSelector: "metadata.name=" + all[1]}); !slices.Equal(got, all[1:2]) {
			t.Errorf("list with field selector metadata.name=%s = %v, want just it", all[1], got)
		}
		_, err := storageBackends(t).List(testContext(t), metav1.ListOptions{FieldSelector: "spec.etcd.endpoints=x"})
		if !apierrors.IsBadRequest(err) {
			t.Errorf("list with an unsupported field selector: want 400 BadRequest, got %v", err)
		}
	})
}

func TestStorageBackendWatch(t *testing.T) {
	t.Run("events from a resourceVersion arrive in order", func(t *testing.T) {
		run := uniqueName("watch")
		opts := metav1.ListOptions{LabelSelector: "run=" + run}
		list, err := storageBackends(t).List(testContext(t), opts)
		if err != nil {
			t.Fatal(err)
		}
		first, second := run+"-a", run+"-b"
		create(t, adminClient(t), framework.StorageBackends, storageBackend(first, "Embedded", map[string]string{"run": run}))
		create(t, adminClient(t), framework.StorageBackends, storageBackend(second, "Embedded", map[string]string{"run": run}))

		opts.ResourceVersion = list.GetResourceVersion()
		w, err := storageBackends(t).Watch(testContext(t), opts)
		if err != nil {
			t.Fatalf("watch from resourceVersion %s: %v", opts.ResourceVersion, err)
		}
		defer w.Stop()
		for _, want := range []string{first, second} {
			ev := nextEvent(t, w)
			for ev.Type == watch.Modified {
				// The storagebackend controller's status writes.
				ev = nextEvent(t, w)
			}
			obj, _ := ev.Object.(*unstructured.Unstructured)
			if ev.Type != watch.Added || obj == nil || obj.GetName() != want {
				t.Fatalf("watch event: got %s %v, want ADDED %s", ev.Type, objectName(ev.Object), want)
			}
		}
	})

	t.Run("watch-list ends its initial events with a bookmark", func(t *testing.T) {
		run := uniqueName("watchlist")
		want := []string{run + "-a", run + "-b"}
		for _, name := range want {
			create(t, adminClient(t), framework.StorageBackends, storageBackend(name, "Embedded", map[string]string{"run": run}))
		}
		expectInitialEvents(t, watchList(t, storageBackends(t), "run="+run), want)
	})
}

// watchList opens a watch-list (a watch that sends the initial events, and
// bookmarks) of the objects of res that labelSelector selects, stopped when
// the test ends.
func watchList(t *testing.T, res dynamic.ResourceInterface, labelSelector string) watch.Interface {
	t.Helper()
	w, err := res.Watch(testContext(t), metav1.ListOptions{
		LabelSelector:        labelSelector,
		AllowWatchBookmarks:  true,
		SendInitialEvents:    ptr.To(true),
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
	})
	if err != nil {
		t.Fatalf("watch-list: %v", err)
	}
	t.Cleanup(w.Stop)
	return w
}

// expectInitialEvents reads the initial events of a watch-list up to the
// bookmark that closes them: each must be an ADDED object, and their names,
// sorted, must be want.
func expectInitialEvents(t *testing.T, w watch.Interface, want []string) {
	t.Helper()
	var initial []string
	for {
		ev := nextEvent(t, w)
		obj, ok := ev.Object.(*unstructured.Unstructured)
		if !ok {
			t.Fatalf("watch-list event %s carries %T, want an object", ev.Type, ev.Object)
		}
		if ev.Type == watch.Bookmark {
			if v := obj.GetAnnotations()[metav1.InitialEventsAnnotationKey]; v != "true" {
				// Only the bookmark closing the initial events carries it.
				continue
			}
			break
		}
		if ev.Type != watch.Added {
			t.Fatalf("watch-list initial event: got %s %s, want ADDED", ev.Type, obj.GetName())
		}
		initial = append(initial, obj.GetName())
	}
	slices.Sort(initial)
	if !slices.Equal(initial, want) {
		t.Errorf("watch-list initial events before the %s bookmark: %v, want %v", metav1.InitialEventsAnnotationKey, initial, want)
	}
}

// nextEvent returns the next watch event or fails after watchEventTimeout.
func nextEvent(t *testing.T, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		if !ok {
			t.Fatalf("watch closed early")
		}
		if ev.Type == watch.Error {
			t.Fatalf("watch error: %v", apierrors.FromObject(ev.Object))
		}
		return ev
	case <-time.After(watchEventTimeout):
		t.Fatalf("no watch event within %s", watchEventTimeout)
	}
	return watch.Event{}
}

func objectName(obj any) string {
	if m, ok := obj.(metav1.Object); ok {
		return m.GetName()
	}
	return "<no object>"
}

func listNames(t *testing.T, opts metav1.ListOptions) []string {
	t.Helper()
	list, err := storageBackends(t).List(testContext(t), opts)
	if err != nil {
		t.Fatalf("list %+v: %v", opts, err)
	}
	var got []string
	for _, item := range list.Items {
		got = append(got, item.GetName())
	}
	slices.Sort(got)
	return got
}

// setTestCondition puts an IntegrationTest condition with message into
// obj's status. Its type is the test's own so that no controller owns it.
func setTestCondition(t *testing.T, obj *unstructured.Unstructured, message string) {
	t.Helper()
	conditions, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	kept := []any{}
	for _, c := range conditions {
		if m, ok := c.(map[string]any); ok && m["type"] != "IntegrationTest" {
			kept = append(kept, c)
		}
	}
	kept = append(kept, map[string]any{
		"type":               "IntegrationTest",
		"status":             "True",
		"reason":             "SetByTest",
		"message":            message,
		"lastTransitionTime": metav1.Now().UTC().Format(time.RFC3339),
	})
	if err := unstructured.SetNestedSlice(obj.Object, kept, "status", "conditions"); err != nil {
		t.Fatal(err)
	}
}

func testConditionMessage(obj *unstructured.Unstructured) string {
	conditions, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conditions {
		if m, ok := c.(map[string]any); ok && m["type"] == "IntegrationTest" {
			msg, _ := m["message"].(string)
			return msg
		}
	}
	return ""
}

func nestedString(obj *unstructured.Unstructured, path ...string) string {
	s, _, _ := unstructured.NestedString(obj.Object, path...)
	return s
}

func nestedStrings(obj *unstructured.Unstructured, path ...string) []string {
	s, _, _ := unstructured.NestedStringSlice(obj.Object, path...)
	return s
}
