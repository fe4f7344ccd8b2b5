//go:build integration

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
	"annex.dev/annex/test/integration/framework"
	"annex.dev/annex/test/ports"
)

var secretsResource = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// readyCondition waits until StorageBackend name has a Ready condition with
// the given reason, and returns its status and message.
func readyCondition(t *testing.T, name, reason string) (string, string) {
	t.Helper()
	var status, message, last string
	err := wait.PollUntilContextTimeout(testContext(t), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		obj, err := storageBackends(t).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conditions, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
		for _, c := range conditions {
			c, _ := c.(map[string]any)
			if c["type"] != "Ready" {
				continue
			}
			last, _ = c["reason"].(string)
			status, _ = c["status"].(string)
			message, _ = c["message"].(string)
			return last == reason, nil
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("StorageBackend %s: Ready reason %q (%s), want %q: %v", name, last, message, reason, err)
	}
	return status, message
}

// TestStorageBackendProbes checks that in aggregated mode annex probes the
// stores that StorageBackends describe, with credentials from the cluster's Secrets.
func TestStorageBackendProbes(t *testing.T) {
	t.Run("an etcd that answers is Reachable", func(t *testing.T) {
		name := uniqueName("probe-etcd")
		obj := storageBackend(name, "Etcd", nil)
		if err := unstructured.SetNestedStringSlice(obj.Object, []string{env.EtcdURL()}, "spec", "etcd", "endpoints"); err != nil {
			t.Fatal(err)
		}
		create(t, adminClient(t), framework.StorageBackends, allowPlaintext(t, obj))
		if status, message := readyCondition(t, name, "Reachable"); status != "True" || !strings.Contains(message, "1 of 1") {
			t.Errorf("Ready = %s (%s), want True with the endpoints that answer", status, message)
		}
	})

	t.Run("a missing Secret is reported", func(t *testing.T) {
		name := uniqueName("probe-nosecret")
		obj := storageBackend(name, "Postgres", nil)
		if err := unstructured.SetNestedField(obj.Object, uniqueName("absent"), "spec", "postgres", "dsnSecretRef", "name"); err != nil {
			t.Fatal(err)
		}
		create(t, adminClient(t), framework.StorageBackends, obj)
		if status, _ := readyCondition(t, name, "SecretNotFound"); status != "False" {
			t.Errorf("Ready = %s, want False", status)
		}
	})

	t.Run("the DSN is read from the cluster's Secret and never shown", func(t *testing.T) {
		addr, err := ports.Closed()
		if err != nil {
			t.Fatal(err)
		}
		secretName := uniqueName("pg-dsn")
		const password = "not-for-status"
		secret := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Secret",
			"metadata":   map[string]any{"name": secretName, "namespace": framework.SecretNamespace},
			"stringData": map[string]any{"dsn": "postgres://annex:" + password + "@" + addr + "/annex?sslmode=disable"},
		}}
		if _, err := adminClient(t).Resource(secretsResource).Namespace(framework.SecretNamespace).Create(testContext(t), secret, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = adminClient(t).Resource(secretsResource).Namespace(framework.SecretNamespace).Delete(context.Background(), secretName, metav1.DeleteOptions{})
		})
		name := uniqueName("probe-pg")
		obj := storageBackend(name, "Postgres", nil)
		if err := unstructured.SetNestedField(obj.Object, secretName, "spec", "postgres", "dsnSecretRef", "name"); err != nil {
			t.Fatal(err)
		}
		create(t, adminClient(t), framework.StorageBackends, allowPlaintext(t, obj))
		status, message := readyCondition(t, name, "Unreachable")
		if status != "False" || !strings.Contains(message, "connection refused") {
			t.Errorf("Ready = %s (%s), want False with the refused connection", status, message)
		}
		if strings.Contains(message, password) {
			t.Errorf("the Ready message shows the DSN's password: %q", message)
		}
	})
}

