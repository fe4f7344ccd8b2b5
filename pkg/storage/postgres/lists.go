package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"

	"github.com/k3s-io/kine/pkg/logstructured/sqllog"
	"github.com/k3s-io/kine/pkg/server"
)

// pagedLists answers the lists of a key range (a type's objects, a page of
// them) with a query that reads only as far as the page goes, and counts
// them with one that reads only kine's index.
//
// kine v0.16's list query groups every row of the range after the page's
// first key by name to find each key's latest row, joins those to the
// table, and only then sorts by name and takes the page: every page costs
// the whole rest of the range. Filling the watch cache of a type of
// 1,000,000 objects on PostgreSQL, 100 pages of 10,000, took 712 s. Here the
// latest row of each key comes from kine's own index on (name, id DESC,
// deleted), read in order (DISTINCT ON), and the scan stops once the page
// is full. The answer is the same: the rows kine would return, turned into
// key-values by kine's own code (RowsToEvents), and the same current and
// compacted revisions, and errors, as kine's List.
type pagedLists struct {
	server.Backend
	db *sql.DB
}

// listsName is the application_name of the lists' connections.
const listsName = "annex-lists"

// maxListConnections bounds the connections the lists use.
const maxListConnections = 8

// listSQL reads the latest row of each key from $1 up to $2, at revision
// $3 or before, that is not a deletion, in key order. kine's deleted is 0
// or 1; "<> 1" rather than "= 0" because PostgreSQL, which has no
// statistics of a subquery's rows, guesses that "= 0" keeps 1 row in 200
// and then plans to read and sort the whole range for a page (measured at
// 300,000 rows: 156 ms a page of 10,000 against 9 ms, and kine's query
// 533 to 1,611 ms). %s is the columns
// (the value or not), the same kine's list query returns after the current
// and compacted revisions.
const listSQL = `SELECT ` + revisionsColumns + `,
  %[1]s
FROM (
  SELECT DISTINCT ON (name) %[1]s
  FROM kine
  WHERE name >= $1 AND name < $2 AND id <= $3
  ORDER BY name, id DESC
) AS latest
WHERE deleted <> 1
ORDER BY name`

const (
	listKeysColumns = "id, name, created, deleted, create_revision, prev_revision, lease"
	listColumns     = listKeysColumns + ", value"
)

var (
	listKeysSQL   = fmt.Sprintf(listSQL, listKeysColumns)
	listValuesSQL = fmt.Sprintf(listSQL, listColumns)
)

// countSQL counts the keys listSQL lists, with the current and compacted
// revisions. kine counts the rest of the range after each page (the
// apiserver's remainingItemCount): it reads that much in any case, but
// here from the index alone, without grouping and joining.
const countSQL = `SELECT ` + revisionsColumns + `,
  COUNT(*)
FROM (
  SELECT DISTINCT ON (name) deleted
  FROM kine
  WHERE name >= $1 AND name < $2 AND id <= $3
  ORDER BY name, id DESC
) AS latest
WHERE deleted = 0`

// revisionsColumns are the current and compacted revisions, as kine reads
// them.
const revisionsColumns = `(SELECT MAX(id) FROM kine) AS current_rev,
  (SELECT MAX(prev_revision) FROM kine WHERE name = 'compact_rev_key') AS compact_rev`

// revisionsSQL reads the revisions alone.
const revisionsSQL = `SELECT ` + revisionsColumns

func newPagedLists(backend server.Backend, dsn string) (*pagedLists, error) {
	db, err := openOwnConnection(dsn, listsName)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(maxListConnections)
	db.SetMaxIdleConns(2)
	return &pagedLists{Backend: backend, db: db}, nil
}

// List implements server.Backend.
func (b *pagedLists) List(ctx context.Context, key, end string, limit, revision int64, keysOnly bool) (int64, []*server.KeyValue, error) {
	if end == "" {
		// One key: kine's query of one name is not the slow one.
		return b.Backend.List(ctx, key, end, limit, revision, keysOnly)
	}
	query, args := listValuesSQL, []any{startKey(key), end, atRevision(revision)}
	if keysOnly {
		query = listKeysSQL
	}
	if limit > 0 {
		query += " LIMIT $4"
		args = append(args, limit)
	}
	rows, err := b.db.QueryContext(ctx, query, args...)
	if err != nil {
		return 0, nil, err
	}
	current, compact, events, err := sqllog.RowsToEvents(rows, !keysOnly, false)
	if err != nil {
		return 0, nil, err
	}
	if len(events) == 0 {
		// The revisions come with the rows: read them alone.
		var cur, comp sql.NullInt64
		if err := b.db.QueryRowContext(ctx, revisionsSQL).Scan(&cur, &comp); err != nil {
			return 0, nil, err
		}
		current, compact = cur.Int64, comp.Int64
	}
	if revision > current {
		return current, nil, server.ErrFutureRev
	}
	if revision > 0 && revision < compact {
		return current, nil, server.ErrCompacted
	}
	kvs := make([]*server.KeyValue, 0, len(events))
	for _, e := range events {
		kvs = append(kvs, e.KV)
	}
	return current, kvs, nil
}

// Count implements server.Backend.
func (b *pagedLists) Count(ctx context.Context, key, end string, revision int64) (int64, int64, error) {
	var cur, comp sql.NullInt64
	var count int64
	if err := b.db.QueryRowContext(ctx, countSQL, startKey(key), end, atRevision(revision)).Scan(&cur, &comp, &count); err != nil {
		return 0, 0, err
	}
	if revision <= 0 {
		return cur.Int64, count, nil
	}
	if revision > cur.Int64 {
		return cur.Int64, 0, server.ErrFutureRev
	}
	if revision < comp.Int64 {
		return cur.Int64, 0, server.ErrCompacted
	}
	return cur.Int64, count, nil
}

// startKey is where a range from key starts in the table. PostgreSQL
// refuses a NUL byte in text; kine's PostgreSQL driver starts after a
// key's trailing NUL at the character after NUL instead.
func startKey(key string) string {
	if k, ok := strings.CutSuffix(key, "\x00"); ok {
		return k + "\x1a"
	}
	return key
}

// atRevision is the highest id a read at revision reads: every id for the
// current revision (0).
func atRevision(revision int64) int64 {
	if revision <= 0 {
		return math.MaxInt64
	}
	return revision
}
