package backend

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/secretpolicy"
	"annex.dev/annex/test/ports"
)

func etcdBackend(tlsSecret *v1alpha1.SecretReference, endpoints ...string) *v1alpha1.StorageBackend {
	return &v1alpha1.StorageBackend{
		ObjectMeta: metav1.ObjectMeta{Name: "etcd"},
		Spec: v1alpha1.StorageBackendSpec{
			Type: v1alpha1.StorageBackendEtcd,
			Etcd: &v1alpha1.EtcdStorage{Endpoints: endpoints, TLSSecretRef: tlsSecret},
		},
	}
}

func postgresBackend(namespace, name, key string) *v1alpha1.StorageBackend {
	return &v1alpha1.StorageBackend{
		ObjectMeta: metav1.ObjectMeta{Name: "postgres"},
		Spec: v1alpha1.StorageBackendSpec{
			Type:     v1alpha1.StorageBackendPostgres,
			Postgres: &v1alpha1.PostgresStorage{DSNSecretRef: v1alpha1.SecretKeySelector{Namespace: namespace, Name: name, Key: key}},
		},
	}
}

// insecure allows sb to reach its store without TLS.
func insecure(sb *v1alpha1.StorageBackend) *v1alpha1.StorageBackend {
	if sb.Spec.Etcd != nil {
		sb.Spec.Etcd.Insecure = true
	}
	if sb.Spec.Postgres != nil {
		sb.Spec.Postgres.Insecure = true
	}
	return sb
}

// secretNamespace is where the tests' StorageBackends keep their Secrets,
// the namespace testPolicy allows.
const secretNamespace = secretpolicy.DefaultNamespace

var testPolicy = secretpolicy.Policy{Namespaces: []string{secretNamespace}}

// secrets reads the given Secrets, as the cluster would.
func secrets(objs ...*corev1.Secret) SecretReader {
	return func(_ context.Context, namespace, name string) (*corev1.Secret, error) {
		for _, s := range objs {
			if s.Namespace == namespace && s.Name == name {
				return s.DeepCopy(), nil
			}
		}
		return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
	}
}

func secret(name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: secretNamespace, Name: name}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

