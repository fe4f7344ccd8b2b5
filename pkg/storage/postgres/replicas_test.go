//go:build integration

package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"annex.dev/annex/pkg/storage/postgres"
	"annex.dev/annex/pkg/storage/postgres/postgrestest"
)

// TestProgressFollowsAnotherReplicasWrites runs two kines on one database,
// as two annex replicas do: A writes all along, B starts beside it. B's watch progress
// notifications, from which the watch cache learns that it is up to date
// (consistent reads, the hosted types' readiness, bookmarks), must reach the
// revision of A's writes. With kine v0.16 alone they could stay at the
// database's revision when B started, whenever A wrote while B's kine
// started: a replica restarted beside a busy one never became ready.
func TestProgressFollowsAnotherReplicasWrites(t *testing.T) {
	pg := postgrestest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	a, writer, _ := start(t, pg.DSN, 0)
	defer a.Close()
	defer writer.Close()

	// A writes without a pause, from several clients, while B starts.
	const writers = 8
	var last atomic.Int64
	stop := make(chan struct{})
	wrote := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					wrote <- nil
					return
				default:
				}
				resp, err := writer.Put(ctx, fmt.Sprintf("/registry/test/a/key-%d-%d", w, i%20), fmt.Sprintf("value %d", i))
				if err != nil {
					wrote <- err
					return
				}
				for {
					seen := last.Load()
					if resp.Header.Revision <= seen || last.CompareAndSwap(seen, resp.Header.Revision) {
						break
					}
				}
			}
		}()
	}
	for last.Load() < 20 {
		time.Sleep(10 * time.Millisecond)
	}
	defer func() {
		close(stop)
		for range writers {
			if err := <-wrote; err != nil {
				t.Errorf("A's writes: %v", err)
			}
		}
	}()

	// B starts again and again beside A's writes, as a replica restarted in
	// a rolling update does: each time, its progress must reach a revision
	// A wrote after B started.
	for round := range 10 {
		b, reader, _ := start(t, pg.DSN, 0)
		err := progressReaches(ctx, reader, &last)
		reader.Close()
		b.Close()
		if err != nil {
			t.Fatalf("start %d of B: %v", round+1, err)
		}
	}
}

// progressReaches waits up to 10 s for the progress notifications of a
// watch on client to reach the revision last holds when it is called,
// asking for progress as the watch cache does before a consistent read.
func progressReaches(ctx context.Context, client *clientv3.Client, last *atomic.Int64) error {
	want := last.Load()
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// A key nobody writes: only progress notifications come.
	events := client.Watch(ctx, "/registry/test/nobody/", clientv3.WithPrefix(), clientv3.WithProgressNotify())
	deadline := time.After(10 * time.Second)
	ask := time.NewTicker(100 * time.Millisecond)
	defer ask.Stop()
	var seen int64
	for {
		select {
		case resp, ok := <-events:
			if !ok {
				return fmt.Errorf("the watch ended: %v", ctx.Err())
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("the watch: %w", err)
			}
			if resp.IsProgressNotify() {
				seen = max(seen, resp.Header.Revision)
				if seen >= want {
					return nil
				}
			}
		case <-ask.C:
			if err := client.RequestProgress(ctx); err != nil {
				return fmt.Errorf("asking for progress: %w", err)
			}
		case <-deadline:
			return fmt.Errorf("its progress notifications reached revision %d in 10 s; A had written revision %d when they were asked for", seen, want)
		}
	}
}

