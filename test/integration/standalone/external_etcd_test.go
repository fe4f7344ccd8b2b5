//go:build integration

package standalone

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"annex.dev/annex/test/integration/framework"
)

// TestExternalEtcd runs annex with --etcd-servers: the objects land in that
// etcd under annex's prefix, and no embedded etcd is started.
func TestExternalEtcd(t *testing.T) {
	dir := t.TempDir()
	etcdURL := framework.StartEtcd(t, dir)
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port, "--etcd-servers="+etcdURL)

	manifest := filepath.Join(dir, "sb.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: annex.dev/v1alpha1\nkind: StorageBackend\nmetadata:\n  name: outside\nspec:\n  type: Embedded\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.kubectl("create", "-f", manifest)

	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.Get(ctx, "/annex/annex.dev/storagebackends/outside")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"type":"Embedded"`) {
		t.Errorf("the external etcd holds %s, want the StorageBackend \"outside\"", fmt.Sprint(resp.Kvs))
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "etcd")); !os.IsNotExist(err) {
		t.Errorf("annex started an embedded etcd although --etcd-servers was given (stat: %v)", err)
	}
}
