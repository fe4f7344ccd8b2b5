//go:build integration

package standalone

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"annex.dev/annex/test/integration/framework"
)

// TestMoveNeverDeletesObjects moves a type between StorageBackends while an
// object reaches its old store the way a replica that has not seen the move
// yet would write it: straight into the store, after annex accepted the
// change of backend. annex keeps its own data in an external etcd here, so
// the test can read the type's internal CRD.
//
// An object written during the wait before annex's last look keeps the
// type where it is. One that the last look missed survives the deletion of
// the type's CRD, which annex marks as a move, and is served again once the
// type is back on that backend.
func TestMoveNeverDeletesObjects(t *testing.T) {
	dir := t.TempDir()
	own := framework.StartEtcdServer(t, mkdir(t, filepath.Join(dir, "own")))
	outside := framework.StartEtcdServer(t, mkdir(t, filepath.Join(dir, "outside")))
	ownClient, err := clientv3.New(clientv3.Config{Endpoints: []string{own.URL}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ownClient.Close()
	outsideClient, err := clientv3.New(clientv3.Config{Endpoints: []string{outside.URL}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer outsideClient.Close()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port, "--etcd-servers="+own.URL)
	a.kubectl("apply", "-f", write(t, dir, "types.yaml", etcdBackend("outside", outside.URL)+"---\n"+hostedType("gizmos", "Gizmo", "outside")))
	a.kubectl("wait", "--for=condition=Established", "--timeout=60s", "hostedresource/gizmos.example.com")
	onOutside := write(t, dir, "on-outside.yaml", hostedType("gizmos", "Gizmo", "outside"))
	onDefault := write(t, dir, "on-default.yaml", hostedType("gizmos", "Gizmo", "default"))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const crdKey = "/annex/apiextensions.k8s.io/customresourcedefinitions/gizmos.example.com"
	const lateKey = "/annex/installs/annex-apiserver/example.com/gizmos/late"
	crd := func(t *testing.T) map[string]any {
		t.Helper()
		resp, err := ownClient.Get(ctx, crdKey)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		var c map[string]any
		if err := json.Unmarshal(resp.Kvs[0].Value, &c); err != nil {
			t.Fatalf("the CRD in etcd is not JSON: %v", err)
		}
		return c
	}
	uid := func(c map[string]any) string { return fmt.Sprint(c["metadata"].(map[string]any)["uid"]) }
	late := func(t *testing.T) bool {
		t.Helper()
		resp, err := outsideClient.Get(ctx, lateKey)
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Kvs) == 1
	}
	waitFor := func(t *testing.T, what string, cond func() bool) {
		t.Helper()
		if err := eventually(60*time.Second, cond); err != nil {
			t.Fatalf("%s: %v\nHostedResource:\n%s", what, err, a.kubectl("get", "hr", "gizmos.example.com", "-o", "yaml"))
		}
	}
	established := func() bool {
		return a.kubectl("get", "hr", "gizmos.example.com", "-o", `jsonpath={.status.conditions[?(@.type=="Established")].status}`) == "True"
	}
	original := uid(crd(t))

	t.Run("an object written before the last look keeps the type where it is", func(t *testing.T) {
		a.kubectl("apply", "-f", onDefault)
		// What a replica that still serves the type accepts; annex looks
		// for objects for the last time no sooner than 5 s after it saw
		// the change.
		if _, err := outsideClient.Put(ctx, lateKey, `{"apiVersion":"example.com/v1","kind":"Gizmo",`+
			`"metadata":{"name":"late","uid":"3f1f9a3e-8f0e-4d55-a1c3-5b0e0d1c2a77","creationTimestamp":"2026-12-02T05:00:00Z"},"spec":{"size":5}}`); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the move refused", func() bool {
			return a.kubectl("get", "hr", "gizmos.example.com", "-o", `jsonpath={.status.conditions[?(@.type=="Established")].reason}`) == "StorageBackendChangeRefused"
		})
		if c := crd(t); c == nil || uid(c) != original || c["metadata"].(map[string]any)["deletionTimestamp"] != nil {
			t.Fatalf("the type's CRD was deleted or replaced although the type has an object: %v", c["metadata"])
		}
		if !late(t) {
			t.Fatal("the object written during the move is gone from the old store")
		}
		a.kubectl("apply", "-f", onOutside)
		waitFor(t, "the type served again", established)
		if got := a.kubectl("get", "gizmo", "late", "-o", "jsonpath={.spec.size}"); got != "5" {
			t.Errorf("gizmo late has size %q, want 5", got)
		}
	})

	t.Run("an object the last look missed survives the move and comes back with the type", func(t *testing.T) {
		// annex's last look found no object and it deleted the CRD, marked
		// as a move; the object came from a late replica after the look.
		// The store then holds what the deletion leaves, written here
		// straight into annex's etcd since the object makes annex refuse
		// the move through its API.
		c := crd(t)
		metadata := c["metadata"].(map[string]any)
		metadata["annotations"].(map[string]any)["annex.dev/move-observed"] = fmt.Sprintf("%v 2026-12-02T05:00:00Z", 1)
		metadata["deletionTimestamp"] = time.Now().UTC().Format(time.RFC3339)
		metadata["finalizers"] = []string{"customresourcecleanup.apiextensions.k8s.io"}
		deleted, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ownClient.Put(ctx, crdKey, string(deleted)); err != nil {
			t.Fatal(err)
		}
		// The apiextensions server's CRD finalizer runs, the CRD goes, and
		// annex creates the type again on its HostedResource's backend.
		waitFor(t, "the type re-created", func() bool {
			c := crd(t)
			return c != nil && uid(c) != original
		})
		if !late(t) {
			t.Fatal("the CRD's deletion deleted the object in the old store")
		}
		var got string
		if err := eventually(60*time.Second, func() bool {
			got, _ = a.kubectlErr("get", "gizmos", "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.size}{end}")
			return got == "late=5"
		}); err != nil {
			t.Errorf("after the type came back annex lists %q, want late=5", got)
		}
		if log := a.LogLines("Keeping the objects written to a type's old StorageBackend"); !strings.Contains(log, `"objects"=1`) && !strings.Contains(log, "objects=1") {
			t.Errorf("annex's log does not report the object it kept:\n%s", log)
		}
	})

	t.Run("a move of the emptied type deletes no object and lands on the new backend", func(t *testing.T) {
		a.kubectl("delete", "gizmo", "late")
		before := uid(crd(t))
		a.kubectl("apply", "-f", onDefault)
		// Nothing is written until the type is on its new backend: a
		// create sent at once could reach the type before this replica
		// refuses it, the race this test is about.
		waitFor(t, "the type re-created on the default backend", func() bool {
			c := crd(t)
			return c != nil && uid(c) != before && c["metadata"].(map[string]any)["annotations"].(map[string]any)["annex.dev/storage-backend"] == "default"
		})
		waitFor(t, "a gizmo created on the default backend", func() bool {
			_, err := a.kubectlErr("create", "-f", write(t, dir, "g1.yaml", "apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: g1}\nspec: {}\n"))
			return err == nil
		})
		if got := a.kubectl("get", "gizmos", "-o", "jsonpath={.items[*].metadata.name}"); got != "g1" {
			t.Errorf("gizmos on the default backend: %q, want g1", got)
		}
		if keys := etcdKeys(t, outsideClient, "/annex/"); len(keys) > 0 {
			t.Errorf("the old store still holds %q", keys)
		}
	})
}
