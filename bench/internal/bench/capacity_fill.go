package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// The fill writes objects into annex's store while annex is stopped, in
// exactly the form annex writes them: the key and value of an object that
// annex created through its API, with another name and uid. The store is
// opened with annex's own code: its embedded etcd package on annex's data
// directory, or its kine on the PostgreSQL database, so that the rows are
// kine's own.

// templateFacts describe what annex stored for the object created through
// the API.
type templateFacts struct {
	Key string `json:"key"`
	// ValueBytes is the size of its JSON, StoredBytes of its value in the
	// store (compressed, with annex's default --storage-compression).
	ValueBytes  int    `json:"valueBytes"`
	StoredBytes int    `json:"storedBytes,omitempty"`
	APIVersion  string `json:"apiVersion"`
	// MetadataFields are the fields of the stored metadata.
	MetadataFields []string `json:"metadataFields"`
}

// fillTemplate is the stored value of the API-created object, cut at its
// name and uid, so that a variant is a concatenation.
type fillTemplate struct {
	facts     templateFacts
	keyPrefix string
	// pieces surround the two holes; nameFirst says which hole comes first.
	pieces    [3][]byte
	nameFirst bool
	// compressed says that annex stored the value compressed: so is each
	// variant.
	compressed bool
}

// newFillTemplate cuts value, stored under key, at the quoted name and
// uid, each of which must occur exactly once.
func newFillTemplate(key string, value []byte, name, uid string) (*fillTemplate, error) {
	if !strings.HasSuffix(key, "/"+name) {
		return nil, fmt.Errorf("key %s does not end with the object's name %s", key, name)
	}
	qName, qUID := []byte(strconv.Quote(name)), []byte(strconv.Quote(uid))
	for _, q := range [][]byte{qName, qUID} {
		if n := bytes.Count(value, q); n != 1 {
			return nil, fmt.Errorf("%s occurs %d times in the stored value, want once", q, n)
		}
	}
	t := &fillTemplate{keyPrefix: strings.TrimSuffix(key, name)}
	i, j := bytes.Index(value, qName), bytes.Index(value, qUID)
	t.nameFirst = i < j
	a, la, b, lb := i, len(qName), j, len(qUID)
	if !t.nameFirst {
		a, la, b, lb = j, len(qUID), i, len(qName)
	}
	t.pieces = [3][]byte{value[:a], value[a+la : b], value[b+lb:]}
	return t, nil
}

// variant is the key and value of the object named name with uid.
func (t *fillTemplate) variant(name, uid string) (string, []byte) {
	first, second := strconv.Quote(name), strconv.Quote(uid)
	if !t.nameFirst {
		first, second = second, first
	}
	v := make([]byte, 0, len(t.pieces[0])+len(t.pieces[1])+len(t.pieces[2])+len(first)+len(second))
	v = append(v, t.pieces[0]...)
	v = append(v, first...)
	v = append(v, t.pieces[1]...)
	v = append(v, second...)
	v = append(v, t.pieces[2]...)
	if t.compressed {
		v = compression.Compress(v)
	}
	return t.keyPrefix + name, v
}

// maxTxnBytes bounds the size of one transaction of the fill.
const maxTxnBytes = 1 << 20

// fillStats describe a fill.
type fillStats struct {
	// Method says how the store was written.
	Method string `json:"method"`
	// Objects is the number of objects written (the API-created one not
	// included).
	Objects   int     `json:"objects"`
	Batch     int     `json:"batch"`
	Clients   int     `json:"clients"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"perSecond"`
	TimedOut  bool    `json:"timedOut,omitempty"`
	Error     string  `json:"error,omitempty"`
	// Settle is what was done after the writes so that annex starts on a
	// store as it is in steady state, and how long it took.
	Settle        string  `json:"settle"`
	SettleSeconds float64 `json:"settleSeconds"`
}

// fillStore is one of annex's stores, opened by the driver.
type fillStore struct {
	slug    string
	client  *clientv3.Client
	batch   int
	clients int
	// etcdDir is the embedded etcd's data directory; dsn PostgreSQL's.
	etcdDir string
	dsn     string
	closers []func()
	// closeErr is the first error of a closer.
	closeErr error
	stats    fillStats
}

