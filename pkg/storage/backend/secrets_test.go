package backend

import (
	"context"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/secretpolicy"
)

// countingSecrets is a SecretReader of the given Secrets that counts the
// reads of each.
type countingSecrets struct {
	read  SecretReader
	mu    sync.Mutex
	reads map[string]int
}

func newCountingSecrets(objs ...*corev1.Secret) *countingSecrets {
	return &countingSecrets{read: secrets(objs...), reads: map[string]int{}}
}

func (c *countingSecrets) Read(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	c.mu.Lock()
	c.reads[namespace+"/"+name]++
	c.mu.Unlock()
	return c.read(ctx, namespace, name)
}

func (c *countingSecrets) count(namespace, name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads[namespace+"/"+name]
}

func secretIn(namespace, name string, typ corev1.SecretType, data map[string]string) *corev1.Secret {
	s := secret(name, data)
	s.Namespace, s.Type = namespace, typ
	return s
}

// TestRefusedSecretsAreNeverUsed checks that a StorageBackend naming a
// Secret outside the allowed namespaces, or annex's serving Secret, is
// reported with the reason and never opened; and that annex does not even
// read a Secret that its reference already rules out.
func TestRefusedSecretsAreNeverUsed(t *testing.T) {
	p := newPKI(t)
	tlsData := func(cert, key string) map[string]string {
		return map[string]string{"ca.crt": p.ca, corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}
	}
	reader := newCountingSecrets(
		// What a StorageBackend may name.
		secretIn(secretNamespace, "etcd-client", corev1.SecretTypeTLS, tlsData(p.clientCert, p.clientKey)),
		// annex's own serving Secret, where the chart keeps it.
		secretIn("annex-system", "annex-tls", corev1.SecretTypeTLS, tlsData(p.servingCert, p.servingKey)),
		// The same, in a namespace StorageBackends may name: by its name
		// (--serving-cert-secret), and copied under another name.
		secretIn(secretNamespace, "annex-tls", corev1.SecretTypeTLS, tlsData(p.servingCert, p.servingKey)),
		secretIn(secretNamespace, "copied", corev1.SecretTypeTLS, tlsData(p.servingCert, p.servingKey)),
		secretIn("kube-system", "pg", corev1.SecretTypeOpaque, map[string]string{"dsn": "postgres://u:p@127.0.0.1:1/db"}),
	)
	runtimeDir := t.TempDir()
	f := NewFactory(Options{
		RuntimeDir: runtimeDir,
		Secrets:    reader.Read,
		SecretPolicy: secretpolicy.Policy{
			Namespaces:          []string{secretNamespace},
			Serving:             types.NamespacedName{Namespace: secretNamespace, Name: "annex-tls"},
			ServingCertificates: func() [][]byte { return [][]byte{[]byte(p.servingCert)} },
		},
	})
	ctx := context.Background()
	endpoint := "https://" + closedAddress(t)
	etcd := func(namespace, name string) *v1alpha1.StorageBackend {
		return etcdBackend(&v1alpha1.SecretReference{Namespace: namespace, Name: name}, endpoint)
	}
	for _, tc := range []struct {
		name   string
		sb     *v1alpha1.StorageBackend
		reason string
		// read says whether annex reads the Secret before refusing it: only
		// its content can tell.
		read    bool
		message string
	}{
		{"annex's serving Secret in annex's namespace", etcd("annex-system", "annex-tls"), secretpolicy.ReasonNamespaceNotAllowed, false, "only in the namespace(s) " + secretNamespace},
		{"a DSN in kube-system", postgresBackend("kube-system", "pg", "dsn"), secretpolicy.ReasonNamespaceNotAllowed, false, "--storage-secret-namespaces"},
		{"the serving Secret by its name", etcd(secretNamespace, "annex-tls"), secretpolicy.ReasonServingSecret, false, "--serving-cert-secret"},
		{"the serving Secret by its name, as a DSN", postgresBackend(secretNamespace, "annex-tls", "tls.key"), secretpolicy.ReasonServingSecret, false, "--serving-cert-secret"},
		{"a copy of the serving Secret", etcd(secretNamespace, "copied"), secretpolicy.ReasonServingSecret, true, "holds annex's own serving certificate (type kubernetes.io/tls)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ref string
			if tc.sb.Spec.Etcd != nil {
				ref = tc.sb.Spec.Etcd.TLSSecretRef.Namespace + "/" + tc.sb.Spec.Etcd.TLSSecretRef.Name
			} else {
				ref = tc.sb.Spec.Postgres.DSNSecretRef.Namespace + "/" + tc.sb.Spec.Postgres.DSNSecretRef.Name
			}
			namespace, name, _ := strings.Cut(ref, "/")
			before := reader.count(namespace, name)

			expect(t, f.Probe(ctx, tc.sb), false, tc.reason, "Secret "+ref, tc.message)
			opened, err := f.Open(ctx, tc.sb)
			if err == nil {
				opened.Close()
				t.Fatal("opened a backend whose Secret is refused")
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("the error of opening it does not say %q: %v", tc.message, err)
			}
			reads := reader.count(namespace, name) - before
			if !tc.read && reads != 0 {
				t.Errorf("annex read the refused Secret %s %d times, want never", ref, reads)
			}
			if tc.read && reads != 2 {
				t.Errorf("annex read %s %d times, want once for the probe and once to open", ref, reads)
			}
			if left := files(t, runtimeDir); len(left) > 0 {
				t.Errorf("a refused backend wrote %v", left)
			}
		})
	}

	t.Run("an etcd client certificate of the allowed namespace", func(t *testing.T) {
		sb := etcd(secretNamespace, "etcd-client")
		if got := f.Probe(ctx, sb); got.Reason == secretpolicy.ReasonNamespaceNotAllowed || got.Reason == secretpolicy.ReasonServingSecret {
			t.Errorf("probe refused the backend: %s: %s", got.Reason, got.Message)
		}
		opened, err := f.Open(ctx, sb)
		if err != nil {
			t.Fatalf("opening: %v", err)
		}
		opened.Close()
	})
}