// storageBackendCondition returns StorageBackend name's condition of the
// type, or nil.
func storageBackendCondition(t *testing.T, name, conditionType string) map[string]any {
	t.Helper()
	obj, err := storageBackends(t).Get(testContext(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conditions, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conditions {
		if c, _ := c.(map[string]any); c["type"] == conditionType {
			return c
		}
	}
	return nil
}

// TestPlaintextPostgresNeedsInsecure checks, through the cluster, that a
// PostgreSQL StorageBackend whose connection string lets annex connect
// without TLS is used only with spec.postgres.insecure: without it the
// backend is not Ready and says why; with it, it is Ready and its status
// says the connection is plaintext. Neither shows the connection string.
func TestPlaintextPostgresNeedsInsecure(t *testing.T) {
	pg := postgrestest.Start(t)
	// The test server trusts every connection; the password only has to
	// stay out of sight.
	const password = "plaintext-secret"
	dsn := strings.Replace(pg.DSN, "postgres://annex@", "postgres://annex:"+password+"@", 1)
	if !strings.Contains(dsn, "sslmode=disable") || !strings.Contains(dsn, password) {
		t.Fatalf("the test's connection string is not a plaintext one with a password: %s", dsn)
	}
	secretName := uniqueName("pg-plain")
	createSecret(t, secretName, map[string]string{"dsn": dsn})
	backend := func(name string) *unstructured.Unstructured {
		obj := storageBackend(name, "Postgres", nil)
		if err := unstructured.SetNestedField(obj.Object, secretName, "spec", "postgres", "dsnSecretRef", "name"); err != nil {
			t.Fatal(err)
		}
		return obj
	}
	refused, allowed := uniqueName("plain-refused"), uniqueName("plain-allowed")
	create(t, adminClient(t), framework.StorageBackends, backend(refused))
	create(t, adminClient(t), framework.StorageBackends, allowPlaintext(t, backend(allowed)))

	status, message := readyCondition(t, refused, "PlaintextNotAllowed")
	if status != "False" || !strings.Contains(message, "Secret "+framework.SecretNamespace+"/"+secretName) || !strings.Contains(message, "spec.postgres.insecure: true") {
		t.Errorf("without insecure: Ready = %s (%s), want False naming the Secret and spec.postgres.insecure: true", status, message)
	}
	status, message = readyCondition(t, allowed, "Reachable")
	if status != "True" {
		t.Errorf("with insecure: Ready = %s (%s), want True", status, message)
	}
	for _, name := range []string{refused, allowed} {
		secure := storageBackendCondition(t, name, "Secure")
		if secure == nil || secure["status"] != "False" || secure["reason"] != "Plaintext" {
			t.Errorf("%s: Secure = %v, want False with reason Plaintext", name, secure)
		}
		if name == allowed && !strings.Contains(fmt.Sprint(secure["message"]), "spec.postgres.insecure allows plaintext") {
			t.Errorf("%s: the Secure message %q does not say insecure allows plaintext", name, secure["message"])
		}
		obj, err := storageBackends(t).Get(testContext(t), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if shown := fmt.Sprint(obj.Object["status"]); strings.Contains(shown, password) || strings.Contains(shown, "127.0.0.1") {
			t.Errorf("%s: the status shows the connection string: %s", name, shown)
		}
	}
}

// TestHostedResourceBackendChange checks, through the cluster, that a type's
// backend may change while it has no objects and not once it has one.
func TestHostedResourceBackendChange(t *testing.T) {
	group := uniqueName("backendchange") + ".example.com"
	ns := createNamespace(t, "backendchange")
	gvr := serveHostedType(t, "Crate", "crates", group, ns)
	name := "crates." + group
	if c := waitForCondition(t, name, "StorageBackendReady", metav1.ConditionTrue); c.Reason != "DefaultStore" {
		t.Errorf("StorageBackendReady reason %q on the default backend, want DefaultStore", c.Reason)
	}
	change := func() error {
		_, err := adminClient(t).Resource(framework.HostedResources).Patch(testContext(t), name, types.MergePatchType,
			[]byte(`{"spec":{"storage":{"backend":"elsewhere"}}}`), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	if err := change(); err != nil {
		t.Fatalf("changing the backend of a type with no objects: %v", err)
	}
	if _, err := adminClient(t).Resource(gvr).Namespace(ns).Create(testContext(t), hostedObject(gvr, "Crate", "c1", 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := change()
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "moving a type between backends is not supported") {
		t.Fatalf("changing the backend of a type with an object: want 422 saying moving is not supported, got %v", err)
	}
	if fields := causeFields(err); len(fields) != 1 || fields[0] != "spec.storage.backend" {
		t.Errorf("the rejection names fields %v, want spec.storage.backend", fields)
	}
}
