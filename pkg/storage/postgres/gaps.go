package postgres

import (
	"context"
	"database/sql"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// A revision of kine is the id of a row of its table, taken from the
// table's sequence by the insert of each write. A write that fails after
// taking its id leaves the id unused: a gap. kine's poll, which turns new
// rows into watch events in order, stops at each gap, waits a moment for
// a write still in flight, then fills it with a row of its own ("gap-<id>",
// a deletion that no key range holds), one gap at a time, two polls of the
// table and an insert each: about 18 ms on a loaded machine. A full disk
// under a busy annex leaves thousands of gaps (every write refused took an
// id), and every watch of every type on the database then stops for as
// long as kine takes to fill them: 5,263 gaps, about 95 s, in
// TestFullTablespacePostgres.
//
// gapFiller fills them in bulk, with the rows kine would write: once a
// second, each id below the table's highest id of the previous second
// that no row holds. A write still in flight with such an id finds its id
// taken when it inserts, and kine takes a new one for it
// (InsertRetry on the primary key); a fill that meets the write's row
// yields to it (ON CONFLICT DO NOTHING). kine then finds the filled rows
// in its next poll and goes on. Two replicas on one database may both fill:
// the second finds the rows there.
type gapFiller struct {
	db     *sql.DB
	dsn    string
	logger klog.Logger
	// filled is the id up to which every gap is filled (or was never
	// there); seen is the table's highest id at the last pass.
	filled, seen int64
}

// gapFillerName is the application_name of the gap filler's connection.
const gapFillerName = "annex-gap-filler"

// maxFill bounds the ids one pass looks at; a pass that finds more leaves
// the rest to the next.
const maxFill = 100_000

// fillSQL fills the gaps among the ids $1 to $2 with kine's own rows for a
// gap (generic.Generic's Fill).
const fillSQL = `INSERT INTO kine(id, name, created, deleted, create_revision, prev_revision, lease, value, old_value)
SELECT g, 'gap-' || g, 0, 1, 0, 0, 0, NULL, NULL
FROM generate_series($1::bigint, $2::bigint) AS g
WHERE NOT EXISTS (SELECT 1 FROM kine WHERE id = g)
ON CONFLICT DO NOTHING`

// newGapFiller opens (lazily) a connection of its own to the database that
// kine uses for dsn.
func newGapFiller(dsn string, logger klog.Logger) (*gapFiller, error) {
	// The name tells its connection from kine's in pg_stat_activity.
	db, err := openOwnConnection(dsn, gapFillerName)
	if err != nil {
		return nil, err
	}
	return &gapFiller{db: db, dsn: dsn, logger: logger}, nil
}

// run fills gaps once every interval until ctx ends, then closes the
// connection. The gaps it fills are those after the table's highest id
// now: kine's poll starts there too, and never looks below it.
func (g *gapFiller) run(ctx context.Context, wg *sync.WaitGroup, interval time.Duration) {
	// An error leaves it to the first pass.
	_, _, _, _ = g.pass(ctx)
	wg.Go(func() {
		defer g.db.Close()
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			n, from, to, err := g.pass(ctx)
			switch {
			case err != nil && ctx.Err() == nil && !failing:
				// Logged once until a pass succeeds: the database may be
				// down or full for a while, and annex says so elsewhere.
				g.logger.Info("Could not fill the unused revisions of the store; trying again every second", "err", Redact(err.Error(), g.dsn))
				failing = true
			case err == nil:
				failing = false
				if n > 0 {
					g.logger.Info("Filled unused revisions of the store, so that watches go on", "filled", n, "from", from, "to", to)
				}
			}
		}
	})
}

// pass fills the gaps between the last pass's filled id and the highest
// id the last pass saw, and notes the highest id now. It returns how many
// gaps it filled, among which ids.
func (g *gapFiller) pass(ctx context.Context) (n, from, to int64, err error) {
	var highest int64
	if err := g.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM kine`).Scan(&highest); err != nil {
		return 0, 0, 0, err
	}
	if g.seen == 0 {
		// The first pass: what came before is not polled.
		g.filled, g.seen = highest, highest
		return 0, 0, 0, nil
	}
	from, to = g.filled+1, min(g.seen, g.filled+maxFill)
	if to < from {
		g.seen = max(g.seen, highest)
		return 0, 0, 0, nil
	}
	var rows int64
	if err := g.db.QueryRowContext(ctx, `SELECT count(*) FROM kine WHERE id BETWEEN $1 AND $2`, from, to).Scan(&rows); err != nil {
		return 0, 0, 0, err
	}
	if rows < to-from+1 {
		res, err := g.db.ExecContext(ctx, fillSQL, from, to)
		if err != nil {
			return 0, 0, 0, err
		}
		if n, err = res.RowsAffected(); err != nil {
			return 0, 0, 0, err
		}
	}
	g.filled = to
	g.seen = max(g.seen, highest)
	return n, from, to, nil
}
