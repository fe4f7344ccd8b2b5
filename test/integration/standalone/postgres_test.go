//go:build integration

package standalone

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
	"annex.dev/annex/test/integration/framework"
)

// TestPostgres runs annex on PostgreSQL (--postgres-dsn-file): a type and its
// objects are stored there and survive a restart of annex, and no etcd is
// started.
func TestPostgres(t *testing.T) {
	pg := postgrestest.Start(t)
	dir := t.TempDir()
	dsnFile := write(t, dir, "dsn", pg.DSN+"\n")
	if err := os.Chmod(dsnFile, 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port, "--postgres-dsn-file="+dsnFile)
	a.kubectl("apply", "-f", write(t, dir, "gadgets.yaml", gadgets))
	a.kubectl("wait", "--for=condition=Established", "--timeout=30s", "hostedresource/gadgets.example.com")
	a.kubectl("apply", "-f", write(t, dir, "g1.yaml", "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {size: 7}\n"))
	if _, err := os.Stat(filepath.Join(dir, "data", "etcd")); !os.IsNotExist(err) {
		t.Errorf("annex started an embedded etcd although --postgres-dsn-file was given (stat: %v)", err)
	}

	// An Embedded backend is not served by an annex on PostgreSQL.
	a.kubectl("apply", "-f", write(t, dir, "embedded.yaml", "apiVersion: annex.dev/v1alpha1\nkind: StorageBackend\nmetadata: {name: embedded}\nspec: {type: Embedded}\n"))
	a.kubectl("wait", "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=NotRunning", "--timeout=30s", "storagebackend/embedded")
	if out := a.kubectl("get", "storagebackend", "embedded", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].message}`); !strings.Contains(out, "annex runs on PostgreSQL") {
		t.Errorf("Embedded backend on an annex that runs on PostgreSQL: Ready message %q, want it to say annex runs on PostgreSQL", out)
	}

	if err := a.Stop(); err != nil {
		t.Fatalf("annex did not stop cleanly: %v", err)
	}
	b := start(t, dir, port, "--postgres-dsn-file="+dsnFile)
	b.kubectl("wait", "--for=condition=Established", "--timeout=30s", "hostedresource/gadgets.example.com")
	if out := b.kubectl("get", "gadget", "g1", "-o", "jsonpath={.spec.size}"); strings.TrimSpace(out) != "7" {
		t.Errorf("after a restart on PostgreSQL, gadget g1 has spec.size %q, want 7", out)
	}

	// A watch-list (what client-go's informers use when WatchListClient is
	// on) needs the store's watch progress requests: the initial events end
	// with a bookmark.
	client, err := dynamic.NewForConfig(b.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := client.Resource(schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "gadgets"}).Watch(ctx, metav1.ListOptions{
		SendInitialEvents: ptr.To(true), ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan, AllowWatchBookmarks: true,
	})
	if err != nil {
		t.Fatalf("watch-list on PostgreSQL: %v", err)
	}
	defer w.Stop()
	var seen []string
	for done := false; !done; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch-list on PostgreSQL closed after %v", seen)
			}
			obj, _ := ev.Object.(*unstructured.Unstructured)
			if ev.Type == watch.Error || obj == nil {
				t.Fatalf("watch-list on PostgreSQL: %v", apierrors.FromObject(ev.Object))
			}
			seen = append(seen, string(ev.Type)+" "+obj.GetName())
			done = ev.Type == watch.Bookmark && obj.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true"
		case <-ctx.Done():
			t.Fatalf("watch-list on PostgreSQL: no initial-events bookmark after %v", seen)
		}
	}
	if len(seen) != 2 || seen[0] != "ADDED g1" {
		t.Errorf("watch-list on PostgreSQL sent %v, want ADDED g1 then the initial-events bookmark", seen)
	}
}
