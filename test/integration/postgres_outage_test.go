//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
	"annex.dev/annex/test/integration/framework"
)

// TestPostgresBackendOutage stops the PostgreSQL server of a StorageBackend
// while annex serves two types from it, then starts annex again (as a new
// replica starts) and deletes one of the types' HostedResource, so that annex
// must start the backend while the database is down, repeatedly. annex stays
// up and ready, the other types serve, the types on the dead backend answer
// 503 with the reason, and once the database is back they serve again and
// the deletion completes.
func TestPostgresBackendOutage(t *testing.T) {
	// Longer than testContext's 2 minutes: a 15 s outage, a restart of annex
	// and up to 90 s for the deletion to complete fit in it on a loaded
	// machine too.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	admin := adminClient(t)
	pg := postgrestest.Start(t)
	secret, backend := uniqueName("pg-dsn"), uniqueName("pg")
	createSecret(t, secret, map[string]string{"dsn": pg.DSN})
	obj := storageBackend(backend, "Postgres", nil)
	if err := unstructured.SetNestedField(obj.Object, secret, "spec", "postgres", "dsnSecretRef", "name"); err != nil {
		t.Fatal(err)
	}
	create(t, admin, framework.StorageBackends, allowPlaintext(t, obj))
	readyCondition(t, backend, "Reachable")

	ns := createNamespace(t, "outage")
	kept := serveHostedTypeOn(t, "Ledger", "ledgers", uniqueName("kept")+".example.com", ns, backend)
	deleted := serveHostedTypeOn(t, "Ledger", "ledgers", uniqueName("deleted")+".example.com", ns, backend)
	healthy := serveHostedType(t, "Gizmo", "gizmos", uniqueName("healthy")+".example.com", ns)
	for _, gvr := range []schema.GroupVersionResource{kept, deleted} {
		if _, err := admin.Resource(gvr).Namespace(ns).Create(ctx, hostedObject(gvr, "Ledger", "l1", 1), metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating a ledger in %s: %v", gvr.Group, err)
		}
	}
	if _, err := admin.Resource(healthy).Namespace(ns).Create(ctx, hostedObject(healthy, "Gizmo", "g1", 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	pg.Stop(t)
	// A new replica starts while the database is down: the StorageBackend may
	// still say Ready. Short budgets keep the test short; kine v0.16 alone
	// would try for about 5 minutes and then crash annex.
	took, err := env.RestartAnnex(ctx, 45*time.Second,
		"--postgres-connect-timeout=2s", "--postgres-start-timeout=10s", "--storage-backend-retry-interval=1s")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("annex was ready %s after its start", took.Round(100*time.Millisecond))
	if took > 20*time.Second {
		t.Errorf("annex took %s to become ready: its readiness waited for the dead backend", took.Round(time.Second))
	}
	if err := env.WaitForAnnexThroughCluster(ctx); err != nil {
		t.Fatal(err)
	}

	expectServes := func(when string) {
		t.Helper()
		if err := env.AnnexRunning(); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if _, err := admin.Resource(framework.HostedResources).List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("%s: listing hostedresources: %v", when, err)
		}
		list, err := admin.Resource(healthy).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) != 1 {
			t.Errorf("%s: the type on the default backend: %v items, err %v; want 1 and no error", when, itemCount(list), err)
		}
	}
	expectUnavailable := func(when string, gvr schema.GroupVersionResource) {
		t.Helper()
		_, err := admin.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if !apierrors.IsServiceUnavailable(err) {
			t.Errorf("%s: listing %s: want 503 Service Unavailable, got %v", when, gvr.Group, err)
			return
		}
		msg := err.Error()
		t.Logf("%s: %s answers 503: %s", when, gvr.Group, msg)
		if !strings.Contains(msg, fmt.Sprintf("StorageBackend %q", backend)) ||
			!(strings.Contains(msg, "unreachable") || strings.Contains(msg, "Unreachable")) {
			t.Errorf("%s: the 503 does not name the backend and say it is unreachable: %v", when, err)
		}
	}
	// WaitForAnnexThroughCluster waits for annex.dev's APIService only. The
	// aggregator marks each hosted group's APIService available again on its
	// own schedule after the restart, and until then answers 503 itself,
	// with no Status: wait for annex's own answers before judging them.
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if _, err := admin.Resource(healthy).Namespace(ns).List(ctx, metav1.ListOptions{}); err != nil {
			return false, nil
		}
		_, err := admin.Resource(kept).Namespace(ns).List(ctx, metav1.ListOptions{})
		return err != nil && strings.Contains(err.Error(), "StorageBackend"), nil
	}); err != nil {
		t.Errorf("after a start with the database down, the aggregator never passed both groups' lists to annex: %v", err)
	}
	expectServes("after a start with the database down")
	expectUnavailable("after a start with the database down", kept)

	// Deleting a type runs the CRD finalizer, which needs the type's storage.
	if err := admin.Resource(framework.HostedResources).Delete(ctx, "ledgers."+deleted.Group, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting the HostedResource of a type on the dead backend: %v", err)
	}
	// Long enough for several attempts to start the backend (a second apart
	// at first, then doubling).
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err := env.AnnexRunning(); err != nil {
			t.Fatalf("while the database is down: %v", err)
		}
		time.Sleep(time.Second)
	}
	expectServes("15s into the outage")
	expectUnavailable("15s into the outage", kept)
	log, err := os.ReadFile(env.AnnexLog)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, `"Cannot start a storage backend"`) && strings.Contains(line, fmt.Sprintf("storageBackend=%q", backend)) {
			n++
		}
	}
	t.Logf("annex tried to start the backend %d times in the outage", n)
	if n < 2 {
		t.Errorf("annex tried to start the backend %d times during the outage, want it to try again", n)
	}

	pg.Restart(t)
	back := time.Now()
	var lastErr error
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := admin.Resource(kept).Namespace(ns).List(ctx, metav1.ListOptions{})
		lastErr = err
		return err == nil && len(list.Items) == 1, nil
	})
	if err != nil {
		t.Fatalf("the type on the backend does not serve its object once the database is back: %v", lastErr)
	}
	t.Logf("the type on the backend served again %s after the database came back", time.Since(back).Round(100*time.Millisecond))
	err = wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		_, lastErr = admin.Resource(framework.HostedResources).Get(ctx, "ledgers."+deleted.Group, metav1.GetOptions{})
		return apierrors.IsNotFound(lastErr), nil
	})
	if err != nil {
		t.Errorf("the HostedResource deleted during the outage is still there once the database is back: %v", lastErr)
	} else {
		t.Logf("the deletion completed %s after the database came back", time.Since(back).Round(100*time.Millisecond))
	}
	expectServes("after the outage")
	if code := statusOf(ctx, t, deleted); code != http.StatusNotFound {
		t.Errorf("the deleted type answers %d, want 404", code)
	}
}

func itemCount(list *unstructured.UnstructuredList) int {
	if list == nil {
		return 0
	}
	return len(list.Items)
}

// statusOf lists gvr in every namespace through the cluster and returns the
// HTTP status.
func statusOf(ctx context.Context, t *testing.T, gvr schema.GroupVersionResource) int {
	t.Helper()
	_, err := adminClient(t).Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
	if err == nil {
		return http.StatusOK
	}
	if s, ok := err.(apierrors.APIStatus); ok {
		return int(s.Status().Code)
	}
	return 0
}
