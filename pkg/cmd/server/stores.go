package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/storage/backend"
	"annex.dev/annex/pkg/storage/embedded"
	"annex.dev/annex/pkg/storage/inprocess"
	"annex.dev/annex/pkg/storage/postgres"
)

// stores are annex's own stores: the embedded etcd, or the kine that serves
// a PostgreSQL database; none for an external etcd.
type stores struct {
	closers []func()
	failed  chan error
}

func (s *stores) Failed() <-chan error { return s.failed }

// Close stops the stores, the last started first.
func (s *stores) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// startStores prepares the runtime directory, then starts annex's own
// store, if it runs one, and points the etcd options at it: its address is
// known only once it runs.
func (o *Options) startStores(ctx context.Context) (_ *stores, err error) {
	s := &stores{failed: make(chan error, 1)}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// First in, so last out: the backends, closed before the stores, and
	// the stores may still use it.
	if o.runtimeDir, err = prepareRuntimeDir(o.RuntimeDir, func(remove func()) { s.closers = append(s.closers, remove) }); err != nil {
		return nil, err
	}
	transport := &o.RecommendedOptions.Etcd.StorageConfig.Transport
	switch o.store {
	case backend.StoreEmbeddedEtcd:
		etcd, err := embedded.Start(ctx, embedded.Options{
			DataDir:           filepath.Join(o.DataDir, "etcd"),
			QuotaBackendBytes: o.EmbeddedEtcdQuotaBytes,
			LogLevel:          o.EmbeddedEtcdLogLevel,
		})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, etcd.Close)
		go func() {
			if err, ok := <-etcd.Err(); ok && err != nil {
				s.failed <- fmt.Errorf("embedded etcd failed: %w", err)
			}
		}()
		transport.ServerList = []string{etcd.ClientURL}
		// The hosted types kept lean reach it in-process.
		s.closers = append(s.closers, inprocess.Register(etcd.ClientURL, etcd.NewClient))
		transport.TrustedCAFile, transport.CertFile, transport.KeyFile = etcd.CAFile, etcd.CertFile, etcd.KeyFile
	case backend.StorePostgres:
		dsn, err := os.ReadFile(o.PostgresDSNFile)
		if err != nil {
			return nil, fmt.Errorf("reading --postgres-dsn-file: %w", err)
		}
		pg, err := startPostgres(ctx, o.postgres(), strings.TrimSpace(string(dsn)), filepath.Join(o.runtimeDir, "kine"))
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, pg.Close)
		transport.ServerList = []string{pg.Endpoint}
	}
	return s, nil
}

// prepareRuntimeDir returns the runtime directory: dir, emptied of what an
// earlier annex left in it, or when dir is empty a new one under the
// system's temporary directory, which onClose is given to remove. Only annex
// may enter it.
func prepareRuntimeDir(dir string, onClose func(remove func())) (string, error) {
	if dir == "" {
		made, err := os.MkdirTemp("", "annex-")
		if err != nil {
			return "", fmt.Errorf("making the runtime directory: %w", err)
		}
		onClose(func() { _ = os.RemoveAll(made) })
		return made, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("--runtime-dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("--runtime-dir: %w", err)
	}
	// The keys and sockets of an earlier run: annex writes them again as
	// it opens each backend.
	for _, name := range []string{"backends", "kine"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("--runtime-dir: %w", err)
		}
	}
	return dir, nil
}

// startPostgres starts annex's own store on PostgreSQL, trying again with
// backoff while the database is unavailable, until ctx is done: annex has
// nothing to serve without it, and waits rather than exits.
func startPostgres(ctx context.Context, pgOptions backend.Postgres, dsn, socketDir string) (*postgres.Server, error) {
	logger := klog.FromContext(ctx)
	delay := time.Second
	for {
		pg, err := pgOptions.Start(ctx, "", dsn, socketDir)
		if err == nil || !errors.Is(err, postgres.ErrUnavailable) || ctx.Err() != nil {
			return pg, err
		}
		logger.Error(err, "Cannot start annex's store on PostgreSQL; trying again", "retryAfter", delay)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}
