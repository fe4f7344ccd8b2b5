package storagebackend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// Store is what annex keeps its own data in: the "default" backend.
type Store string

// Stores annex runs on.
const (
	StoreEmbeddedEtcd Store = "EmbeddedEtcd"
	StoreEtcd         Store = "Etcd"
	StorePostgres     Store = "Postgres"
)

func (s Store) describe() string {
	switch s {
	case StoreEmbeddedEtcd:
		return "its embedded etcd"
	case StoreEtcd:
		return "an external etcd"
	case StorePostgres:
		return "PostgreSQL"
	}
	return "an unknown store"
}

// Reasons of a StorageBackend's Ready condition.
const (
	ReasonReachable           = "Reachable"
	ReasonUnreachable         = "Unreachable"
	ReasonRunning             = "Running"
	ReasonNotRunning          = "NotRunning"
	ReasonSecretsNeedACluster = "SecretsNeedACluster"
	ReasonSecretNotFound      = "SecretNotFound"
	ReasonSecretUnreadable    = "SecretUnreadable"
	ReasonInvalidSecret       = "InvalidSecret"
	ReasonInvalidTLS          = "InvalidTLS"
	ReasonInvalidDSN          = "InvalidDSN"
	ReasonUnknownType         = "UnknownType"
)

// DefaultProbeTimeout bounds one probe, so that a dead endpoint never holds a worker for long.
const DefaultProbeTimeout = 5 * time.Second

// Result is what a probe found.
type Result struct {
	Ready   bool
	Reason  string
	Message string
	// SizeBytes is the database's size as the store reports it, when it answered.
	SizeBytes *int64
}

func notReady(reason, format string, args ...any) Result {
	return Result{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Prober checks whether the store that a StorageBackend describes answers.
type Prober struct {
	// Secrets reads the Secrets of the cluster; nil in standalone mode, where
	// there is no Secret API.
	Secrets client.Reader
	// Store is what annex itself keeps its data in.
	Store Store
	// Timeout bounds each probe; DefaultProbeTimeout when zero.
	Timeout time.Duration
}

func (p *Prober) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultProbeTimeout
}

// Probe checks sb's store. It returns within the prober's timeout (plus the
// time to read a Secret).
func (p *Prober) Probe(ctx context.Context, sb *v1alpha1.StorageBackend) Result {
	switch sb.Spec.Type {
	case v1alpha1.StorageBackendEmbedded:
		if p.Store == StoreEmbeddedEtcd {
			return Result{Ready: true, Reason: ReasonRunning, Message: "annex keeps its data in its embedded etcd, which is running"}
		}
		return notReady(ReasonNotRunning, "annex runs on %s; an Embedded backend is only served by an annex that keeps its data in its embedded etcd", p.Store.describe())
	case v1alpha1.StorageBackendEtcd:
		if sb.Spec.Etcd == nil {
			return notReady(ReasonUnknownType, "spec.etcd is missing")
		}
		return p.probeEtcd(ctx, sb.Spec.Etcd)
	case v1alpha1.StorageBackendPostgres:
		if sb.Spec.Postgres == nil {
			return notReady(ReasonUnknownType, "spec.postgres is missing")
		}
		return p.probePostgres(ctx, &sb.Spec.Postgres.DSNSecretRef)
	}
	return notReady(ReasonUnknownType, "annex does not know the backend type %q", sb.Spec.Type)
}

// secret reads a Secret of the cluster, or says why it cannot.
func (p *Prober) secret(ctx context.Context, namespace, name string) (*corev1.Secret, *Result) {
	if p.Secrets == nil {
		r := notReady(ReasonSecretsNeedACluster, "the backend's credentials are in Secret %s/%s, and standalone annex has no cluster to read Secrets from; "+
			"run annex aggregated into a cluster to use this backend", namespace, name)
		return nil, &r
	}
	secret := &corev1.Secret{}
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	if err := p.Secrets.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret); err != nil {
		var r Result
		if apierrors.IsNotFound(err) {
			r = notReady(ReasonSecretNotFound, "Secret %s/%s does not exist in the cluster", namespace, name)
		} else {
			r = notReady(ReasonSecretUnreadable, "cannot read Secret %s/%s from the cluster: %v", namespace, name, err)
		}
		return nil, &r
	}
	return secret, nil
}

