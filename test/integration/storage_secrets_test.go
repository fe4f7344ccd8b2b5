//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"annex.dev/annex/test/integration/framework"
	"annex.dev/annex/test/ports"
)

// TestStorageBackendSecrets checks, through the cluster, which Secrets a
// StorageBackend may make annex read: none outside --storage-secret-namespaces
// (refused with 422 on the field, nothing stored), and never annex's own
// serving certificate, wherever it is (the backend's status says why, and
// annex starts nothing with it).
func TestStorageBackendSecrets(t *testing.T) {
	ctx := testContext(t)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a Secret outside the Secret namespaces is refused with 422", func(t *testing.T) {
		for path, obj := range map[string]*unstructured.Unstructured{
			"spec.postgres.dsnSecretRef.namespace": storageBackend(uniqueName("outside-pg"), "Postgres", nil),
			"spec.etcd.tlsSecretRef.namespace":     storageBackend(uniqueName("outside-etcd"), "Etcd", nil),
		} {
			// annex's own namespace, where its serving key is.
			if err := unstructured.SetNestedField(obj.Object, framework.Namespace, strings.Split(path, ".")...); err != nil {
				t.Fatal(err)
			}
			if err := unstructured.SetNestedField(obj.Object, "annex-serving", strings.Split(strings.TrimSuffix(path, ".namespace")+".name", ".")...); err != nil {
				t.Fatal(err)
			}
			_, err := adminClient(t).Resource(framework.StorageBackends).Create(ctx, obj, metav1.CreateOptions{})
			if !apierrors.IsInvalid(err) {
				t.Fatalf("creating a StorageBackend naming a Secret in %s: %v, want 422", framework.Namespace, err)
			}
			expectCauses(t, causeFields(err), path)
			if !strings.Contains(err.Error(), "--storage-secret-namespaces") || !strings.Contains(err.Error(), framework.SecretNamespace) {
				t.Errorf("the refusal does not say where Secrets may be: %v", err)
			}
			expectAbsent(t, framework.StorageBackends, obj.GetName())
		}
	})

	t.Run("annex's serving certificate is refused wherever it is", func(t *testing.T) {
		certPEM, keyPEM, err := env.AnnexServingPair()
		if err != nil {
			t.Fatal(err)
		}
		// A copy of annex's serving Secret, in the namespace StorageBackends
		// may name.
		secretName := uniqueName("copied-serving")
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: framework.SecretNamespace},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
		}
		if _, err := cs.CoreV1().Secrets(framework.SecretNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cs.CoreV1().Secrets(framework.SecretNamespace).Delete(context.Background(), secretName, metav1.DeleteOptions{})
		})
		addr, err := ports.Closed()
		if err != nil {
			t.Fatal(err)
		}
		name := uniqueName("serving")
		obj := storageBackend(name, "Etcd", nil)
		if err := unstructured.SetNestedStringSlice(obj.Object, []string{"https://" + addr}, "spec", "etcd", "endpoints"); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedMap(obj.Object, map[string]any{"namespace": framework.SecretNamespace, "name": secretName}, "spec", "etcd", "tlsSecretRef"); err != nil {
			t.Fatal(err)
		}
		create(t, adminClient(t), framework.StorageBackends, obj)
		status, message := readyCondition(t, name, "ServingSecretNotAllowed")
		if status != "False" || !strings.Contains(message, framework.SecretNamespace+"/"+secretName) || !strings.Contains(message, "serving certificate") {
			t.Errorf("Ready = %s (%s), want False naming the Secret and saying it is annex's serving certificate", status, message)
		}

		// No HostedResource is put on it here: a type on a backend that
		// cannot open cannot be deleted either (its objects could not be
		// listed), and would stay in the shared cluster. That opening such a
		// backend is refused, and writes nothing, pkg/storage/backend tests.
	})
}
