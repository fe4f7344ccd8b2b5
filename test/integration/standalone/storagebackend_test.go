//go:build integration

package standalone

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"annex.dev/annex/test/integration/framework"
	"annex.dev/annex/test/ports"
)

// closedPort returns a loopback address on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	addr, err := ports.Closed()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestStorageBackendStatus checks that each StorageBackend's Ready condition
// comes from a real probe, that a HostedResource says whether the backend it
// names can hold it, and that a type with objects cannot change backend.
func TestStorageBackendStatus(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port)

	backends := fmt.Sprintf(`apiVersion: annex.dev/v1alpha1
kind: StorageBackend
metadata: {name: embedded}
spec: {type: Embedded}
---
apiVersion: annex.dev/v1alpha1
kind: StorageBackend
metadata: {name: dead-etcd}
spec:
  type: Etcd
  etcd: {endpoints: ["http://%s"], insecure: true}
---
apiVersion: annex.dev/v1alpha1
kind: StorageBackend
metadata: {name: postgres}
spec:
  type: Postgres
  postgres: {dsnSecretRef: {namespace: annex-storage-secrets, name: pg, key: dsn}}
`, closedPort(t))
	a.kubectl("apply", "-f", write(t, dir, "backends.yaml", backends))

	ready := func(kind, name string) (string, string, string) {
		t.Helper()
		out := a.kubectl("get", kind, name, "-o", `jsonpath={range .status.conditions[?(@.type=="`+map[string]string{
			"storagebackend": "Ready", "hostedresource": "StorageBackendReady"}[kind]+`")]}{.status}|{.reason}|{.message}{end}`)
		status, rest, _ := strings.Cut(out, "|")
		reason, message, _ := strings.Cut(rest, "|")
		return status, reason, message
	}
	waitFor := func(kind, name, condition, status string) {
		t.Helper()
		a.kubectl("wait", "--for=condition="+condition+"="+status, "--timeout=30s", kind+"/"+name)
	}

	waitFor("storagebackend", "embedded", "Ready", "True")
	if _, reason, _ := ready("storagebackend", "embedded"); reason != "Running" {
		t.Errorf("embedded backend: reason %q, want Running", reason)
	}
	waitFor("storagebackend", "dead-etcd", "Ready", "False")
	if _, reason, message := ready("storagebackend", "dead-etcd"); reason != "Unreachable" || !strings.Contains(message, "connection refused") {
		t.Errorf("etcd backend on a closed port: reason %q message %q, want Unreachable and the refused connection", reason, message)
	}
	waitFor("storagebackend", "postgres", "Ready", "False")
	if _, reason, message := ready("storagebackend", "postgres"); reason != "SecretsNeedACluster" || !strings.Contains(message, "annex-storage-secrets/pg") {
		t.Errorf("postgres backend in standalone mode: reason %q message %q, want SecretsNeedACluster naming the Secret", reason, message)
	}
	t.Logf("%s", a.kubectl("get", "storagebackends", "-o", "wide"))
	if out := a.kubectl("get", "storagebackends"); !strings.Contains(out, "dead-etcd") || !strings.Contains(out, "False") {
		t.Errorf("kubectl get storagebackends does not show the unready backend:\n%s", out)
	}

	hr := func(backend string) string {
		return strings.Replace(gadgets, "  scope: Cluster\n", "  scope: Cluster\n  storage: {backend: "+backend+"}\n", 1)
	}
	apply := func(backend string) (string, error) {
		return a.kubectlErr("apply", "-f", write(t, dir, "gadgets-"+backend+".yaml", hr(backend)))
	}

	t.Run("a HostedResource naming a missing backend says so", func(t *testing.T) {
		if out, err := apply("missing"); err != nil {
			t.Fatalf("creating a HostedResource that names a missing backend: %v\n%s", err, out)
		}
		waitFor("hostedresource", "gadgets.example.com", "StorageBackendReady", "False")
		if _, reason, message := ready("hostedresource", "gadgets.example.com"); reason != "StorageBackendNotFound" || !strings.Contains(message, `"missing"`) {
			t.Errorf("StorageBackendReady: reason %q message %q, want StorageBackendNotFound naming the backend", reason, message)
		}
	})

	established := func() {
		t.Helper()
		a.kubectl("wait", "--for=condition=Established", "--timeout=60s", "hostedresource/gadgets.example.com")
	}

	t.Run("a ready backend other than default is ready", func(t *testing.T) {
		// The type has no objects, and its backend does not exist: it moves.
		if out, err := apply("embedded"); err != nil {
			t.Fatalf("changing the backend of a type with no objects: %v\n%s", err, out)
		}
		waitFor("hostedresource", "gadgets.example.com", "StorageBackendReady", "True")
		if _, reason, message := ready("hostedresource", "gadgets.example.com"); reason != "StorageBackendReady" || !strings.Contains(message, `"embedded"`) {
			t.Errorf("StorageBackendReady on the embedded backend: reason %q message %q, want StorageBackendReady naming the backend", reason, message)
		}
		established()
	})

	t.Run("the default backend is ready", func(t *testing.T) {
		if out, err := apply("default"); err != nil {
			t.Fatalf("changing the backend of a type with no objects back to default: %v\n%s", err, out)
		}
		waitFor("hostedresource", "gadgets.example.com", "StorageBackendReady", "True")
		established()
	})

	t.Run("a type on an unready backend answers 503 and stays there while annex cannot look into it", func(t *testing.T) {
		if out, err := apply("dead-etcd"); err != nil {
			t.Fatalf("changing the backend of a type with no objects: %v\n%s", err, out)
		}
		a.kubectl("wait", "--for=jsonpath={.status.conditions[?(@.type==\"StorageBackendReady\")].reason}=StorageBackendNotReady", "--timeout=30s", "hostedresource/gadgets.example.com")
		established()
		if out, err := a.kubectlErr("get", "gadgets"); err == nil || !strings.Contains(out, "ServiceUnavailable") || !strings.Contains(out, `"dead-etcd"`) {
			t.Errorf("listing a type on an unready backend: want a 503 naming the backend, got %v\n%s", err, out)
		}
		// Whether the type has objects in the unreachable store is unknown.
		if out, err := apply("default"); err == nil || !strings.Contains(out, "cannot tell whether") {
			t.Errorf("moving a type off an unreachable backend: want a 503 saying annex cannot tell whether it has objects, got %v\n%s", err, out)
		}
		// Deleting the backend waits while the type is on it. Giving up on
		// the store, and on whatever it holds, by removing the finalizer
		// lets the type move: nothing can be stranded in a backend annex no
		// longer knows.
		a.kubectl("delete", "storagebackend", "dead-etcd", "--wait=false")
		a.kubectl("wait", "--for=condition=Deleting", "--timeout=30s", "storagebackend/dead-etcd")
		a.kubectl("patch", "storagebackend", "dead-etcd", "--type=merge", "-p", `{"metadata":{"finalizers":null}}`)
		a.kubectl("wait", "--for=delete", "--timeout=30s", "storagebackend/dead-etcd")
		if out, err := apply("default"); err != nil {
			t.Fatalf("moving a type off a deleted backend: %v\n%s", err, out)
		}
		waitFor("hostedresource", "gadgets.example.com", "StorageBackendReady", "True")
		established()
	})

	t.Run("a type with objects cannot change backend", func(t *testing.T) {
		a.kubectl("apply", "-f", write(t, dir, "g1.yaml", "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {}\n"))
		out, err := apply("embedded")
		if err == nil || !strings.Contains(out, "spec.storage.backend") || !strings.Contains(out, "moving a type between backends is not supported") {
			t.Errorf("changing the backend of a type with an object: want a rejection on spec.storage.backend saying moving is not supported, got %v\n%s", err, out)
		}
		if out := a.kubectl("get", "hr", "gadgets.example.com", "-o", "jsonpath={.spec.storage.backend}"); out != "default" {
			t.Errorf("spec.storage.backend = %q after the rejected change, want default", out)
		}
		// Other changes of the type still go through.
		a.kubectl("label", "hr", "gadgets.example.com", "team=a")
		// Once the objects are gone the change is allowed again.
		a.kubectl("delete", "gadget", "g1", "--timeout=30s")
		if out, err := apply("embedded"); err != nil {
			t.Errorf("changing the backend after the objects were deleted: %v\n%s", err, out)
		}
	})
}

