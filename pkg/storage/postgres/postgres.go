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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/k3s-io/kine/pkg/drivers"
	"github.com/k3s-io/kine/pkg/drivers/generic"
	"github.com/k3s-io/kine/pkg/drivers/pgsql"
	"github.com/k3s-io/kine/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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
	// NotifyInterval is how often a watch that asks for them gets a
	// progress notification (watch.go), from which the watch cache's
	// bookmarks come.
	NotifyInterval time.Duration
	// MetricsRegisterer receives kine's SQL and compaction metrics and the
	// database's size and compaction lag (metrics.go); nil for none.
	MetricsRegisterer prometheus.Registerer
	// Backend names the StorageBackend served, "" for annex's command-line
	// store: the storage_backend label of the database's metrics. Only the
	// command-line store also reports kine's connection pool (kine names
	// those metrics without a label).
	Backend string
	// ConnectTimeout bounds Start's own first connection to the database,
	// made before kine is started; DefaultConnectTimeout when zero.
	ConnectTimeout time.Duration
	// StartTimeout bounds kine's start once that connection succeeded;
	// DefaultStartTimeout when zero, and never more than MaxStartTimeout.
	StartTimeout time.Duration
	// MaxConnections bounds the connections kine keeps open to the
	// database; DefaultMaxConnections when zero. A request that finds them
	// all busy waits for one.
	MaxConnections int
	// GapFillInterval is how often annex fills the revisions that failed
	// writes left unused (gaps.go); DefaultGapFillInterval when zero, never
	// when negative.
	GapFillInterval time.Duration
}

// DefaultGapFillInterval is how often annex fills unused revisions: a gap
// is filled one to two intervals after the write that left it.
const DefaultGapFillInterval = time.Second

// DefaultMaxConnections bounds kine's connections to a database. kine's
// own default is no bound: a burst of writes opened a connection each, up
// to PostgreSQL's max_connections (100 by default), and then the database
// refused every new connection, annex's other replicas' and other
// clients' of the same server alike. Two replicas at this bound stay
// within that default with room for others; kine keeps up to 20 idle.
const DefaultMaxConnections = 32

// ErrUnavailable marks a failure to start that may pass by itself: the
// database did not answer, refused the connection, or kine could not start
// on it in time. Trying again later may succeed; a bad connection string
// will not.
var ErrUnavailable = errors.New("PostgreSQL is unavailable")

// DefaultConnectTimeout is how long Start waits for the database to accept a
// connection before it says the database is unreachable.
const DefaultConnectTimeout = 10 * time.Second

// DefaultStartTimeout bounds kine's start (creating its table, migrating).
const DefaultStartTimeout = time.Minute

// MaxStartTimeout keeps kine's start clear of a crash of kine v0.16: it
// tries to connect 300 times, a second apart, and when every attempt failed
// goes on with a nil *sql.DB and dereferences it, which takes the whole
// process down. Start cancels kine's context before that (kine then returns
// the context's error), and connects once itself before starting kine, so
// that a database that is down, or refuses annex's credentials, is reported
// at once with its reason.
const MaxStartTimeout = 4 * time.Minute

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
// serves the etcd API on a unix socket. It returns once kine serves. No
// error it returns carries the connection string or its password.
func Start(ctx context.Context, opts Options) (*Server, error) {
	s, err := start(ctx, opts)
	return s, redact(err, opts.DSN)
}

