package backend

import (
	"context"
	"crypto/x509"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/certs"
)

// pki is a CA with a serving certificate (annex's) and an etcd client
// certificate, as PEM.
type pki struct {
	ca, servingCert, servingKey, clientCert, clientKey string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.LoadOrCreateCA(dir, "ca", "test CA")
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.Ensure(dir, "serving", certs.Spec{CommonName: "annex", DNSNames: []string{"annex.annex-system.svc"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Ensure(dir, "client", certs.Spec{CommonName: "annex", Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	read := func(path string) string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	return pki{ca: string(ca.CertPEM), servingCert: read(serving.CertFile), servingKey: read(serving.KeyFile), clientCert: read(client.CertFile), clientKey: read(client.KeyFile)}
}

// files lists the regular files under dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			out = append(out, path)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

// TestEtcdClientKeysArePrivate opens an etcd backend with a client
// certificate: its files are in the runtime directory, in a directory only
// annex may enter, each readable by annex alone, even where an earlier run
// left files with wider modes; closing the backend removes them.
func TestEtcdClientKeysArePrivate(t *testing.T) {
	p := newPKI(t)
	runtimeDir := t.TempDir()
	f := NewFactory(Options{
		RuntimeDir:   runtimeDir,
		SecretPolicy: testPolicy,
		Secrets: secrets(secretIn(secretNamespace, "etcd-client", corev1.SecretTypeTLS,
			map[string]string{"ca.crt": p.ca, corev1.TLSCertKey: p.clientCert, corev1.TLSPrivateKeyKey: p.clientKey})),
	})
	sb := etcdBackend(&v1alpha1.SecretReference{Namespace: secretNamespace, Name: "etcd-client"}, "https://"+closedAddress(t))
	sb.ObjectMeta = metav1.ObjectMeta{Name: "etcd-with-tls"}

	// What an earlier annex, or something else, left there.
	dir := filepath.Join(f.dir(sb.Name), "tls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, corev1.TLSPrivateKeyKey), []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}

	opened, err := f.Open(context.Background(), sb)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(dir, runtimeDir+string(filepath.Separator)) {
		t.Errorf("the client certificates are in %s, want them under the runtime directory %s", dir, runtimeDir)
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("directory %s: %v %v, want mode 0700", dir, info.Mode(), err)
	}
	want := map[string]string{"ca.crt": p.ca, corev1.TLSCertKey: p.clientCert, corev1.TLSPrivateKeyKey: p.clientKey}
	got := files(t, runtimeDir)
	if len(got) != len(want) {
		t.Errorf("files in the runtime directory: %v, want exactly %d", got, len(want))
	}
	for _, path := range got {
		name := filepath.Base(path)
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", path, info.Mode().Perm())
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(path) != dir || string(data) != want[name] {
			t.Errorf("%s does not hold the Secret's %s", path, name)
		}
	}

	opened.Close()
	if left := files(t, runtimeDir); len(left) > 0 {
		t.Errorf("after the backend closed, %v remain", left)
	}
}
