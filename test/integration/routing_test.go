//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
	"annex.dev/annex/test/integration/framework"
)

// createSecret creates a Secret in the namespace where StorageBackends' Secrets
// live, for the length of the test.
func createSecret(t *testing.T, name string, data map[string]string) {
	t.Helper()
	secret := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": name, "namespace": framework.SecretNamespace},
	}}
	stringData := map[string]any{}
	for k, v := range data {
		stringData[k] = v
	}
	secret.Object["stringData"] = stringData
	secrets := adminClient(t).Resource(secretsResource).Namespace(framework.SecretNamespace)
	if _, err := secrets.Create(testContext(t), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = secrets.Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// createPostgresBackend names the PostgreSQL server pg in the
// StorageBackend name (plaintext on loopback: insecure), with its DSN in a
// Secret, and waits until annex reaches it.
func createPostgresBackend(t *testing.T, pg *postgrestest.Server, name string) {
	t.Helper()
	secret := uniqueName("pg-dsn")
	createSecret(t, secret, map[string]string{"dsn": pg.DSN})
	obj := storageBackend(name, "Postgres", nil)
	if err := unstructured.SetNestedField(obj.Object, secret, "spec", "postgres", "dsnSecretRef", "name"); err != nil {
		t.Fatal(err)
	}
	create(t, adminClient(t), framework.StorageBackends, allowPlaintext(t, obj))
	readyCondition(t, name, "Reachable")
}

// createEtcdBackend names the etcd cluster etcd, serving over TLS with
// client certificates, in the StorageBackend name, with its CA and client
// certificate in a Secret, and waits until annex reaches it.
func createEtcdBackend(t *testing.T, etcd *framework.EtcdCluster, name string) {
	t.Helper()
	secret := uniqueName("etcd-tls")
	createSecret(t, secret, map[string]string{"ca.crt": readFile(t, etcd.CAFile), "tls.crt": readFile(t, etcd.CertFile), "tls.key": readFile(t, etcd.KeyFile)})
	obj := storageBackend(name, "Etcd", nil)
	if err := unstructured.SetNestedStringSlice(obj.Object, etcd.ClientURLs(), "spec", "etcd", "endpoints"); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedMap(obj.Object, map[string]any{"namespace": framework.SecretNamespace, "name": secret}, "spec", "etcd", "tlsSecretRef"); err != nil {
		t.Fatal(err)
	}
	create(t, adminClient(t), framework.StorageBackends, obj)
	readyCondition(t, name, "Reachable")
}

// readFile returns the content of the file at path.
func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestHostedTypesOnPostgresAndEtcd serves one type from a PostgreSQL
// database and another from an external etcd cluster, side by side in one
// annex, both through the cluster: each StorageBackend's credentials come
// from a Secret of the cluster, each type's objects land in its own store
// and nowhere else, and watches through the cluster see them.
func TestHostedTypesOnPostgresAndEtcd(t *testing.T) {
	pg := postgrestest.Start(t)
	etcd := framework.StartEtcdCluster(t, 1)
	pgBackend, etcdBackend := uniqueName("pg"), uniqueName("etcd")
	createPostgresBackend(t, pg, pgBackend)
	createEtcdBackend(t, etcd, etcdBackend)

	ns := createNamespace(t, "routing")
	pgGroup, etcdGroup := uniqueName("pg")+".example.com", uniqueName("etcd")+".example.com"
	onPG := serveHostedTypeOn(t, "Ledger", "ledgers", pgGroup, ns, pgBackend)
	onEtcd := serveHostedTypeOn(t, "Ledger", "ledgers", etcdGroup, ns, etcdBackend)
	for _, name := range []string{"ledgers." + pgGroup, "ledgers." + etcdGroup} {
		if c := waitForCondition(t, name, "StorageBackendReady", metav1.ConditionTrue); c.Reason != "StorageBackendReady" {
			t.Errorf("%s: StorageBackendReady reason %q, want StorageBackendReady", name, c.Reason)
		}
	}

	// Watches through the cluster, opened before the creates.
	ctx, cancel := context.WithTimeout(testContext(t), time.Minute)
	defer cancel()
	var watches []watch.Interface
	pgWatch, err := adminClient(t).Resource(onPG).Namespace(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	etcdWatch, err := adminClient(t).Resource(onEtcd).Namespace(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	watches = append(watches, pgWatch, etcdWatch)
	defer func() {
		for _, w := range watches {
			w.Stop()
		}
	}()

	names := []string{"l1", "l2", "l3"}
	for _, name := range names {
		if _, err := adminClient(t).Resource(onPG).Namespace(ns).Create(ctx, hostedObject(onPG, "Ledger", name, 1), metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s on PostgreSQL through the cluster: %v", name, err)
		}
		if _, err := adminClient(t).Resource(onEtcd).Namespace(ns).Create(ctx, hostedObject(onEtcd, "Ledger", name, 1), metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s on etcd through the cluster: %v", name, err)
		}
	}
	for i, w := range watches {
		var seen []string
		for len(seen) < len(names) {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatalf("watch %d closed after %v", i, seen)
				}
				if ev.Type == watch.Added {
					seen = append(seen, ev.Object.(*unstructured.Unstructured).GetName())
				}
			case <-ctx.Done():
				t.Fatalf("watch %d saw %v, want ADDED for %v", i, seen, names)
			}
		}
	}

	want := func(group string) string {
		var keys []string
		for _, n := range names {
			keys = append(keys, fmt.Sprintf("/annex/installs/annex-apiserver/%s/ledgers/%s/%s", group, ns, n))
		}
		return strings.Join(keys, " ")
	}
	// The external etcd holds the etcd type's objects, and nothing of the other.
	client := etcd.Client(t)
	resp, err := client.Get(ctx, "/annex/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var etcdKeys []string
	for _, kv := range resp.Kvs {
		etcdKeys = append(etcdKeys, string(kv.Key))
	}
	sort.Strings(etcdKeys)
	if got := strings.Join(etcdKeys, " "); got != want(etcdGroup) {
		t.Errorf("the external etcd holds %q, want %q", got, want(etcdGroup))
	}
	// annex wrote the etcd client's key for its connection to the runtime
	// directory, owner-only, and nowhere in the data directory.
	checkClientKeyOnlyInRuntimeDir(t, []byte(readFile(t, etcd.KeyFile)))
	// PostgreSQL holds the other type's, in kine's table.
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT DISTINCT name FROM kine WHERE name LIKE '/annex/%' ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	pgKeys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(pgKeys, " "); got != want(pgGroup) {
		t.Errorf("PostgreSQL holds %q, want %q", got, want(pgGroup))
	}
	// The PostgreSQL backend's database reports on annex's /metrics, by name.
	direct, err := env.AnnexAdminConfig(uniqueName("metrics-reader"))
	if err != nil {
		t.Fatal(err)
	}
	directClient, err := kubernetes.NewForConfig(direct)
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := directClient.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatalf("reading annex's /metrics: %v", err)
	}
	for _, name := range []string{"annex_postgres_database_size_bytes", "annex_postgres_compaction_lag_revisions"} {
		if series := name + `{storage_backend="` + pgBackend + `"}`; !strings.Contains(string(metrics), series) {
			t.Errorf("annex's /metrics has no %s", series)
		}
	}

	// The cluster's etcd holds neither.
	clusterEtcd, err := clientv3.New(clientv3.Config{Endpoints: []string{env.EtcdURL()}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer clusterEtcd.Close()
	all, err := clusterEtcd.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range all.Kvs {
		if strings.Contains(string(kv.Key), "/"+pgGroup+"/") || strings.Contains(string(kv.Key), "/"+etcdGroup+"/ledgers/") {
			t.Errorf("the cluster's etcd holds %s", kv.Key)
		}
	}
}
