//go:build integration

package integration

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"

	"annex.dev/annex/test/integration/framework"
)

// serveHostedType declares a namespaced type through a HostedResource for
// the length of the test, waits until its APIService is registered and until
// the cluster answers a list of it in namespace ns, and returns its
// resource.
func serveHostedType(t *testing.T, kind, plural, group, ns string) schema.GroupVersionResource {
	t.Helper()
	return serveHostedTypeOn(t, kind, plural, group, ns, "")
}

// serveHostedTypeOn is serveHostedType with the objects in the named
// StorageBackend ("" for the default).
func serveHostedTypeOn(t *testing.T, kind, plural, group, ns, backend string) schema.GroupVersionResource {
	t.Helper()
	return serveHostedResource(t, hostedResource(t, kind, plural, group), ns, backend)
}

// serveHostedResource is serveHostedTypeOn with the HostedResource obj
// (built by hostedResource, perhaps changed).
func serveHostedResource(t *testing.T, obj *unstructured.Unstructured, ns, backend string) schema.GroupVersionResource {
	t.Helper()
	group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
	plural, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "plural")
	if backend != "" {
		if err := unstructured.SetNestedField(obj.Object, backend, "spec", "storage", "backend"); err != nil {
			t.Fatal(err)
		}
	}
	hr := create(t, adminClient(t), framework.HostedResources, obj)
	if backend != "" {
		// The type's objects are deleted from its backend before the type:
		// wait for that while the backend (often started by the test, and
		// stopped by an earlier cleanup) still runs. A type left
		// terminating on a stopped backend makes its group undiscoverable,
		// which holds up every later namespace deletion of the cluster.
		t.Cleanup(func() { deleteAndWait(t, framework.HostedResources, hr.GetName()) })
	}
	waitForCondition(t, hr.GetName(), "APIServiceAvailable", metav1.ConditionTrue)
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: plural}
	// The aggregator picks the new APIService up asynchronously: until it
	// does, the cluster answers 404 for the group.
	var lastErr error
	err := wait.PollUntilContextTimeout(testContext(t), 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, lastErr = adminClient(t).Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{Limit: 1})
		return lastErr == nil, nil
	})
	if err != nil {
		t.Fatalf("%s is not served through the cluster: %v; last error: %v", gvr, err, lastErr)
	}
	return gvr
}

// createNamespace creates a namespace of the cluster named after prefix and
// deletes it when the test ends. Without a namespace controller a deleted
// namespace stays Terminating; that is harmless to other tests.
func createNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": uniqueName(prefix)},
	}}
	return create(t, adminClient(t), schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, ns).GetName()
}

// hostedObject builds an object of a type declared by hostedResource, with
// the given spec.size.
func hostedObject(gvr schema.GroupVersionResource, kind, name string, size int64) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(),
		"kind":       kind,
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"size": size},
	}}
}

// startControllerManager runs kube-controller-manager with the named
// controllers until the test ends. When the test fails, the end of the
// manager's log is written to the test's output.
func startControllerManager(t *testing.T, controllers ...string) (log string) {
	t.Helper()
	stop, log, err := env.StartControllerManager(testContext(t), controllers...)
	if err != nil {
		t.Fatalf("starting kube-controller-manager: %v", err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("%v", err)
		}
		if t.Failed() {
			t.Logf("kube-controller-manager log: %s", log)
		}
	})
	return log
}
