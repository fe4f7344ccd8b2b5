package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"annex.dev/annex/test/storefill"
)

// The fill writes objects into annex's store while annex is stopped, in
// exactly the form annex writes them, with annex's own store code
// (test/storefill). Here are what the capacity command reports of it.

// templateFacts describe what annex stored for the object created through
// the API.
type templateFacts = storefill.Facts

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
	*storefill.Store
	slug string
	// etcdDir is the embedded etcd's data directory; dsn PostgreSQL's.
	etcdDir string
	dsn     string
	// log is the embedded etcd's log file.
	log   *os.File
	stats fillStats
}

// openFillStore opens the store of kind slug that annex, stopped, keeps its
// data in: the embedded etcd of annex's data directory annexDir, or the
// PostgreSQL database of st.
func openFillStore(ctx context.Context, slug, annexDir string, st *store, logDir string, pl capacityPlan) (_ *fillStore, err error) {
	fs := &fillStore{slug: slug}
	switch slug {
	case "embedded-etcd":
		if fs.log, err = os.Create(filepath.Join(logDir, "fill-etcd.log")); err != nil {
			return nil, err
		}
		fs.etcdDir = filepath.Join(annexDir, "data", "etcd")
		fs.Store, err = storefill.OpenEmbedded(ctx, fs.etcdDir, capacityQuota, fs.log, pl.EtcdBatch, pl.FillClients)
		if err != nil {
			_ = fs.log.Close()
			return nil, err
		}
	case "postgres":
		fs.dsn = st.DSN
		// kine serves one create per transaction; many at once fill the
		// database's group commits, up to the connections kine keeps open
		// (20): past them, database/sql opens and closes a connection, a
		// PostgreSQL process, for nearly every create.
		if fs.Store, err = storefill.OpenPostgres(ctx, st.DSN, pl.KineClients); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("no fill for store %s", slug)
	}
	fs.stats.Clients = fs.Clients()
	return fs, nil
}

// close closes the client and the store, the last opened first.
func (fs *fillStore) close() error {
	err := fs.Close()
	if fs.log != nil {
		_ = fs.log.Close()
	}
	return err
}

// readTemplate finds the object ns/name that annex stored, checks that it is
// what annex writes (JSON of the storage version, with a uid, a
// creationTimestamp and managedFields, without a resourceVersion) and cuts
// it into a template.
func (fs *fillStore) readTemplate(ctx context.Context, ns, name string) (*storefill.Template, error) {
	return fs.ReadTemplate(ctx, ns, name, hostedGroup+"/v1")
}

// fill writes objects [from, to) of the template, each with a new uid, in
// transactions of the store's batch of creates by its clients at once,
// until done or limit has passed. Every transaction taken is finished, so
// the objects written are from to from+Objects-1.
func (fs *fillStore) fill(ctx context.Context, p *progress, t *storefill.Template, from, to int, limit time.Duration) fillStats {
	st := fs.stats
	var done atomic.Int64
	stopProgress := p.ticker("fill "+fs.slug, to-from, &done)
	r := fs.Fill(ctx, t, objectName, from, to, limit, &done)
	stopProgress()
	st.Batch, st.Method = fs.Batch(), fs.Method()
	st.Seconds = r.Elapsed.Seconds()
	st.Objects = r.Objects
	st.PerSecond = float64(st.Objects) / st.Seconds
	st.TimedOut = r.TimedOut
	if r.Err != nil {
		st.Error = r.Err.Error()
	}
	p.logf("fill %s: %d objects in %.1f s = %.0f/s%s", fs.slug, st.Objects, st.Seconds, st.PerSecond, timedOut(st.TimedOut))
	return st
}

// settle leaves the store as it would be in steady state (see
// storefill.Store.Settle), and returns its size.
func (fs *fillStore) settle(ctx context.Context, p *progress, st *fillStats) (disk, error) {
	start := time.Now()
	defer func() { st.SettleSeconds = time.Since(start).Seconds() }()
	what, err := fs.Settle(ctx)
	if err != nil {
		return disk{}, err
	}
	st.Settle = what
	switch fs.slug {
	case "embedded-etcd":
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
