package postgres

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	kinemetrics "github.com/k3s-io/kine/pkg/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// statsTimeout bounds the query a scrape runs. A scrape that runs out of it
// reports none of the statistics rather than failing annex's whole /metrics.
const statsTimeout = 3 * time.Second

// statsQuery reads, in one round trip, the size of the database, kine's
// table and its revisions. kine keeps one table, kine, in the connection's
// search path. A revision of kine is the id of a row: the current revision
// is the largest id; kine records the revision it compacted to in the
// prev_revision column of its row named compact_rev_key (see kine's
// pkg/drivers/generic, CompactRevSQL and UpdateCompactSQL). Row counts come
// from PostgreSQL's statistics, not from count(*), which reads the table.
const statsQuery = `
SELECT
	pg_database_size(current_database()),
	pg_total_relation_size('kine'),
	(SELECT MAX(id) FROM kine),
	(SELECT MAX(prev_revision) FROM kine WHERE name = 'compact_rev_key'),
	(SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = 'kine'::regclass),
	(SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'kine'::regclass)`

var (
	databaseSizeDesc = prometheus.NewDesc("annex_postgres_database_size_bytes",
		"Size of annex's PostgreSQL database on disk (pg_database_size), read when scraped.", nil, nil)
	tableSizeDesc = prometheus.NewDesc("annex_postgres_table_size_bytes",
		"Size of kine's table with its indexes and TOAST data (pg_total_relation_size), read when scraped.", nil, nil)
	currentRevisionDesc = prometheus.NewDesc("annex_postgres_current_revision",
		"The latest revision in kine's table, read when scraped.", nil, nil)
	compactedRevisionDesc = prometheus.NewDesc("annex_postgres_compacted_revision",
		"The revision kine last compacted the table to, read when scraped.", nil, nil)
	compactionLagDesc = prometheus.NewDesc("annex_postgres_compaction_lag_revisions",
		"Revisions written since the last compaction: annex_postgres_current_revision - annex_postgres_compacted_revision. "+
			"kine never compacts the latest 1000 revisions.", nil, nil)
	rowsDesc = prometheus.NewDesc("annex_postgres_rows",
		"Approximate number of live rows in kine's table (n_live_tup of PostgreSQL's statistics).", nil, nil)
	deadRowsDesc = prometheus.NewDesc("annex_postgres_dead_rows",
		"Approximate number of dead rows in kine's table, left by compaction until PostgreSQL vacuums them (n_dead_tup).", nil, nil)
)

// statsCollector reports the database's size and kine's compaction from a
// query it runs on each scrape, on a connection of its own: a scrape does not
// wait for kine's connections when they are all busy.
type statsCollector struct {
	db     *sql.DB
	logger klog.Logger
}

// newStatsCollector opens (lazily) a connection to the database that kine
// uses for dsn.
func newStatsCollector(dsn string, logger klog.Logger) (*statsCollector, error) {
	db, err := openOwnConnection(dsn, "")
	if err != nil {
		return nil, err
	}
	return &statsCollector{db: db, logger: logger}, nil
}

// openOwnConnection opens (lazily) a pool of one connection of annex's
// own to the database that kine uses for dsn, named application (in
// pg_stat_activity) unless empty.
func openOwnConnection(dsn, application string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(kineDSN(dsn))
	if err != nil {
		// The parse error may quote the connection string.
		return nil, errors.New("the PostgreSQL connection string does not parse")
	}
	if application != "" {
		cfg.RuntimeParams["application_name"] = application
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, nil
}

// kineDSN is the connection string kine connects with for dsn: kine
// connects to the database "kubernetes" when the string names none, and
// folds the database's name to lower case.
func kineDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/kubernetes"
	}
	u.Path = strings.ToLower(u.Path)
	u.RawPath = ""
	return u.String()
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{databaseSizeDesc, tableSizeDesc, currentRevisionDesc, compactedRevisionDesc, compactionLagDesc, rowsDesc, deadRowsDesc} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	var dbSize, tableSize int64
	var current, compacted, rows, dead sql.NullInt64
	if err := c.db.QueryRowContext(ctx, statsQuery).Scan(&dbSize, &tableSize, &current, &compacted, &rows, &dead); err != nil {
		c.logger.Error(err, "Reading PostgreSQL's statistics for /metrics")
		return
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	gauge(databaseSizeDesc, float64(dbSize))
	gauge(tableSizeDesc, float64(tableSize))
	if current.Valid {
		gauge(currentRevisionDesc, float64(current.Int64))
		// Before kine's first compaction the compact revision is 0.
		gauge(compactedRevisionDesc, float64(compacted.Int64))
		gauge(compactionLagDesc, float64(current.Int64-compacted.Int64))
	}
	if rows.Valid {
		gauge(rowsDesc, float64(rows.Int64))
	}
	if dead.Valid {
		gauge(deadRowsDesc, float64(dead.Int64))
	}
}

// registerMetrics registers the statistics collector and kine's own SQL and
// compaction counters with r. kine's counters are process-wide: a second
// server in the process (tests) finds them registered already.
// unregister removes the collector, not kine's counters.
// The collector's metrics carry the label storage_backend, "default" for
// annex's command-line store.
func registerMetrics(r prometheus.Registerer, backend string, c *statsCollector) (unregister func(), err error) {
	for _, kc := range []prometheus.Collector{kinemetrics.SQLTotal, kinemetrics.SQLTime, kinemetrics.CompactTotal, kinemetrics.InsertErrorsTotal} {
		if err := r.Register(kc); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return nil, err
		}
	}
	if backend == "" {
		backend = "default"
	}
	labelled := prometheus.WrapRegistererWith(prometheus.Labels{"storage_backend": backend}, r)
	if err := labelled.Register(c); err != nil {
		return nil, err
	}
	return func() { labelled.Unregister(c) }, nil
}
