//go:build integration

package standalone

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"

	"annex.dev/annex/test/integration/framework"
)

// TestWatchResumesOnAnotherReplica runs two annex replicas on one etcd. The
// second has never served the hosted type when a client, which listed
// through the first, watches through it from that list's resourceVersion,
// as a client does after failing over. The watch must resume, not answer
// 410 Gone: every replica opens each type's storage (and watch cache) when
// it starts, not on the type's first request.
func TestWatchResumesOnAnotherReplica(t *testing.T) {
	dir := t.TempDir()
	etcdURL := framework.StartEtcd(t, dir)
	portA, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, t.TempDir(), portA, "--etcd-servers="+etcdURL)
	a.kubectl("apply", "-f", write(t, dir, "gadgets.yaml", gadgets))
	a.kubectl("wait", "--for=condition=Established", "--timeout=30s", "hostedresource/gadgets.example.com")

	portB, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b := start(t, t.TempDir(), portB, "--etcd-servers="+etcdURL)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gvr := schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "gadgets"}
	throughA, err := dynamic.NewForConfig(a.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	throughB, err := dynamic.NewForConfig(b.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	gadget := func(name string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": map[string]any{"name": name}, "spec": map[string]any{},
		}}
	}
	if _, err := throughA.Resource(gvr).Create(ctx, gadget("before"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	list, err := throughA.Resource(gvr).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"after-1", "after-2"} {
		if _, err := throughA.Resource(gvr).Create(ctx, gadget(name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	w, err := throughB.Resource(gvr).Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion()})
	if err != nil {
		t.Fatalf("watch through the second replica from resourceVersion %s: %v", list.GetResourceVersion(), err)
	}
	defer w.Stop()
	var seen []string
	for len(seen) < 2 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("the watch closed after %v", seen)
			}
			if ev.Type == watch.Error {
				t.Fatalf("the second replica answered the resumed watch with an error (a client would relist everything): %v", ev.Object)
			}
			if ev.Type == watch.Added {
				seen = append(seen, ev.Object.(*unstructured.Unstructured).GetName())
			}
		case <-ctx.Done():
			t.Fatalf("events after resourceVersion %s through the second replica: got %v, want after-1 and after-2", list.GetResourceVersion(), seen)
		}
	}
	if strings.Join(seen, ",") != "after-1,after-2" {
		t.Errorf("events through the second replica: %v, want after-1, after-2", seen)
	}
}