func start(ctx context.Context, opts Options) (*Server, error) {
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

	connectTimeout := opts.ConnectTimeout
	if connectTimeout <= 0 {
		connectTimeout = DefaultConnectTimeout
	}
	startTimeout := opts.StartTimeout
	if startTimeout <= 0 {
		startTimeout = DefaultStartTimeout
	}
	startTimeout = min(startTimeout, MaxStartTimeout)
	start := time.Now()
	if err := checkReachable(ctx, opts.DSN, connectTimeout); err != nil {
		return nil, err
	}

	// kine's backend lives as long as the server, not as long as the
	// start-up context; but its start is cut short when that context ends
	// or when it takes longer than startTimeout (see MaxStartTimeout).
	bctx, cancel := context.WithCancel(context.Background())
	wg := &sync.WaitGroup{}
	stopGuard := context.AfterFunc(ctx, cancel)
	guard := time.AfterFunc(startTimeout, cancel)
	backend, err := startKine(bctx, wg, opts, scheme, dataSource)
	timerStopped, ctxStopped := guard.Stop(), stopGuard()
	if err == nil && !(timerStopped && ctxStopped) {
		err = fmt.Errorf("kine did not start on PostgreSQL within %s", startTimeout)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if interval := opts.GapFillInterval; interval >= 0 {
		filler, err := newGapFiller(opts.DSN, logger)
		if err != nil {
			cancel()
			return nil, err
		}
		if interval == 0 {
			interval = DefaultGapFillInterval
		}
		// It stops with kine's backend (cancel), and Close waits for it.
		filler.run(bctx, wg, interval)
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

	progressDB, err := openOwnConnection(opts.DSN, watchProgressName)
	if err != nil {
		closeMetrics()
		cancel()
		return nil, err
	}
	lists, err := newPagedLists(backend, opts.DSN)
	if err != nil {
		progressDB.Close()
		closeMetrics()
		cancel()
		return nil, err
	}
	listener, err := net.Listen("unix", socket)
	if err != nil {
		lists.db.Close()
		progressDB.Close()
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
	served := newAvailability(databaseRevisions{lostDeletes{lists}}, opts.DSN, logger)
	bridge := server.New(served, "unix", opts.NotifyInterval, emulatedEtcdVersion)
	etcdserverpb.RegisterKVServer(grpcServer, bridge)
	etcdserverpb.RegisterLeaseServer(grpcServer, bridge)
	etcdserverpb.RegisterClusterServer(grpcServer, bridge)
	etcdserverpb.RegisterMaintenanceServer(grpcServer, bridge)
	// Watches are annex's own (watch.go): kine's progress notifications
	// could overtake events.
	etcdserverpb.RegisterWatchServer(grpcServer, &watchServer{
		backend:        served,
		notifyInterval: opts.NotifyInterval,
		lastWrite:      lastWriteReader{progressDB}.lastWrite,
		logger:         logger.WithName("watch"),
	})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(grpcServer, hs)
	closeAll := func() { closeMetrics(); progressDB.Close(); lists.db.Close() }

	s := &Server{Endpoint: "unix://" + socket, grpc: grpcServer, cancel: cancel, wg: wg, stopped: make(chan struct{}), closeMetrics: closeAll}
	go func() {
		defer close(s.stopped)
		if err := grpcServer.Serve(listener); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			logger.Error(err, "kine stopped serving")
		}
	}()
	logger.Info("PostgreSQL storage is ready", "socket", socket, "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}

// maxConnections is n, or DefaultMaxConnections when n is zero.
func maxConnections(n int) int {
	if n <= 0 {
		return DefaultMaxConnections
	}
	return n
}

// startKine creates kine's PostgreSQL backend and starts it.
func startKine(ctx context.Context, wg *sync.WaitGroup, opts Options, scheme, dataSource string) (server.Backend, error) {
	var poolMetrics prometheus.Registerer
	if opts.Backend == "" && opts.MetricsRegisterer != nil {
		poolMetrics = tolerantRegisterer{opts.MetricsRegisterer}
	}
	_, backend, err := pgsql.New(ctx, wg, &drivers.Config{
		Scheme:               scheme,
		DataSourceName:       dataSource,
		CompactInterval:      opts.CompactInterval,
		MetricsRegisterer:    poolMetrics,
		ConnectionPoolConfig: generic.ConnectionPoolConfig{MaxOpen: maxConnections(opts.MaxConnections)},
		// kine's own defaults for the rest.
		CompactTimeout:   5 * time.Second,
		CompactMinRetain: 1000,
		CompactBatchSize: 1000,
		PollBatchSize:    500,
	})
	if err != nil {
		// The error may carry the connection string; say only where it failed.
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", redact(err, opts.DSN))
	}
	if err := backend.Start(ctx); err != nil {
		return nil, fmt.Errorf("starting kine on PostgreSQL: %w", redact(err, opts.DSN))
	}
	return backend, nil
}

// databaseRevisions makes kine answer with the database's current
// revision, as etcd answers with its store's, where kine v0.16 answers with
// a revision of its own: a read of the latest revision that finds nothing,
// and the revision of its watch progress notifications. kine's own follows
// its poll of the database only while it equals what the poll has reached:
// once this replica wrote, or another wrote while this one's kine started,
// it stays where it is until this replica writes again, and it lags the
// other replica's writes for as long. The apiserver reads the current
// revision (a get of the type's key prefix, which is no object) before a
// consistent list from its cache, and waits until the cache has reached it;
// a cache of a type nobody writes reaches it only through a progress
// notification. With kine's revision, a list on one replica missed writes
// another replica had acknowledged before the list started, and a replica
// restarted beside a busy one never became ready. A read that finds
// something already carries the database's revision.
type databaseRevisions struct{ server.Backend }

func (b databaseRevisions) Get(ctx context.Context, key string, revision int64, keysOnly bool) (int64, *server.KeyValue, error) {
	rev, kv, err := b.Backend.Get(ctx, key, revision, keysOnly)
	if err == nil && kv == nil && revision == 0 {
		rev, err = b.latest(ctx, rev)
	}
	return rev, kv, err
}

func (b databaseRevisions) List(ctx context.Context, key, end string, limit, revision int64, keysOnly bool) (int64, []*server.KeyValue, error) {
	rev, kvs, err := b.Backend.List(ctx, key, end, limit, revision, keysOnly)
	if err == nil && len(kvs) == 0 && revision == 0 {
		rev, err = b.latest(ctx, rev)
	}
	return rev, kvs, err
}

// CurrentRevision is the revision of kine's progress notifications. kine
// sends one once its poll has passed the revision (WaitForSyncTo), so each
// says truly that every event up to the database's revision was sent.
func (b databaseRevisions) CurrentRevision(ctx context.Context) (int64, error) {
	rev, err := b.Backend.CurrentRevision(ctx)
	if err != nil {
		return 0, err
	}
	return b.latest(ctx, rev)
}

// latest returns the database's current revision, or rev if that is
// higher. kine's count of the latest revision reads the current revision
// from the database with the count, whatever the range; the range here is
// empty, and free of the NUL bytes that PostgreSQL refuses in a key.
func (b databaseRevisions) latest(ctx context.Context, rev int64) (int64, error) {
	current, _, err := b.Backend.Count(ctx, "/", "/", 0)
	if err != nil {
		return 0, err
	}
	return max(rev, current), nil
}

// lostDeletes answers a delete that lost a race with another replica's
// delete of the same key as a delete of a key already deleted. Two kines
// on one database (two annex replicas) that delete a key at once both find
// it, and both insert its deletion; the database's unique index refuses
// the second, and that kine answers with the key's latest row as its
// current state, which is the other's deletion: a row with no value. The
// apiserver's conditional delete decodes that as the object and fails
// with "unexpected end of JSON input", a 500 for a delete that was not
// applied (of unknown outcome to its client), where the object is in fact
// gone: a 404, as when the other delete had come first.
type lostDeletes struct{ server.Backend }

func (b lostDeletes) Delete(ctx context.Context, key string, revision int64) (int64, *server.KeyValue, bool, error) {
	rev, kv, deleted, err := b.Backend.Delete(ctx, key, revision)
	if err != nil || deleted || kv == nil || len(kv.Value) > 0 {
		return rev, kv, deleted, err
	}
	// The row may be a deletion: the key's live state, if any, says.
	liveRev, live, err := b.Backend.Get(ctx, key, 0, false)
	if err != nil {
		return rev, kv, deleted, nil
	}
	return max(rev, liveRev), live, false, nil
}

// tolerantRegisterer lets kine register its connection pool's collector
// again after a start that was cut short (see MaxStartTimeout) and retried,
// where kine's MustRegister would panic on the duplicate.
type tolerantRegisterer struct{ prometheus.Registerer }

func (r tolerantRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				panic(err)
			}
		}
	}
}

// invalidCatalogName is PostgreSQL's error code for a database that does
// not exist; kine creates its database.
const invalidCatalogName = "3D000"

// checkReachable connects once to the database kine will use, within
// timeout, and says why it could not: the server does not answer, refuses
// the credentials, and so on. A database that does not exist yet is fine:
// kine creates it.
func checkReachable(ctx context.Context, dsn string, timeout time.Duration) error {
	cfg, err := pgx.ParseConfig(kineDSN(dsn))
	if err != nil {
		// The parse error may quote the connection string.
		return errors.New("the PostgreSQL connection string does not parse")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == invalidCatalogName {
		return nil
	}
	err = redact(err, dsn)
	return fmt.Errorf("%w: it is unreachable (no connection within %s): %w", ErrUnavailable, timeout, err)
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

// redact removes the connection string and its password from err's message
// (see Redact), keeping what err wraps for errors.Is.
func redact(err error, dsn string) error {
	if err == nil {
		return nil
	}
	msg := Redact(err.Error(), dsn)
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
