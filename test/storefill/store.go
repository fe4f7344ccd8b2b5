package storefill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/uuid"

	"annex.dev/annex/pkg/storage/backend"
	"annex.dev/annex/pkg/storage/compression"
	"annex.dev/annex/pkg/storage/embedded"
)

// maxTxnBytes bounds the size of one transaction of the fill.
const maxTxnBytes = 1 << 20

// Store is one of annex's stores, opened for a fill while annex is stopped.
type Store struct {
	// Client is an etcd client of the store: the embedded etcd's, or
	// that of annex's kine on the database.
	Client  *clientv3.Client
	batch   int
	clients int
	// etcdDir is the embedded etcd's data directory; dsn PostgreSQL's.
	etcdDir string
	dsn     string
	closers []func()
	// closeErr is the first error of a closer.
	closeErr error
}

// OpenEmbedded opens the embedded etcd whose data directory is etcdDir
// (annex's --data-dir followed by /etcd) with annex's own package and the
// quota annex runs it with, etcd's log to log. The fill writes batch
// creates in each transaction, from clients clients at once.
func OpenEmbedded(ctx context.Context, etcdDir string, quota int64, log io.Writer, batch, clients int) (_ *Store, err error) {
	s := &Store{etcdDir: etcdDir, batch: batch, clients: clients}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	e, err := embedded.Start(ctx, embedded.Options{DataDir: etcdDir, QuotaBackendBytes: quota, LogLevel: "error", LogOutput: log})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, e.Close)
	tlsConfig, err := e.ClientTLS()
	if err != nil {
		return nil, err
	}
	if err := s.connect(clientv3.Config{Endpoints: []string{e.ClientURL}, TLS: tlsConfig}); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenPostgres opens the PostgreSQL database of dsn through annex's own
// kine. kine serves one create per transaction; the fill writes from
// clients clients at once.
func OpenPostgres(ctx context.Context, dsn string, clients int) (_ *Store, err error) {
	s := &Store{dsn: dsn, batch: 1, clients: clients}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	socketDir, err := os.MkdirTemp("", "kine-")
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = os.RemoveAll(socketDir) })
	// The fill's connections commit without waiting for the WAL to reach
	// the disk: what they write is the same, only sooner. The database's
	// default comes back before annex starts again.
	if err := alterDatabase(ctx, dsn, "SET synchronous_commit = off"); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() {
		if err := alterDatabase(context.WithoutCancel(ctx), dsn, "RESET synchronous_commit"); err != nil {
			s.closeErr = err
		}
	})
	// annex's own kine, without compaction: it would only delete rows that
	// the fill never makes.
	pg, err := backend.Postgres{}.Start(ctx, "", dsn, socketDir)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, pg.Close)
	if err := s.connect(clientv3.Config{Endpoints: []string{pg.Endpoint}}); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) connect(cfg clientv3.Config) error {
	cfg.DialTimeout = 10 * time.Second
	cfg.Logger = zap.NewNop()
	cli, err := clientv3.New(cfg)
	if err != nil {
		return err
	}
	s.Client = cli
	s.closers = append(s.closers, func() { _ = cli.Close() })
	return nil
}

// Close closes the client and the store, the last opened first.
func (s *Store) Close() error {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
	return s.closeErr
}

// Batch is the number of creates in one transaction of the fill; Fill
// lowers it for large objects.
func (s *Store) Batch() int { return s.batch }

// Clients is the number of clients that write at once.
func (s *Store) Clients() int { return s.clients }

// Method says how Fill writes the store.
func (s *Store) Method() string {
	if s.dsn != "" {
		return "one create (mod_revision = 0, one put) per transaction through the etcd API of annex's kine, every row kine's own " +
			"(the fill's connections with synchronous_commit off, the database's default back before annex starts)"
	}
	return fmt.Sprintf("etcd transactions of %d creates (each guarded by mod_revision = 0) through annex's embedded etcd package "+
		"on annex's data directory", s.batch)
}

