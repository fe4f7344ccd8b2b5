//go:build integration

package standalone

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"annex.dev/annex/test/integration/framework"
)

// hostedType is the gadgets type under other names, on the given backend.
func hostedType(plural, kind, backend string) string {
	hr := strings.NewReplacer("gadgets", plural, "Gadget", kind, "shortNames: [gd]", "shortNames: []").Replace(gadgets)
	return strings.Replace(hr, "  scope: Cluster\n", "  scope: Cluster\n  storage: {backend: "+backend+"}\n", 1)
}

// etcdBackend is a StorageBackend of the etcd at endpoint, which serves
// plaintext as the tests' etcd does.
func etcdBackend(name, endpoint string) string {
	return fmt.Sprintf("apiVersion: annex.dev/v1alpha1\nkind: StorageBackend\nmetadata: {name: %s}\nspec:\n  type: Etcd\n  etcd: {endpoints: [%q], insecure: true}\n", name, endpoint)
}

// TestHostedTypeOnAnotherBackend stores one type in an external etcd named
// by a StorageBackend and another in annex's default store, side by side:
// the objects land where their HostedResource says, stay there across a
// restart, and an outage of one backend makes its type answer 503 at once
// while the other type keeps working.
func TestHostedTypeOnAnotherBackend(t *testing.T) {
	dir := t.TempDir()
	etcd := framework.StartEtcdServer(t, mkdir(t, filepath.Join(dir, "outside")))
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--storage-backend-probe-interval=1s", "--etcd-count-metric-poll-period=1s"}
	a := start(t, dir, port, args...)

	a.kubectl("apply", "-f", write(t, dir, "types.yaml", etcdBackend("outside", etcd.URL)+"---\n"+
		hostedType("gadgets", "Gadget", "outside")+"---\n"+hostedType("gizmos", "Gizmo", "default")))
	for _, hr := range []string{"gadgets.example.com", "gizmos.example.com"} {
		a.kubectl("wait", "--for=condition=Established", "--timeout=60s", "hostedresource/"+hr)
		a.kubectl("wait", "--for=condition=StorageBackendReady", "--timeout=60s", "hostedresource/"+hr)
	}
	a.kubectl("apply", "-f", write(t, dir, "objects.yaml", `apiVersion: example.com/v1
kind: Gadget
metadata: {name: g1}
spec: {size: 1}
---
apiVersion: example.com/v1
kind: Gadget
metadata: {name: g2}
spec: {size: 2}
---
apiVersion: example.com/v1
kind: Gizmo
metadata: {name: z1}
spec: {size: 1}
`))

	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.URL}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	outsideKeys := func() []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := client.Get(ctx, "/annex/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatalf("reading the external etcd: %v", err)
		}
		var keys []string
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
		sort.Strings(keys)
		return keys
	}
	if got, want := strings.Join(outsideKeys(), " "), "/annex/installs/annex-apiserver/example.com/gadgets/g1 /annex/installs/annex-apiserver/example.com/gadgets/g2"; got != want {
		t.Errorf("the external etcd holds %q, want only the gadgets: %q", got, want)
	}
	// The counts reach the statuses, and kubectl get shows them.
	jsonpath := func(object, path string) string {
		return a.kubectl("get", object, "-o", "jsonpath="+path)
	}
	if err := eventually(60*time.Second, func() bool {
		return jsonpath("hostedresource/gadgets.example.com", "{.status.objectCount}") == "2" &&
			jsonpath("hostedresource/gizmos.example.com", "{.status.objectCount}") == "1" &&
			jsonpath("storagebackend/outside", "{.status.objectCount}") == "2"
	}); err != nil {
		t.Errorf("object counts: gadgets %q, gizmos %q, backend outside %q; want 2, 1, 2",
			jsonpath("hostedresource/gadgets.example.com", "{.status.objectCount}"),
			jsonpath("hostedresource/gizmos.example.com", "{.status.objectCount}"),
			jsonpath("storagebackend/outside", "{.status.objectCount}"))
	}
	if size := jsonpath("storagebackend/outside", "{.status.sizeBytes}"); size == "" || size == "0" {
		t.Errorf("storagebackend outside: status.sizeBytes %q, want the etcd's database size", size)
	}
	if out := a.kubectl("get", "storagebackends"); !strings.Contains(out, "OBJECTS") || !strings.Contains(out, "SIZE") || !hasRow(out, "outside", "Etcd", "True", "2") {
		t.Errorf("kubectl get storagebackends does not show the backend's objects and size:\n%s", out)
	}

	names := func(resource string) string {
		t.Helper()
		return a.kubectl("get", resource, "-o", "jsonpath={.items[*].metadata.name}")
	}

	outer := t
	t.Run("the binding survives a restart", func(t *testing.T) {
		if err := a.Stop(); err != nil {
			t.Fatal(err)
		}
		// Started for the whole test: the subtests after this one use it.
		a = start(outer, dir, port, args...)
		if got := names("gadgets"); got != "g1 g2" {
			t.Errorf("gadgets after a restart: %q, want g1 g2", got)
		}
		if got := names("gizmos"); got != "z1" {
			t.Errorf("gizmos after a restart: %q, want z1", got)
		}
	})

	t.Run("an outage of the backend answers 503 for its type only", func(t *testing.T) {
		if err := etcd.Stop(); err != nil {
			t.Fatal(err)
		}
		a.kubectl("wait", "--for=condition=Ready=False", "--timeout=30s", "storagebackend/outside")
		a.kubectl("wait", "--for=condition=StorageBackendReady=False", "--timeout=30s", "hostedresource/gadgets.example.com")
		started := time.Now()
		out, err := a.kubectlErr("get", "gadgets")
		took := time.Since(started)
		if err == nil || !strings.Contains(out, "ServiceUnavailable") || !strings.Contains(out, `StorageBackend "outside"`) {
			t.Errorf("kubectl get gadgets during the outage: want a 503 naming the backend, got %v\n%s", err, out)
		}
		// A clear error rather than a request waiting for the store.
		if took > 10*time.Second {
			t.Errorf("kubectl get gadgets took %s to fail during the outage", took)
		}
		if got := names("gizmos"); got != "z1" {
			t.Errorf("gizmos during the other backend's outage: %q, want z1", got)
		}

		if err := etcd.Start(); err != nil {
			t.Fatal(err)
		}
		a.kubectl("wait", "--for=condition=Ready", "--timeout=60s", "storagebackend/outside")
		if got := names("gadgets"); got != "g1 g2" {
			t.Errorf("gadgets after the outage: %q, want g1 g2", got)
		}
		a.kubectl("apply", "-f", write(t, dir, "g3.yaml", "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g3}\nspec: {}\n"))
	})

	t.Run("a type without objects moves to another backend", func(t *testing.T) {
		a.kubectl("apply", "-f", write(t, dir, "doodads.yaml", hostedType("doodads", "Doodad", "default")))
		a.kubectl("wait", "--for=condition=Established", "--timeout=60s", "hostedresource/doodads.example.com")
		a.kubectl("apply", "-f", write(t, dir, "doodads-outside.yaml", hostedType("doodads", "Doodad", "outside")))
		// The type is re-created on the new backend: until it is, its
		// requests are refused, and the object created after lands there.
		if err := eventually(60*time.Second, func() bool {
			_, err := a.kubectlErr("apply", "-f", write(t, dir, "d1.yaml", "apiVersion: example.com/v1\nkind: Doodad\nmetadata: {name: d1}\nspec: {}\n"))
			return err == nil
		}); err != nil {
			t.Fatalf("creating a doodad after the move: %v", err)
		}
		if keys := strings.Join(outsideKeys(), " "); !strings.Contains(keys, "/annex/installs/annex-apiserver/example.com/doodads/d1") {
			t.Errorf("the external etcd holds %q, want the moved type's object too", keys)
		}
		// With an object, the type stays where it is.
		out, err := a.kubectlErr("apply", "-f", write(t, dir, "doodads-back.yaml", hostedType("doodads", "Doodad", "default")))
		if err == nil || !strings.Contains(out, "spec.storage.backend") {
			t.Errorf("moving a type with objects back: want a rejection on spec.storage.backend, got %v\n%s", err, out)
		}
	})

	t.Run("a type on a missing backend answers 503, and its backend can be corrected", func(t *testing.T) {
		a.kubectl("apply", "-f", write(t, dir, "thingies.yaml", hostedType("thingies", "Thingy", "nowhere")))
		a.kubectl("wait", "--for=condition=StorageBackendReady=False", "--timeout=60s", "hostedresource/thingies.example.com")
		var out string
		if err := eventually(30*time.Second, func() bool {
			out, _ = a.kubectlErr("get", "thingies")
			return strings.Contains(out, "ServiceUnavailable")
		}); err != nil || !strings.Contains(out, `StorageBackend "nowhere"`) || !strings.Contains(out, "does not exist") {
			t.Errorf("kubectl get thingies on a missing backend: want a 503 saying the backend does not exist, got\n%s", out)
		}
		// The mistyped name is corrected: the type has no objects anywhere.
		a.kubectl("apply", "-f", write(t, dir, "thingies-fixed.yaml", hostedType("thingies", "Thingy", "default")))
		if err := eventually(60*time.Second, func() bool {
			_, err := a.kubectlErr("apply", "-f", write(t, dir, "t1.yaml", "apiVersion: example.com/v1\nkind: Thingy\nmetadata: {name: t1}\nspec: {}\n"))
			return err == nil
		}); err != nil {
			t.Fatalf("creating a thingy after correcting its backend: %v\n%s\nannex's log of the type:\n%s", err,
				a.kubectl("get", "hr", "thingies.example.com", "-o", "yaml"), a.LogLines("thingies"))
		}
	})
}

// eventually polls cond every 250 ms until it holds or timeout passes.
func eventually(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nil
}