// closedAddress is a loopback address on which nothing listens.
func closedAddress(t *testing.T) string {
	t.Helper()
	addr, err := ports.Closed()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func expect(t *testing.T, got Result, ready bool, reason string, messageParts ...string) {
	t.Helper()
	t.Logf("probe: %s: %s", got.Reason, got.Message)
	if got.Ready != ready || got.Reason != reason {
		t.Errorf("probe: ready=%v reason=%q (%s), want ready=%v reason=%q", got.Ready, got.Reason, got.Message, ready, reason)
	}
	for _, part := range messageParts {
		if !strings.Contains(got.Message, part) {
			t.Errorf("probe message %q does not contain %q", got.Message, part)
		}
	}
}

func TestProbeEmbedded(t *testing.T) {
	sb := &v1alpha1.StorageBackend{Spec: v1alpha1.StorageBackendSpec{Type: v1alpha1.StorageBackendEmbedded}}
	expect(t, NewFactory(Options{DefaultStore: StoreEmbeddedEtcd}).Probe(context.Background(), sb), true, ReasonRunning)
	expect(t, NewFactory(Options{DefaultStore: StorePostgres}).Probe(context.Background(), sb), false, ReasonNotRunning, "annex runs on PostgreSQL")
	expect(t, NewFactory(Options{DefaultStore: StoreEtcd}).Probe(context.Background(), sb), false, ReasonNotRunning, "annex runs on an external etcd")
}

func TestProbeSecrets(t *testing.T) {
	ctx := context.Background()
	ref := &v1alpha1.SecretReference{Namespace: secretNamespace, Name: "etcd-tls"}
	t.Run("standalone has no Secrets", func(t *testing.T) {
		expect(t, NewFactory(Options{SecretPolicy: testPolicy}).Probe(ctx, etcdBackend(ref, "https://127.0.0.1:2379")), false, ReasonSecretsNeedACluster, "annex-storage-secrets/etcd-tls")
		expect(t, NewFactory(Options{SecretPolicy: testPolicy}).Probe(ctx, postgresBackend(secretNamespace, "pg", "dsn")), false, ReasonSecretsNeedACluster, "annex-storage-secrets/pg")
	})
	t.Run("missing Secret", func(t *testing.T) {
		p := NewFactory(Options{SecretPolicy: testPolicy, Secrets: secrets()})
		expect(t, p.Probe(ctx, etcdBackend(ref, "https://127.0.0.1:2379")), false, ReasonSecretNotFound, "annex-storage-secrets/etcd-tls")
		expect(t, p.Probe(ctx, postgresBackend(secretNamespace, "pg", "dsn")), false, ReasonSecretNotFound, "annex-storage-secrets/pg")
	})
	t.Run("invalid TLS", func(t *testing.T) {
		p := NewFactory(Options{SecretPolicy: testPolicy, Secrets: secrets(
			secret("empty", nil),
			secret("bad-ca", map[string]string{"ca.crt": "not a certificate"}),
			secret("half-pair", map[string]string{corev1.TLSCertKey: "x"}),
		)})
		for name, want := range map[string]string{"empty": "none of", "bad-ca": "ca.crt", "half-pair": "both"} {
			expect(t, p.Probe(ctx, etcdBackend(&v1alpha1.SecretReference{Namespace: secretNamespace, Name: name}, "https://127.0.0.1:2379")), false, ReasonInvalidTLS, want)
		}
	})
	t.Run("Secret without the DSN key", func(t *testing.T) {
		p := NewFactory(Options{SecretPolicy: testPolicy, Secrets: secrets(secret("pg", map[string]string{"other": "x"}))})
		expect(t, p.Probe(ctx, postgresBackend(secretNamespace, "pg", "dsn")), false, ReasonInvalidSecret, `"dsn"`)
	})
	t.Run("invalid DSN, not quoted", func(t *testing.T) {
		const dsn = "postgres://user:s3cret@127.0.0.1:notaport/db"
		p := NewFactory(Options{SecretPolicy: testPolicy, Secrets: secrets(secret("pg", map[string]string{"dsn": dsn}))})
		got := p.Probe(ctx, postgresBackend(secretNamespace, "pg", "dsn"))
		expect(t, got, false, ReasonInvalidDSN)
		if strings.Contains(got.Message, "s3cret") {
			t.Errorf("the message carries the password: %q", got.Message)
		}
	})
}

func TestProbeEtcdUnreachable(t *testing.T) {
	addr := closedAddress(t)
	got := NewFactory(Options{}).Probe(context.Background(), insecure(etcdBackend(nil, "http://"+addr)))
	expect(t, got, false, ReasonUnreachable, addr, "connection refused")
}

// TestProbeTimeout checks that an endpoint which accepts connections but
// never answers holds the probe no longer than its timeout.
func TestProbeTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, conn := range held {
			conn.Close()
		}
	})
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, conn)
			mu.Unlock()
		}
	}()
	p := NewFactory(Options{ProbeTimeout: time.Second, SecretPolicy: testPolicy, Secrets: secrets(secret("pg", map[string]string{"dsn": "postgres://annex:pw@" + l.Addr().String() + "/annex?sslmode=disable"}))})
	for name, sb := range map[string]*v1alpha1.StorageBackend{
		"etcd":     insecure(etcdBackend(nil, "http://"+l.Addr().String())),
		"postgres": insecure(postgresBackend(secretNamespace, "pg", "dsn")),
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			got := p.Probe(context.Background(), sb)
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("the probe of a silent endpoint took %s with a timeout of 1s", took)
			}
			expect(t, got, false, ReasonUnreachable)
			if strings.Contains(got.Message, ":pw@") {
				t.Errorf("the message carries the DSN: %q", got.Message)
			}
		})
	}
}