// alterDatabase runs ALTER DATABASE <the DSN's database> change.
func alterDatabase(ctx context.Context, dsn, change string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" "+change); err != nil {
		return fmt.Errorf("ALTER DATABASE %s %s: %w", db, change, err)
	}
	return nil
}

// ReadTemplate finds the object ns/name (name alone for a cluster-scoped
// type) that annex stored, checks that it is what annex writes (JSON of
// apiVersion, the type's storage version, with a uid, a creationTimestamp
// and managedFields, without a resourceVersion) and cuts it into a
// template.
func (s *Store) ReadTemplate(ctx context.Context, ns, name, apiVersion string) (*Template, error) {
	keys, err := s.Client.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("listing the store's keys: %w", err)
	}
	suffix := "/" + name
	if ns != "" {
		suffix = "/" + ns + suffix
	}
	var found []string
	for _, kv := range keys.Kvs {
		if strings.HasSuffix(string(kv.Key), suffix) {
			found = append(found, string(kv.Key))
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("%d keys of the store end with %s (%v), want 1", len(found), suffix, found)
	}
	got, err := s.Client.Get(ctx, found[0])
	if err != nil || len(got.Kvs) != 1 {
		return nil, fmt.Errorf("reading %s: %v (%d values)", found[0], err, len(got.Kvs))
	}
	value, compressed, err := compression.Decompress(got.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("annex's value of %s: %w", found[0], err)
	}
	var obj struct {
		APIVersion string         `json:"apiVersion"`
		Metadata   map[string]any `json:"metadata"`
	}
	if err := json.Unmarshal(value, &obj); err != nil {
		return nil, fmt.Errorf("annex's value of %s is not JSON: %w", found[0], err)
	}
	if obj.APIVersion != apiVersion {
		return nil, fmt.Errorf("annex stored %s as apiVersion %q, want the storage version %s", found[0], obj.APIVersion, apiVersion)
	}
	if _, ok := obj.Metadata["resourceVersion"]; ok {
		return nil, fmt.Errorf("annex stored a resourceVersion in %s", found[0])
	}
	for _, f := range []string{"uid", "creationTimestamp", "managedFields"} {
		if _, ok := obj.Metadata[f]; !ok {
			return nil, fmt.Errorf("annex stored %s without metadata.%s", found[0], f)
		}
	}
	uid, _ := obj.Metadata["uid"].(string)
	t, err := NewTemplate(found[0], value, name, uid)
	if err != nil {
		return nil, err
	}
	fields := make([]string, 0, len(obj.Metadata))
	for f := range obj.Metadata {
		fields = append(fields, f)
	}
	slices.Sort(fields)
	t.compressed = compressed
	t.facts = Facts{Key: found[0], ValueBytes: len(value), StoredBytes: len(got.Kvs[0].Value), APIVersion: obj.APIVersion, MetadataFields: fields}
	return t, nil
}

// Result is what a fill did.
type Result struct {
	// Objects is the number of objects written.
	Objects int
	Elapsed time.Duration
	// TimedOut says that the fill stopped at its time limit.
	TimedOut bool
	// Err is the first error of a transaction; the fill stopped at it.
	Err error
}

