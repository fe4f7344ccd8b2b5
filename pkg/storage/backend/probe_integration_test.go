//go:build integration

package backend

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/embedded"
	"annex.dev/annex/pkg/storage/postgres/postgrestest"
)

// TestProbeEtcdReachable probes a real etcd that requires client
// certificates, with the certificates from a Secret.
func TestProbeEtcdReachable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	etcd, err := embedded.Start(ctx, embedded.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	p := NewFactory(Options{SecretPolicy: testPolicy, Secrets: secrets(
		secret("etcd-tls", map[string]string{"ca.crt": read(etcd.CAFile), corev1.TLSCertKey: read(etcd.CertFile), corev1.TLSPrivateKeyKey: read(etcd.KeyFile)}),
		secret("ca-only", map[string]string{"ca.crt": read(etcd.CAFile)}),
	)})
	ref := func(name string) *v1alpha1.SecretReference {
		return &v1alpha1.SecretReference{Namespace: secretNamespace, Name: name}
	}

	expect(t, p.Probe(ctx, etcdBackend(ref("etcd-tls"), etcd.ClientURL)), true, ReasonReachable, "answers at 1 of 1 endpoints")

	t.Run("one member of two answers", func(t *testing.T) {
		dead := "http://" + closedAddress(t)
		expect(t, p.Probe(ctx, insecure(etcdBackend(ref("etcd-tls"), etcd.ClientURL, dead))), true, ReasonReachable, "1 of 2", dead)
	})
	t.Run("without a client certificate etcd refuses the client", func(t *testing.T) {
		expect(t, p.Probe(ctx, etcdBackend(ref("ca-only"), etcd.ClientURL)), false, ReasonUnreachable, "certificate required")
	})
}

// TestProbePostgres probes a real PostgreSQL with the DSN from a Secret. The
// test's server has no TLS: the backends allow plaintext.
func TestProbePostgres(t *testing.T) {
	ctx := context.Background()
	pg := postgrestest.Start(t)
	wrong, err := url.Parse(pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	wrong.User = url.UserPassword("nobody", "s3cret-password")
	p := NewFactory(Options{SecretPolicy: testPolicy, Secrets: secrets(
		secret("pg", map[string]string{"dsn": pg.DSN + "\n"}),
		secret("pg-wrong", map[string]string{"dsn": wrong.String()}),
	)})

	expect(t, p.Probe(ctx, insecure(postgresBackend(secretNamespace, "pg", "dsn"))), true, ReasonReachable, "PostgreSQL")

	got := p.Probe(ctx, insecure(postgresBackend(secretNamespace, "pg-wrong", "dsn")))
	expect(t, got, false, ReasonUnreachable, "annex-storage-secrets/pg-wrong")
	if strings.Contains(got.Message, "s3cret-password") || strings.Contains(got.Message, wrong.String()) {
		t.Errorf("the message carries the DSN or its password: %q", got.Message)
	}
}
