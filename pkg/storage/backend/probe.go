package backend

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

	"annex.dev/annex/pkg/storage/postgres"
)

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
	// ReasonPlaintextNotAllowed: the backend would reach its store without
	// TLS, and its spec does not allow it (insecure).
	ReasonPlaintextNotAllowed = "PlaintextNotAllowed"
)

// Result is what a probe found: whether the store answers, as the
// reason and message of a Ready condition, and its statistics.
type Result struct {
	Ready   bool
	Reason  string
	Message string
	// SizeBytes is the database's size as the store reports it, when it answered.
	SizeBytes *int64
	// Connection is how annex reaches the store; nil when the probe did not
	// get as far as the store's connection settings (a Secret it could not
	// read, say).
	Connection *Connection
}

// Connection is how annex reaches a store.
type Connection struct {
	// Plaintext is true when annex may reach the store without TLS.
	Plaintext bool
	// Message says which connections go without TLS, or that none does.
	Message string
}

func notReady(reason, format string, args ...any) Result {
	return Result{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// failed is notReady, for a function that also returns what succeeded.
func failed(reason, format string, args ...any) *Result {
	r := notReady(reason, format, args...)
	return &r
}

// probeEtcd asks each endpoint of an etcd cluster for its status, then
// reads through the cluster.
func probeEtcd(ctx context.Context, spec *etcdSpec, timeout time.Duration) Result {
	tlsConfig := spec.tls
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   spec.endpoints,
		TLS:         tlsConfig,
		DialTimeout: timeout,
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
	answers := make([]answer, len(spec.endpoints))
	var wg sync.WaitGroup
	for i, ep := range spec.endpoints {
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
			failures = append(failures, fmt.Sprintf("%s: %v", spec.endpoints[i], a.err))
			continue
		}
		version = a.version
		size = max(size, a.dbSize)
	}
	answered := len(spec.endpoints) - len(failures)
	if answered == 0 {
		return notReady(ReasonUnreachable, "no etcd endpoint answered (the probe waits %s): %s", timeout, strings.Join(failures, "; "))
	}
	// The key does not matter; a client limited by etcd's RBAC gets
	// "permission denied", which still proves a quorum answered.
	if _, err := cli.Get(ctx, "health"); err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		return notReady(ReasonUnreachable, "%d of %d etcd endpoints answer, but a read failed (has the cluster lost its quorum?): %v", answered, len(spec.endpoints), err)
	}
	msg := fmt.Sprintf("etcd %s answers at %d of %d endpoints", version, answered, len(spec.endpoints))
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
	redact := func(err error) string { return postgres.Redact(err.Error(), dsn) }
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