// openFillStore opens the store of kind slug that annex, stopped, keeps its
// data in: the embedded etcd of annex's data directory annexDir, or the
// PostgreSQL database of st.
func openFillStore(ctx context.Context, slug, annexDir string, st *store, logDir string, pl capacityPlan) (_ *fillStore, err error) {
	fs := &fillStore{slug: slug}
	defer func() {
		if err != nil {
			_ = fs.close()
		}
	}()
	var endpoint string
	var cfg clientv3.Config
	switch slug {
	case "embedded-etcd":
		log, err := os.Create(filepath.Join(logDir, "fill-etcd.log"))
		if err != nil {
			return nil, err
		}
		fs.closers = append(fs.closers, func() { _ = log.Close() })
		fs.etcdDir = filepath.Join(annexDir, "data", "etcd")
		e, err := embedded.Start(ctx, embedded.Options{DataDir: fs.etcdDir, QuotaBackendBytes: capacityQuota, LogLevel: "error", LogOutput: log})
		if err != nil {
			return nil, err
		}
		fs.closers = append(fs.closers, e.Close)
		tlsConfig, err := e.ClientTLS()
		if err != nil {
			return nil, err
		}
		endpoint, cfg.TLS = e.ClientURL, tlsConfig
		fs.batch, fs.clients = pl.EtcdBatch, pl.FillClients
	case "postgres":
		socketDir, err := os.MkdirTemp("", "kine-")
		if err != nil {
			return nil, err
		}
		fs.closers = append(fs.closers, func() { _ = os.RemoveAll(socketDir) })
		// The fill's connections commit without waiting for the WAL to
		// reach the disk: what they write is the same, only sooner. The
		// database's default comes back before annex starts again.
		if err := alterDatabase(ctx, st.DSN, "SET synchronous_commit = off"); err != nil {
			return nil, err
		}
		fs.closers = append(fs.closers, func() {
			if err := alterDatabase(context.WithoutCancel(ctx), st.DSN, "RESET synchronous_commit"); err != nil {
				fs.closeErr = err
			}
		})
		// annex's own kine, without compaction: it would only delete rows
		// that the fill never makes.
		pg, err := backend.Postgres{}.Start(ctx, "", st.DSN, socketDir)
		if err != nil {
			return nil, err
		}
		fs.closers = append(fs.closers, pg.Close)
		endpoint, fs.dsn = pg.Endpoint, st.DSN
		// kine serves one create per transaction; many at once fill the
		// database's group commits, up to the connections kine keeps open
		// (20): past them, database/sql opens and closes a connection, a
		// PostgreSQL process, for nearly every create.
		fs.batch, fs.clients = 1, pl.KineClients
	default:
		return nil, fmt.Errorf("no fill for store %s", slug)
	}
	cfg.Endpoints = []string{endpoint}
	cfg.DialTimeout = 10 * time.Second
	cfg.Logger = zap.NewNop()
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, err
	}
	fs.client = cli
	fs.closers = append(fs.closers, func() { _ = cli.Close() })
	fs.stats.Clients = fs.clients
	return fs, nil
}