// TestStorageBackendInUse checks that a StorageBackend a HostedResource
// uses can be neither pointed at another store nor deleted from under the
// type's objects, and that one nobody uses can be both.
func TestStorageBackendInUse(t *testing.T) {
	dir := t.TempDir()
	etcd := framework.StartEtcdServer(t, mkdir(t, filepath.Join(dir, "outside")))
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port, "--storage-backend-probe-interval=1s")
	a.kubectl("apply", "-f", write(t, dir, "types.yaml", etcdBackend("used", etcd.URL)+"---\n"+etcdBackend("unused", etcd.URL)+"---\n"+
		hostedType("widgets", "Widget", "used")))
	a.kubectl("wait", "--for=condition=Established", "--timeout=60s", "hostedresource/widgets.example.com")
	widget := func(name string) string {
		return write(t, dir, name+".yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: "+name+"}\nspec: {}\n")
	}
	if err := eventually(60*time.Second, func() bool {
		_, err := a.kubectlErr("apply", "-f", widget("w1"))
		return err == nil
	}); err != nil {
		t.Fatalf("creating a widget: %v", err)
	}

	elsewhere := "http://" + closedPort(t)
	out, err := a.kubectlErr("apply", "-f", write(t, dir, "used-elsewhere.yaml", etcdBackend("used", elsewhere)))
	if err == nil || !strings.Contains(out, "spec: Forbidden") || !strings.Contains(out, "widgets.example.com") {
		t.Errorf("pointing a backend in use at another store: want a 422 on spec naming the HostedResource, got %v\n%s", err, out)
	}
	if got := a.kubectl("get", "storagebackend", "used", "-o", "jsonpath={.spec.etcd.endpoints[0]}"); got != etcd.URL {
		t.Errorf("the refused change was stored: endpoint %q, want %q", got, etcd.URL)
	}
	a.kubectl("apply", "-f", write(t, dir, "unused-elsewhere.yaml", etcdBackend("unused", elsewhere)))

	// Deleting a backend in use is held, and its type keeps working.
	a.kubectl("delete", "storagebackend", "used", "--wait=false")
	a.kubectl("wait", "--for=condition=Deleting", "--timeout=30s", "storagebackend/used")
	if msg := a.kubectl("get", "storagebackend", "used", "-o", `jsonpath={.status.conditions[?(@.type=="Deleting")].message}`); !strings.Contains(msg, "widgets.example.com") {
		t.Errorf("the Deleting condition does not name the HostedResource that holds the backend: %q", msg)
	}
	a.kubectl("apply", "-f", widget("w2"))
	if got := a.kubectl("get", "widgets", "-o", "jsonpath={.items[*].metadata.name}"); got != "w1 w2" {
		t.Errorf("widgets while their backend's deletion waits: %q, want w1 w2", got)
	}

	// A backend nobody uses goes at once; one in use goes with its last user.
	a.kubectl("delete", "storagebackend", "unused", "--timeout=30s")
	a.kubectl("delete", "hostedresource", "widgets.example.com", "--timeout=60s")
	a.kubectl("wait", "--for=delete", "--timeout=30s", "storagebackend/used")
}
