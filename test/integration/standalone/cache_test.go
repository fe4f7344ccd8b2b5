//go:build integration

package standalone

import (
	"context"
	"fmt"
	"sort"
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

// TestStorageCacheNone serves a type that keeps nothing in memory
// (spec.storage.cache: None) beside one with the default cache: the first
// answers lists, paged lists, field selectors and watches from the store
// alone, and only the second has a watch cache.
func TestStorageCacheNone(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port)
	uncached := strings.Replace(hostedType("gadgets", "Gadget", "default"), "{backend: default}", "{backend: default, cache: None}", 1)
	a.kubectl("apply", "-f", write(t, dir, "types.yaml", uncached+"---\n"+hostedType("gizmos", "Gizmo", "default")))
	for _, hr := range []string{"gadgets.example.com", "gizmos.example.com"} {
		a.kubectl("wait", "--for=condition=Established", "--timeout=60s", "hostedresource/"+hr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, err := dynamic.NewForConfig(a.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	gadgets := client.Resource(schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "gadgets"})
	w, err := gadgets.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("watching gadgets: %v", err)
	}
	defer w.Stop()
	var objects strings.Builder
	for _, kind := range []struct{ name, prefix string }{{"Gadget", "g"}, {"Gizmo", "z"}} {
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(&objects, "apiVersion: example.com/v1\nkind: %s\nmetadata: {name: %s%d}\nspec: {size: %d}\n---\n", kind.name, kind.prefix, i, i)
		}
	}
	a.kubectl("apply", "-f", write(t, dir, "objects.yaml", objects.String()))

	var added []string
	for len(added) < 3 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("the watch of gadgets ended after %v", added)
			}
			if ev.Type != watch.Added {
				t.Fatalf("the watch of gadgets sent %s %v, want ADDED", ev.Type, ev.Object)
			}
			added = append(added, ev.Object.(*unstructured.Unstructured).GetName())
		case <-ctx.Done():
			t.Fatalf("the watch of gadgets saw %v within a minute, want g1, g2 and g3", added)
		}
	}
	sort.Strings(added)
	if got := strings.Join(added, " "); got != "g1 g2 g3" {
		t.Errorf("the watch of gadgets saw %s, want g1 g2 g3", got)
	}
	for _, tc := range []struct{ args, want string }{
		{"get gadgets -o name --chunk-size=1", "gadget.example.com/g1 gadget.example.com/g2 gadget.example.com/g3"},
		{"get gadgets -o name --field-selector=metadata.name=g2", "gadget.example.com/g2"},
		{"get gizmos -o name", "gizmo.example.com/z1 gizmo.example.com/z2 gizmo.example.com/z3"},
	} {
		if got := strings.Join(strings.Fields(a.kubectl(strings.Fields(tc.args)...)), " "); got != tc.want {
			t.Errorf("kubectl %s: %q, want %q", tc.args, got, tc.want)
		}
	}

	m := a.metrics(ctx)
	if n := m.value("apiserver_watch_cache_initializations_total", "example.com", "gizmos", ""); n < 1 {
		t.Errorf("gizmos' watch cache was initialized %v times, want at least once:\n%s", n, strings.Join(m["apiserver_watch_cache_initializations_total"], "\n"))
	}
	if n := m.value("apiserver_watch_cache_initializations_total", "example.com", "gadgets", ""); n != 0 {
		t.Errorf("gadgets, with cache None, has a watch cache (initialized %v times)", n)
	}

	// A cache annex does not have is refused, with the field and the choices.
	out, err := a.kubectlErr("patch", "hostedresource/gadgets.example.com", "--type=merge", "-p", `{"spec":{"storage":{"cache":"Everything"}}}`)
	if err == nil || !strings.Contains(out, "spec.storage.cache") || !strings.Contains(out, `"WatchCache", "Lean", "None"`) {
		t.Errorf("setting spec.storage.cache to an unknown cache: %v\n%s\nwant a refusal naming the field and the choices", err, out)
	}
}
