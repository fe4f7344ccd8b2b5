//go:build integration

package standalone

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"annex.dev/annex/test/integration/framework"
)

// etcdKeys lists the keys under prefix in an etcd.
func etcdKeys(t *testing.T, client *clientv3.Client, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatalf("reading etcd: %v", err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	sort.Strings(keys)
	return keys
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestInstallsSharingAStore runs two installs of annex whose StorageBackends
// name one etcd. Each declares the same type there and creates objects of
// the same names: each sees only its own, the keys are under each install's
// prefix, and deleting one install's type deletes its objects only.
func TestInstallsSharingAStore(t *testing.T) {
	dir := t.TempDir()
	etcd := framework.StartEtcdServer(t, mkdir(t, filepath.Join(dir, "shared")))
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.URL}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	installs := map[string]*annex{}
	for i, name := range []string{"team-a", "team-b"} {
		d := mkdir(t, filepath.Join(dir, name))
		port, err := framework.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		// What the Helm chart passes: <namespace>.<fullname>.
		a := start(t, d, port, "--apiservice-managed-by="+name+".annex")
		installs[name] = a
		a.kubectl("apply", "-f", write(t, d, "types.yaml", fmt.Sprintf(`apiVersion: annex.dev/v1alpha1
kind: StorageBackend
metadata: {name: shared}
spec:
  type: Etcd
  etcd: {endpoints: [%q], insecure: true}
---
%s`, etcd.URL, hostedType("gadgets", "Gadget", "shared"))))
		a.kubectl("wait", "--for=condition=Established", "--timeout=60s", "hostedresource/gadgets.example.com")
		a.kubectl("wait", "--for=condition=StorageBackendReady", "--timeout=60s", "hostedresource/gadgets.example.com")
		a.kubectl("create", "-f", write(t, d, "objects.yaml", fmt.Sprintf(`apiVersion: example.com/v1
kind: Gadget
metadata: {name: g1}
spec: {size: %d}
---
apiVersion: example.com/v1
kind: Gadget
metadata: {name: %s-only}
spec: {}
`, i+1, name)))
	}

	for i, name := range []string{"team-a", "team-b"} {
		a := installs[name]
		if got, want := a.kubectl("get", "gadgets", "-o", "jsonpath={.items[*].metadata.name}"), "g1 "+name+"-only"; got != want {
			t.Errorf("%s lists gadgets %q, want its own: %q", name, got, want)
		}
		if got, want := a.kubectl("get", "gadget", "g1", "-o", "jsonpath={.spec.size}"), fmt.Sprint(i+1); got != want {
			t.Errorf("%s reads g1 with size %s, want its own, %s", name, got, want)
		}
	}
	want := []string{
		"/annex/installs/team-a.annex/example.com/gadgets/g1",
		"/annex/installs/team-a.annex/example.com/gadgets/team-a-only",
		"/annex/installs/team-b.annex/example.com/gadgets/g1",
		"/annex/installs/team-b.annex/example.com/gadgets/team-b-only",
	}
	if got := etcdKeys(t, client, "/annex/"); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the shared etcd holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Deleting team-a's type deletes team-a's objects, and no other.
	installs["team-a"].kubectl("delete", "hostedresource", "gadgets.example.com", "--timeout=60s")
	if got := installs["team-b"].kubectl("get", "gadgets", "-o", "jsonpath={.items[*].metadata.name}"); got != "g1 team-b-only" {
		t.Errorf("team-b lists gadgets %q after team-a deleted its type, want g1 team-b-only", got)
	}
	if got := etcdKeys(t, client, "/annex/"); strings.Join(got, " ") != strings.Join(want[2:], " ") {
		t.Errorf("after team-a deleted its type the shared etcd holds\n%s\nwant team-b's objects only", strings.Join(got, "\n"))
	}
}

// TestTypeCreatedBeforeKeyPrefixes upgrades a type made before installs had
// key prefixes of their own: its CRD records none, and its objects are under
// --etcd-prefix. After the restart annex serves them and stores new ones
// next to them, and changing the type does not move it.
func TestTypeCreatedBeforeKeyPrefixes(t *testing.T) {
	dir := t.TempDir()
	etcd := framework.StartEtcdServer(t, mkdir(t, filepath.Join(dir, "etcd")))
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.URL}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--etcd-servers=" + etcd.URL}
	a := start(t, dir, port, args...)
	a.kubectl("apply", "-f", write(t, dir, "gizmos.yaml", hostedType("gizmos", "Gizmo", "default")))
	a.kubectl("wait", "--for=condition=Established", "--timeout=60s", "hostedresource/gizmos.example.com")
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}

	// Make the store what an earlier annex left: a CRD without the record,
	// and an object under the store's prefix.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const crdKey = "/annex/apiextensions.k8s.io/customresourcedefinitions/gizmos.example.com"
	resp, err := client.Get(ctx, crdKey)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading the CRD in etcd: %v (%d keys)", err, len(resp.Kvs))
	}
	var crd map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &crd); err != nil {
		t.Fatalf("the CRD in etcd is not JSON: %v", err)
	}
	annotations := crd["metadata"].(map[string]any)["annotations"].(map[string]any)
	if annotations["annex.dev/storage-key-prefix"] != "/annex/installs/annex-apiserver" {
		t.Fatalf("a new CRD records key prefix %v, want /annex/installs/annex-apiserver", annotations["annex.dev/storage-key-prefix"])
	}
	delete(annotations, "annex.dev/storage-key-prefix")
	old, err := json.Marshal(crd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Put(ctx, crdKey, string(old)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Put(ctx, "/annex/example.com/gizmos/old", `{"apiVersion":"example.com/v1","kind":"Gizmo",`+
		`"metadata":{"name":"old","uid":"5d0c9bd4-3c5e-4a38-9d49-0f1e8f1f6b01","creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"size":4}}`); err != nil {
		t.Fatal(err)
	}

	a = start(t, dir, port, args...)
	if got := a.kubectl("get", "gizmos", "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.size}{end}"); got != "old=4" {
		t.Errorf("after the upgrade annex lists gizmos %q, want the one stored before: old=4", got)
	}
	a.kubectl("create", "-f", write(t, dir, "new.yaml", "apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: new}\nspec: {}\n"))
	// A change of the type keeps its keys.
	a.kubectl("apply", "-f", write(t, dir, "gizmos-changed.yaml",
		strings.Replace(hostedType("gizmos", "Gizmo", "default"), "shortNames: []", "shortNames: [gz]", 1)))
	if err := eventually(30*time.Second, func() bool {
		out, err := a.kubectlErr("get", "gz", "-o", "name")
		return err == nil && out == "gizmo.example.com/new\ngizmo.example.com/old\n"
	}); err != nil {
		out, _ := a.kubectlErr("get", "gz", "-o", "name")
		t.Errorf("after a change of the type annex lists gizmos %q, want new and old", out)
	}
	if got, want := etcdKeys(t, client, "/annex/example.com/"), "/annex/example.com/gizmos/new /annex/example.com/gizmos/old"; strings.Join(got, " ") != want {
		t.Errorf("the type's keys are %q, want %q", strings.Join(got, " "), want)
	}
	if got := etcdKeys(t, client, "/annex/installs/"); len(got) > 0 {
		t.Errorf("keys under the install's prefix: %q, want none for a type made before", got)
	}
}