// Fill writes objects [from, to) of the template, object i named name(i),
// each with a new uid, in transactions of Batch creates by Clients clients
// at once, until done or limit has passed. Every transaction taken is
// finished, so the objects written are from to from+Objects-1. done, when
// not nil, counts the objects written as they are, for a progress report.
func (s *Store) Fill(ctx context.Context, t *Template, name func(int) string, from, to int, limit time.Duration, done *atomic.Int64) Result {
	// etcd refuses a request larger than its --max-request-bytes (1.5 MiB
	// by default, annex's too): keep a transaction under 1 MiB.
	if s.batch*t.size() > maxTxnBytes {
		s.batch = max(1, maxTxnBytes/t.size())
	}
	if done == nil {
		done = &atomic.Int64{}
	}
	base := done.Load()
	n := to - from
	batches := (n + s.batch - 1) / s.batch
	var (
		next     atomic.Int64
		mu       sync.Mutex
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deadline := time.Now().Add(limit)
	start := time.Now()
	var wg sync.WaitGroup
	for range s.clients {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				b := int(next.Add(1) - 1)
				if b >= batches {
					return
				}
				lo, hi := from+b*s.batch, min(from+(b+1)*s.batch, to)
				cmps := make([]clientv3.Cmp, 0, hi-lo)
				puts := make([]clientv3.Op, 0, hi-lo)
				for i := lo; i < hi; i++ {
					key, value := t.Variant(name(i), string(uuid.NewUUID()))
					cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", 0))
					puts = append(puts, clientv3.OpPut(key, string(value)))
				}
				tctx, tcancel := context.WithTimeout(ctx, time.Minute)
				resp, err := s.Client.Txn(tctx).If(cmps...).Then(puts...).Commit()
				tcancel()
				if err == nil && !resp.Succeeded {
					err = fmt.Errorf("objects %d to %d: one of them exists already", lo, hi-1)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				done.Add(int64(hi - lo))
			}
		})
	}
	wg.Wait()
	r := Result{Objects: int(done.Load() - base), Elapsed: time.Since(start), Err: firstErr}
	r.TimedOut = r.Objects < n && firstErr == nil
	return r
}

// Settle leaves the store as it would be in steady state, and says what it
// did. The fill's etcd transactions are large raft entries: an etcd
// restarted before its next snapshot reads every entry since the last one
// back into memory, which annex's own creates (one object per entry) never
// make that large. Small raft entries (lease grants and revokes, which
// leave the key space and its revision alone) move the snapshot past the
// fill. PostgreSQL gets the VACUUM (ANALYZE) that autovacuum would run
// within a minute of the fill.
func (s *Store) Settle(ctx context.Context) (string, error) {
	if s.dsn != "" {
		conn, err := pgx.Connect(ctx, s.dsn)
		if err != nil {
			return "", err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if _, err := conn.Exec(ctx, "VACUUM (ANALYZE) kine"); err != nil {
			return "", fmt.Errorf("VACUUM (ANALYZE) kine: %w", err)
		}
		return "VACUUM (ANALYZE) of kine's table, as autovacuum would run it after the fill", nil
	}
	status, err := s.Client.Status(ctx, s.Client.Endpoints()[0])
	if err != nil {
		return "", err
	}
	filled := status.RaftIndex
	entries := 0
	for snapshotIndex(s.etcdDir) < filled {
		if entries > 40000 {
			return "", fmt.Errorf("no etcd snapshot past raft index %d after %d more entries", filled, entries)
		}
		if err := s.leaseRound(ctx, 500); err != nil {
			return "", err
		}
		entries += 1000
	}
	return fmt.Sprintf("%d small raft entries (lease grants and revokes) moved etcd's snapshot past the fill's last entry (%d)", entries, filled), nil
}

// leaseRound grants and revokes pairs leases, 8 at a time: 2*pairs raft
// entries.
func (s *Store) leaseRound(ctx context.Context, pairs int) error {
	var (
		next atomic.Int64
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for next.Add(1) <= int64(pairs) {
				l, err := s.Client.Grant(ctx, 60)
				if err == nil {
					_, err = s.Client.Revoke(ctx, l.ID)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// snapshotIndex is the raft index of the newest snapshot etcd saved in
// dataDir, the embedded etcd's data directory (its files are named
// <term>-<index>.snap, in hexadecimal), 0 if none.
func snapshotIndex(dataDir string) uint64 {
	names, _ := filepath.Glob(filepath.Join(dataDir, "data", "member", "snap", "*.snap"))
	var newest uint64
	for _, n := range names {
		_, idx, ok := strings.Cut(strings.TrimSuffix(filepath.Base(n), ".snap"), "-")
		if !ok {
			continue
		}
		if i, err := strconv.ParseUint(idx, 16, 64); err == nil && i > newest {
			newest = i
		}
	}
	return newest
}