// TestPasswordNotShown probes and opens a backend whose password has the
// characters that once escaped redaction: neither the probe's message (the
// StorageBackend's status) nor the error of opening it (a 503 body and the
// log) shows the password.
func TestPasswordNotShown(t *testing.T) {
	const password = `se/cr"et`
	dsn := "postgresql://u:" + password + "@" + closedAddress(t) + "/db"
	f := NewFactory(Options{
		RuntimeDir: t.TempDir(),
		Postgres:   Postgres{ConnectTimeout: time.Second},
		Secrets:    secrets(secret("pg", map[string]string{"dsn": dsn})),
	})
	sb := postgresBackend(secretNamespace, "pg", "dsn")
	probe := f.Probe(context.Background(), sb)
	_, err := f.Open(context.Background(), sb)
	if err == nil {
		t.Fatal("opened a backend with no database")
	}
	for what, msg := range map[string]string{"the probe's message": probe.Message, "the error of opening": err.Error()} {
		t.Logf("%s: %s", what, msg)
		if strings.Contains(msg, password) || strings.Contains(msg, `se/cr\"et`) || strings.Contains(msg, "se%2Fcr") {
			t.Errorf("%s shows the password: %s", what, msg)
		}
	}
}

// TestPlaintextNeedsInsecure checks that a backend that would reach its
// store without TLS is probed and opened only when its spec allows it, that
// the refusal says what to do and never shows the connection string, and
// that the result says how annex reaches the store.
func TestPlaintextNeedsInsecure(t *testing.T) {
	const password = "not-for-status"
	addr := closedAddress(t)
	dsns := map[string]string{
		"disable":     "postgres://annex:" + password + "@" + addr + "/annex?sslmode=disable",
		"none":        "postgres://annex:" + password + "@" + addr + "/annex",
		"verify-full": "postgres://annex:" + password + "@" + addr + "/annex?sslmode=verify-full",
	}
	var objs []*corev1.Secret
	for name, dsn := range dsns {
		objs = append(objs, secret(name, map[string]string{"dsn": dsn}))
	}
	runtimeDir := t.TempDir()
	f := NewFactory(Options{
		RuntimeDir: runtimeDir, ProbeTimeout: time.Second, Postgres: Postgres{ConnectTimeout: time.Second},
		SecretPolicy: testPolicy, Secrets: secrets(objs...),
	})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		sb   *v1alpha1.StorageBackend
		// reason is the probe's; plaintext how it says annex reaches the store.
		reason    string
		plaintext bool
		message   []string
	}{
		{"an http endpoint", etcdBackend(nil, "https://"+addr, "http://"+addr), ReasonPlaintextNotAllowed, true,
			[]string{"http://" + addr + " without TLS", "spec.etcd.insecure: true"}},
		{"an http endpoint, insecure", insecure(etcdBackend(nil, "http://"+addr)), ReasonUnreachable, true, []string{"connection refused"}},
		{"https endpoints", etcdBackend(nil, "https://"+addr), ReasonUnreachable, false, nil},
		{"sslmode=disable", postgresBackend(secretNamespace, "disable", "dsn"), ReasonPlaintextNotAllowed, true,
			[]string{"Secret annex-storage-secrets/disable key dsn lets annex connect without TLS", "spec.postgres.insecure: true"}},
		{"no sslmode", postgresBackend(secretNamespace, "none", "dsn"), ReasonPlaintextNotAllowed, true, []string{"spec.postgres.insecure: true"}},
		{"sslmode=disable, insecure", insecure(postgresBackend(secretNamespace, "disable", "dsn")), ReasonUnreachable, true, []string{"connection refused"}},
		{"sslmode=verify-full", postgresBackend(secretNamespace, "verify-full", "dsn"), ReasonUnreachable, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := f.Probe(ctx, tc.sb)
			expect(t, got, false, tc.reason, tc.message...)
			if got.Connection == nil || got.Connection.Plaintext != tc.plaintext {
				t.Errorf("probe: connection %+v, want plaintext %v", got.Connection, tc.plaintext)
			}
			if strings.Contains(got.Message, password) || (got.Connection != nil && strings.Contains(got.Connection.Message, password)) {
				t.Errorf("the probe shows the password: %q, %+v", got.Message, got.Connection)
			}
			if tc.reason != ReasonPlaintextNotAllowed {
				return
			}
			opened, err := f.Open(ctx, tc.sb)
			if err == nil {
				opened.Close()
				t.Fatal("opened a backend whose spec does not allow plaintext")
			}
			if !strings.Contains(err.Error(), "insecure: true") || strings.Contains(err.Error(), password) {
				t.Errorf("the error of opening it: %v, want it to say insecure: true, without the password", err)
			}
			if left := files(t, runtimeDir); len(left) > 0 {
				t.Errorf("a refused backend wrote %v", left)
			}
		})
	}
}