// close closes the client and the store, the last opened first.
func (fs *fillStore) close() error {
	for i := len(fs.closers) - 1; i >= 0; i-- {
		fs.closers[i]()
	}
	fs.closers = nil
	return fs.closeErr
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

// readTemplate finds the object ns/name that annex stored, checks that it is
// what annex writes (JSON of the storage version, with a uid, a
// creationTimestamp and managedFields, without a resourceVersion) and cuts
// it into a template.
func (fs *fillStore) readTemplate(ctx context.Context, ns, name string) (*fillTemplate, error) {
	keys, err := fs.client.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("listing the store's keys: %w", err)
	}
	var found []string
	for _, kv := range keys.Kvs {
		if strings.HasSuffix(string(kv.Key), "/"+ns+"/"+name) {
			found = append(found, string(kv.Key))
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("%d keys of the store end with /%s/%s (%v), want 1", len(found), ns, name, found)
	}
	got, err := fs.client.Get(ctx, found[0])
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
	if want := hostedGroup + "/v1"; obj.APIVersion != want {
		return nil, fmt.Errorf("annex stored %s as apiVersion %q, want the storage version %s", found[0], obj.APIVersion, want)
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
	t, err := newFillTemplate(found[0], value, name, uid)
	if err != nil {
		return nil, err
	}
	fields := make([]string, 0, len(obj.Metadata))
	for f := range obj.Metadata {
		fields = append(fields, f)
	}
	slices.Sort(fields)
	t.compressed = compressed
	t.facts = templateFacts{Key: found[0], ValueBytes: len(value), StoredBytes: len(got.Kvs[0].Value), APIVersion: obj.APIVersion, MetadataFields: fields}
	return t, nil
}

// fill writes objects [from, to) of the template, each with a new uid, in
// transactions of fs.batch creates by fs.clients clients at once, until
// done or limit has passed. Every transaction taken is finished, so the
// objects written are from to from+Objects-1.
func (fs *fillStore) fill(ctx context.Context, p *progress, t *fillTemplate, from, to int, limit time.Duration) fillStats {
	st := fs.stats
	// etcd refuses a request larger than its --max-request-bytes (1.5 MiB
	// by default, annex's too): keep a transaction under 1 MiB.
	perObject := len(t.keyPrefix) + len(t.pieces[0]) + len(t.pieces[1]) + len(t.pieces[2]) + 128
	if fs.batch*perObject > maxTxnBytes {
		fs.batch = max(1, maxTxnBytes/perObject)
	}
	st.Batch = fs.batch
	if fs.slug == "postgres" {
		st.Method = "one create (mod_revision = 0, one put) per transaction through the etcd API of annex's kine, every row kine's own " +
			"(the fill's connections with synchronous_commit off, the database's default back before annex starts)"
	} else {
		st.Method = fmt.Sprintf("etcd transactions of %d creates (each guarded by mod_revision = 0) through annex's embedded etcd package "+
			"on annex's data directory", fs.batch)
	}
	n := to - from
	batches := (n + fs.batch - 1) / fs.batch
	var (
		next, done atomic.Int64
		mu         sync.Mutex
		firstErr   error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deadline := time.Now().Add(limit)
	stopProgress := p.ticker("fill "+fs.slug, n, &done)
	start := time.Now()
	var wg sync.WaitGroup
	for range fs.clients {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				b := int(next.Add(1) - 1)
				if b >= batches {
					return
				}
				lo, hi := from+b*fs.batch, min(from+(b+1)*fs.batch, to)
				cmps := make([]clientv3.Cmp, 0, hi-lo)
				puts := make([]clientv3.Op, 0, hi-lo)
				for i := lo; i < hi; i++ {
					key, value := t.variant(objectName(i), string(uuid.NewUUID()))
					cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", 0))
					puts = append(puts, clientv3.OpPut(key, string(value)))
				}
				tctx, tcancel := context.WithTimeout(ctx, time.Minute)
				resp, err := fs.client.Txn(tctx).If(cmps...).Then(puts...).Commit()
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
	stopProgress()
	st.Seconds = time.Since(start).Seconds()
	st.Objects = int(done.Load())
	st.PerSecond = float64(st.Objects) / st.Seconds
	st.TimedOut = st.Objects < n && firstErr == nil
	if firstErr != nil {
		st.Error = firstErr.Error()
	}
	p.logf("fill %s: %d objects in %.1f s = %.0f/s%s", fs.slug, st.Objects, st.Seconds, st.PerSecond, timedOut(st.TimedOut))
	return st
}

// settle leaves the store as it would be in steady state, and returns its
// size. The fill's etcd transactions are large raft entries: an etcd
// restarted before its next snapshot reads every entry since the last one
// back into memory, which annex's own creates (one object per entry) never
// make that large. Small raft entries (lease grants and revokes, which
// leave the key space and its revision alone) move the snapshot past the
// fill. PostgreSQL gets the VACUUM (ANALYZE) that autovacuum would run
// within a minute of the fill.
func (fs *fillStore) settle(ctx context.Context, p *progress, st *fillStats) (disk, error) {
	start := time.Now()
	defer func() { st.SettleSeconds = time.Since(start).Seconds() }()
	switch fs.slug {
	case "embedded-etcd":
		status, err := fs.client.Status(ctx, fs.client.Endpoints()[0])
		if err != nil {
			return disk{}, err
		}
		filled := status.RaftIndex
		entries := 0
		for snapshotIndex(fs.etcdDir) < filled {
			if entries > 40000 {
				return disk{}, fmt.Errorf("no etcd snapshot past raft index %d after %d more entries", filled, entries)
			}
			if err := fs.leaseRound(ctx, 500); err != nil {
				return disk{}, err
			}
			entries += 1000
		}
		st.Settle = fmt.Sprintf("%d small raft entries (lease grants and revokes) moved etcd's snapshot past the fill's last entry (%d)", entries, filled)
		p.logf("fill %s: %s", fs.slug, st.Settle)
		data := filepath.Join(fs.etcdDir, "data", "member")
		d := disk{Bytes: dirSize(filepath.Join(fs.etcdDir, "data")), Detail: map[string]float64{
			"bbolt file": dirSize(filepath.Join(data, "snap", "db")),
			"WAL":        dirSize(filepath.Join(data, "wal")),
			"quota":      capacityQuota,
		}}
		return d, nil
	case "postgres":
		conn, err := pgx.Connect(ctx, fs.dsn)
		if err != nil {
			return disk{}, err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if _, err := conn.Exec(ctx, "VACUUM (ANALYZE) kine"); err != nil {
			return disk{}, fmt.Errorf("VACUUM (ANALYZE) kine: %w", err)
		}
		st.Settle = "VACUUM (ANALYZE) of kine's table, as autovacuum would run it after the fill"
		var db, table, rows int64
		if err := conn.QueryRow(ctx, "SELECT pg_database_size(current_database()), pg_total_relation_size('kine'), (SELECT count(*) FROM kine)").
			Scan(&db, &table, &rows); err != nil {
			return disk{}, err
		}
		p.logf("fill %s: %s; database %s, kine's table %s (%d rows)", fs.slug, st.Settle, mib(float64(db)), mib(float64(table)), rows)
		return disk{Bytes: float64(db), Detail: map[string]float64{"kine's table": float64(table), "rows": float64(rows)}}, nil
	}
	return disk{}, fmt.Errorf("no store %s", fs.slug)
}

// leaseRound grants and revokes pairs leases, 8 at a time: 2*pairs raft
// entries.
func (fs *fillStore) leaseRound(ctx context.Context, pairs int) error {
	var (
		next atomic.Int64
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for next.Add(1) <= int64(pairs) {
				l, err := fs.client.Grant(ctx, 60)
				if err == nil {
					_, err = fs.client.Revoke(ctx, l.ID)
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
// dataDir (its files are named <term>-<index>.snap, in hexadecimal), 0
// if none.
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
