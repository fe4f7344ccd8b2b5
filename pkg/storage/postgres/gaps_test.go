//go:build integration

package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"annex.dev/annex/pkg/storage/postgres"
	"annex.dev/annex/pkg/storage/postgres/postgrestest"
)

// unusedRevisions is how many revisions the failed writes of
// TestGapsDoNotStopWatches leave unused: as many as the writes a busy annex
// had refused while its PostgreSQL's disk was full in
// TestFullTablespacePostgres (5,263 there). kine alone fills them one at a
// time, a poll or two and an insert each: a minute or more on a loaded
// machine.
const unusedRevisions = 8000

// watchWait is how long a watch may take to deliver the write that follows
// the failed ones: well beyond the gap filler's two passes of a second,
// well short of kine's own filling.
const watchWait = 10 * time.Second

// TestGapsDoNotStopWatches takes many revisions from kine's sequence
// without writing them, as failed inserts do (a full disk, a refused
// write), then writes a key: a watch opened before must deliver the write
// within watchWait. Without the gap filler (GapFillInterval < 0) it must
// not, which shows what the test measures.
func TestGapsDoNotStopWatches(t *testing.T) {
	for name, tc := range map[string]struct {
		interval  time.Duration
		delivered bool
	}{
		"with the gap filler":    {interval: 0, delivered: true},
		"without the gap filler": {interval: -1, delivered: false},
	} {
		t.Run(name, func(t *testing.T) {
			pg := postgrestest.Start(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			s, client := startKine(t, ctx, postgres.Options{DSN: pg.DSN, GapFillInterval: tc.interval})
			defer s.Close()
			defer client.Close()

			first, err := client.Put(ctx, "/gaps/first", "1")
			if err != nil {
				t.Fatal(err)
			}
			// The watch must be kine's before the gaps: one started after
			// them would read them from the table, not wait on the poll.
			watch := client.Watch(ctx, "/gaps/", clientv3.WithPrefix(), clientv3.WithRev(first.Header.Revision+1), clientv3.WithCreatedNotify())
			if created := <-watch; !created.Created {
				t.Fatalf("the watch did not start: %v", created.Err())
			}

			db, err := pgx.Connect(ctx, pg.DSN)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close(context.Background())
			if _, err := db.Exec(ctx, `SELECT nextval('kine_id_seq') FROM generate_series(1, $1::bigint)`, unusedRevisions); err != nil {
				t.Fatal(err)
			}
			written := time.Now()
			second, err := client.Put(ctx, "/gaps/second", "2")
			if err != nil {
				t.Fatal(err)
			}
			if gap := second.Header.Revision - first.Header.Revision - 1; gap < unusedRevisions {
				t.Fatalf("the second write is %d revisions after the first, want at least %d unused between them", gap+1, unusedRevisions)
			}

			timeout := time.After(watchWait)
			for {
				select {
				case resp, ok := <-watch:
					if !ok || resp.Err() != nil {
						t.Fatalf("the watch ended: %v", resp.Err())
					}
					for _, e := range resp.Events {
						if string(e.Kv.Key) != "/gaps/second" {
							continue
						}
						took := time.Since(written)
						if !tc.delivered {
							t.Fatalf("the watch delivered the write after %d unused revisions in %s without the gap filler; the test cannot tell it from with", unusedRevisions, took.Round(time.Millisecond))
						}
						if e.Kv.ModRevision != second.Header.Revision {
							t.Errorf("the watch delivered the write at revision %d, want %d", e.Kv.ModRevision, second.Header.Revision)
						}
						t.Logf("the watch delivered the write after %d unused revisions %s after it", unusedRevisions, took.Round(time.Millisecond))
						return
					}
				case <-timeout:
					if tc.delivered {
						t.Fatalf("the watch did not deliver the write after %d unused revisions within %s", unusedRevisions, watchWait)
					}
					t.Logf("without the gap filler, the watch did not deliver the write after %d unused revisions within %s", unusedRevisions, watchWait)
					return
				}
			}
		})
	}
}