func (p *Prober) probeEtcd(ctx context.Context, spec *v1alpha1.EtcdStorage) Result {
	var tlsConfig *tls.Config
	if ref := spec.TLSSecretRef; ref != nil {
		secret, r := p.secret(ctx, ref.Namespace, ref.Name)
		if r != nil {
			return *r
		}
		var err error
		if tlsConfig, err = etcdTLS(secret.Data); err != nil {
			return notReady(ReasonInvalidTLS, "Secret %s/%s: %v", ref.Namespace, ref.Name, err)
		}
	}
	for _, ep := range spec.Endpoints {
		if strings.HasPrefix(ep, "https://") && tlsConfig == nil {
			// No Secret: verify the server against the system's roots.
			tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}

	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   spec.Endpoints,
		TLS:         tlsConfig,
		DialTimeout: p.timeout(),
		Context:     ctx,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return notReady(ReasonUnreachable, "cannot build an etcd client: %v", err)
	}
	defer cli.Close()

	// Each member is asked on its own connection, so that the message says
	// which ones answer; then one linearizable read proves that a quorum does.
	type answer struct {
		version string
		dbSize  int64
		err     error
	}
	answers := make([]answer, len(spec.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range spec.Endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A refused or unroutable TCP connection is reported as such
			// rather than as the gRPC client's deadline.
			if err := dial(ctx, ep, tlsConfig); err != nil {
				answers[i].err = err
				return
			}
			st, err := cli.Status(ctx, ep)
			if err != nil {
				answers[i].err = err
				return
			}
			answers[i].version, answers[i].dbSize = st.Version, st.DbSize
		}()
	}
	wg.Wait()
	var failures []string
	version := ""
	var size int64
	for i, a := range answers {
		if a.err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", spec.Endpoints[i], a.err))
			continue
		}
		version = a.version
		size = max(size, a.dbSize)
	}
	answered := len(spec.Endpoints) - len(failures)
	if answered == 0 {
		return notReady(ReasonUnreachable, "no etcd endpoint answered (the probe waits %s): %s", p.timeout(), strings.Join(failures, "; "))
	}
	// The key does not matter; a client limited by etcd's RBAC gets
	// "permission denied", which still proves a quorum answered.
	if _, err := cli.Get(ctx, "health"); err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		return notReady(ReasonUnreachable, "%d of %d etcd endpoints answer, but a read failed (has the cluster lost its quorum?): %v", answered, len(spec.Endpoints), err)
	}
	msg := fmt.Sprintf("etcd %s answers at %d of %d endpoints", version, answered, len(spec.Endpoints))
	if len(failures) > 0 {
		msg += "; not answering: " + strings.Join(failures, "; ")
	}
	return Result{Ready: true, Reason: ReasonReachable, Message: msg, SizeBytes: &size}
}

// dial opens and closes a connection to an etcd endpoint, so that a refused
// connection or a failed TLS handshake is reported as such rather than as
// the gRPC client's deadline.
func dial(ctx context.Context, endpoint string, tlsConfig *tls.Config) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return err
	}
	if u.Scheme != "https" || tlsConfig == nil {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	cfg := tlsConfig.Clone()
	cfg.ServerName = u.Hostname()
	cfg.NextProtos = []string{"h2"}
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	defer conn.Close()
	// With TLS 1.3 a server that refuses the client's certificate says so
	// only after the handshake: wait briefly for that alert. A server that
	// accepted stays silent until the client speaks.
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			return nil
		}
		return fmt.Errorf("TLS: %w", err)
	}
	return nil
}

// etcdTLS builds a client TLS configuration from a Secret with ca.crt and,
// for client certificate authentication, tls.crt and tls.key.
func etcdTLS(data map[string][]byte) (*tls.Config, error) {
	ca, cert, key := data["ca.crt"], data[corev1.TLSCertKey], data[corev1.TLSPrivateKeyKey]
	if len(ca) == 0 && len(cert) == 0 && len(key) == 0 {
		return nil, errors.New("holds none of ca.crt, tls.crt and tls.key")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, errors.New("ca.crt holds no PEM certificate")
		}
		cfg.RootCAs = pool
	}
	switch {
	case len(cert) > 0 && len(key) > 0:
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("tls.crt and tls.key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case len(cert) > 0 || len(key) > 0:
		return nil, errors.New("holds only one of tls.crt and tls.key; a client certificate needs both")
	}
	return cfg, nil
}

func (p *Prober) probePostgres(ctx context.Context, ref *v1alpha1.SecretKeySelector) Result {
	secret, r := p.secret(ctx, ref.Namespace, ref.Name)
	if r != nil {
		return *r
	}
	dsn := strings.TrimSpace(string(secret.Data[ref.Key]))
	if dsn == "" {
		return notReady(ReasonInvalidSecret, "Secret %s/%s has no key %q with a connection string", ref.Namespace, ref.Name, ref.Key)
	}
	return probePostgresDSN(ctx, dsn, p.timeout(), fmt.Sprintf("the connection string in Secret %s/%s key %s", ref.Namespace, ref.Name, ref.Key))
}

// probePostgresDSN connects to dsn and runs SELECT 1. No message carries the
// DSN or its password: source names where the DSN came from.
func probePostgresDSN(ctx context.Context, dsn string, timeout time.Duration, source string) Result {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// The parse error may quote the DSN.
		return notReady(ReasonInvalidDSN, "%s is not a valid PostgreSQL connection string", source)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	redact := func(err error) string {
		msg := err.Error()
		msg = strings.ReplaceAll(msg, dsn, "<dsn>")
		if cfg.Password != "" {
			msg = strings.ReplaceAll(msg, cfg.Password, "<password>")
		}
		return msg
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return notReady(ReasonUnreachable, "cannot connect to PostgreSQL with %s within %s: %s", source, timeout, redact(err))
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	var size int64
	if err := conn.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&size); err != nil {
		return notReady(ReasonUnreachable, "PostgreSQL accepted the connection but a query of the database's size failed: %s", redact(err))
	}
	return Result{Ready: true, Reason: ReasonReachable, Message: fmt.Sprintf("PostgreSQL %s answers", conn.PgConn().ParameterStatus("server_version")),
		SizeBytes: &size}
}
