// Package postgres keeps annex's data in PostgreSQL. It runs kine in the
// annex process: kine speaks the etcd API on a unix socket in annex's data
// directory and stores in PostgreSQL, so the upstream storage stack of
// k8s.io/apiserver (watch cache, resourceVersions, compaction) works
// unchanged on top of it.
//
// Only kine's PostgreSQL driver is linked, not its endpoint package, which
// would bring every database driver kine supports into annex.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/k3s-io/kine/pkg/drivers"
	"github.com/k3s-io/kine/pkg/drivers/pgsql"
	"github.com/k3s-io/kine/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"k8s.io/klog/v2"
)

// Options configure the PostgreSQL storage.
type Options struct {
	// DSN is the connection string, postgres://user:password@host:port/database?sslmode=...
	DSN string
	// SocketDir holds the unix socket on which kine serves the etcd API.
	SocketDir string
	// CompactInterval is how often kine removes old revisions from the
	// database; without it the table grows without bound.
	CompactInterval time.Duration
	// NotifyInterval is how often kine sends watch progress notifications,
	// from which the watch cache's bookmarks come.
	NotifyInterval time.Duration
	// MetricsRegisterer receives kine's SQL and compaction metrics and the
	// database's size and compaction lag (metrics.go); nil for none.
	MetricsRegisterer prometheus.Registerer
	// Backend names the StorageBackend served, "" for annex's command-line
	// store: the storage_backend label of the database's metrics. Only the
	// command-line store also reports kine's connection pool (kine names
	// those metrics without a label).
	Backend string
}

// kine polls the database for rows written by other replicas once a second
// (a constant of kine's): that is the floor of the watch latency between two
// annex replicas on one database. Writes through this process wake its
// watchers at once.

// emulatedEtcdVersion is the etcd version kine reports (kine's own default):
// one whose watch progress requests the apiserver trusts.
const emulatedEtcdVersion = "3.6.11"

// Server is a running kine in front of PostgreSQL.
type Server struct {
	// Endpoint is the etcd client URL of kine (unix://...).
	Endpoint string

	grpc    *grpc.Server
	cancel  context.CancelFunc
	wg      *sync.WaitGroup
	stopped chan struct{}
	// closeMetrics unregisters the statistics collector and closes its
	// connection.
	closeMetrics func()
}

// Start connects to PostgreSQL, creates kine's table if it is missing and
// serves the etcd API on a unix socket. It returns once kine serves.
func Start(ctx context.Context, opts Options) (*Server, error) {
	logger := klog.FromContext(ctx).WithName("postgres")
	scheme, dataSource, ok := strings.Cut(opts.DSN, "://")
	if !ok || (scheme != "postgres" && scheme != "postgresql") {
		return nil, errors.New("the PostgreSQL connection string must start with postgres:// or postgresql://")
	}
	if err := os.MkdirAll(opts.SocketDir, 0o700); err != nil {
		return nil, err
	}
	socket := filepath.Join(opts.SocketDir, "kine.sock")
	// A socket left by a process that died is in the way; nothing else can be
	// listening on it, since the directory is annex's own.
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}

	// kine's backend lives as long as the server, not as long as the
	// start-up context.
	bctx, cancel := context.WithCancel(context.Background())
	wg := &sync.WaitGroup{}
	start := time.Now()
	poolMetrics := opts.MetricsRegisterer
	if opts.Backend != "" {
		poolMetrics = nil
	}
	_, backend, err := pgsql.New(bctx, wg, &drivers.Config{
		Scheme:            scheme,
		DataSourceName:    dataSource,
		CompactInterval:   opts.CompactInterval,
		MetricsRegisterer: poolMetrics,
		// kine's own defaults for the rest.
		CompactTimeout:   5 * time.Second,
		CompactMinRetain: 1000,
		CompactBatchSize: 1000,
		PollBatchSize:    500,
	})
	if err != nil {
		cancel()
		// The error may carry the connection string; say only where it failed.
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", redact(err, opts.DSN))
	}
	if err := backend.Start(bctx); err != nil {
		cancel()
		return nil, fmt.Errorf("starting kine on PostgreSQL: %w", redact(err, opts.DSN))
	}

	closeMetrics := func() {}
	if opts.MetricsRegisterer != nil {
		stats, err := newStatsCollector(opts.DSN, logger)
		if err != nil {
			cancel()
			return nil, err
		}
		unregister, err := registerMetrics(opts.MetricsRegisterer, opts.Backend, stats)
		if err != nil {
			stats.db.Close()
			cancel()
			return nil, fmt.Errorf("registering the PostgreSQL metrics: %w", err)
		}
		closeMetrics = func() { unregister(); stats.db.Close() }
	}

	listener, err := net.Listen("unix", socket)
	if err != nil {
		closeMetrics()
		cancel()
		return nil, fmt.Errorf("listening on %s: %w", socket, err)
	}
	grpcServer := grpc.NewServer(
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: embed.DefaultGRPCKeepAliveMinTime}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: embed.DefaultGRPCKeepAliveInterval, Timeout: embed.DefaultGRPCKeepAliveTimeout}),
		grpc.MaxConcurrentStreams(embed.DefaultMaxConcurrentStreams),
		grpc.MaxRecvMsgSize(int(embed.DefaultMaxRequestBytes)+512*1024),
		grpc.MaxSendMsgSize(math.MaxInt32),
	)
	// kine answers watch progress requests; the apiserver uses them (for
	// consistent reads from the watch cache and for watch-list) only when
	// the etcd version in a Status answer says so. Its checker is global to
	// the process: a kine with no version would turn them off for every
	// store, etcd included.
	server.New(backend, "unix", opts.NotifyInterval, emulatedEtcdVersion).Register(grpcServer)

	s := &Server{Endpoint: "unix://" + socket, grpc: grpcServer, cancel: cancel, wg: wg, stopped: make(chan struct{}), closeMetrics: closeMetrics}
	go func() {
		defer close(s.stopped)
		if err := grpcServer.Serve(listener); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			logger.Error(err, "kine stopped serving")
		}
	}()
	logger.Info("PostgreSQL storage is ready", "socket", socket, "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}

// Close stops serving, waits up to 10 s for requests in flight, and closes
// the database connections.
func (s *Server) Close() {
	timer := time.AfterFunc(10*time.Second, s.grpc.Stop)
	s.grpc.GracefulStop()
	timer.Stop()
	<-s.stopped
	s.closeMetrics()
	s.cancel()
	s.wg.Wait()
}

// redact removes the connection string, which may hold a password, from err.
func redact(err error, dsn string) error {
	if err == nil || !strings.Contains(err.Error(), dsn) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), dsn, "<connection string>"))
}