// TestDeletesRacingOnTwoReplicas runs two kines on one database, as two
// annex replicas do, and deletes each of many keys from both at once with
// the apiserver's conditional delete (the key's modification revision
// compared, the key read back when the compare fails). One delete of each
// key applies; the other must answer that the key is gone, never with a
// row that holds no object: the apiserver decodes what a failed delete
// reads back, and a deletion's row, which kine v0.16 returned, failed it
// with a 500.
func TestDeletesRacingOnTwoReplicas(t *testing.T) {
	pg := postgrestest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, clientA, _ := start(t, pg.DSN, 0)
	defer a.Close()
	defer clientA.Close()
	b, clientB, _ := start(t, pg.DSN, 0)
	defer b.Close()
	defer clientB.Close()

	const keys = 300
	revisions := make([]int64, keys)
	for i := range keys {
		resp, err := clientA.Put(ctx, fmt.Sprintf("/registry/test/race/key-%d", i), `{"kind":"Ledger"}`)
		if err != nil {
			t.Fatal(err)
		}
		revisions[i] = resp.Header.Revision
	}
	deleteAt := func(client *clientv3.Client, key string, rev int64) (*clientv3.TxnResponse, error) {
		return client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpDelete(key)).
			Else(clientv3.OpGet(key)).
			Commit()
	}
	var applied, lost, emptyRows atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 2*keys)
	// A few keys at a time: the two deletes of a key race each other, and
	// the kines' connections stay within the database's max_connections.
	inFlight := make(chan struct{}, 16)
	for i := range keys {
		key := fmt.Sprintf("/registry/test/race/key-%d", i)
		inFlight <- struct{}{}
		var pair sync.WaitGroup
		for _, client := range []*clientv3.Client{clientA, clientB} {
			pair.Add(1)
			wg.Go(func() {
				defer pair.Done()
				resp, err := deleteAt(client, key, revisions[i])
				if err != nil {
					errs <- fmt.Errorf("deleting %s: %w", key, err)
					return
				}
				if resp.Succeeded {
					applied.Add(1)
					return
				}
				lost.Add(1)
				for _, kv := range resp.Responses[0].GetResponseRange().GetKvs() {
					if len(kv.Value) == 0 {
						emptyRows.Add(1)
					}
				}
			})
		}
		go func() { pair.Wait(); <-inFlight }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d keys deleted from two replicas at once: %d deletes applied, %d lost the race", keys, applied.Load(), lost.Load())
	if applied.Load() != keys {
		t.Errorf("%d deletes applied, want one per key (%d)", applied.Load(), keys)
	}
	if n := emptyRows.Load(); n > 0 {
		t.Errorf("%d lost deletes read back a row with no object (a deletion) as the key's state; want the key gone", n)
	}
}

// TestConnectionsStayWithinTheBound sends a burst of concurrent writes
// through a kine bounded to a few connections: every write succeeds (each
// waits for a connection), and the database never holds more than the
// bound of kine's connections (without it, such a burst took 96 of them).
func TestConnectionsStayWithinTheBound(t *testing.T) {
	const bound, writes = 6, 200
	pg := postgrestest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, client := startKine(t, ctx, postgres.Options{DSN: pg.DSN, MaxConnections: bound})
	defer s.Close()
	defer client.Close()

	// The connections to the database other than this one and annex's gap
	// filler's (gaps.go), all kine's, counted until the burst is over.
	watch, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	var most atomic.Int64
	counted := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		for {
			var n int64
			if err := watch.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name <> 'annex-gap-filler'").Scan(&n); err != nil {
				counted <- err
				return
			}
			if n > most.Load() {
				most.Store(n)
			}
			select {
			case <-done:
				counted <- nil
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, writes)
	for i := range writes {
		wg.Go(func() {
			if _, err := client.Put(ctx, fmt.Sprintf("/registry/test/burst/key-%d", i), fmt.Sprintf("value %d", i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(done)
	if err := <-counted; err != nil {
		t.Fatalf("counting the database's connections: %v", err)
	}
	close(errs)
	for err := range errs {
		t.Errorf("a write of the burst: %v", err)
	}
	t.Logf("%d concurrent writes through a kine bounded to %d connections: at most %d connections seen", writes, bound, most.Load())
	if most.Load() > bound {
		t.Errorf("the database held %d of kine's connections during the burst; the bound is %d", most.Load(), bound)
	}
}
