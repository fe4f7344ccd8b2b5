//go:build integration

package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
)

// TestProgressNeverOvertakesEvents watches many key prefixes on one stream,
// as the apiserver's watch caches do, while writers write to them and a
// client asks for progress all the time, as the caches do before each
// consistent read. A progress notification at revision r tells a watch
// that it has received every event up to r: the watch cache then answers a
// consistent read at r from what it holds. So no event of a revision at or
// below a notification's may come after it on that watch. With kine v0.16
// alone some did: it counted a watch as caught up when its goroutine was
// idle, while events were still on their way to it, and the caches
// answered lists and gets older than an acknowledged write.
func TestProgressNeverOvertakesEvents(t *testing.T) {
	pg := postgrestest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, client, _ := start(t, pg.DSN, 0)
	defer s.Close()
	defer client.Close()

	const (
		prefixes = 24
		writers  = 4
		duration = 6 * time.Second
	)
	wctx, stopWatches := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer stopWatches()
	type result struct {
		prefix     int
		events     int
		progress   int
		overtaken  []string
		lastEvent  int64
		watchEnded error
	}
	results := make(chan result, prefixes)
	for p := range prefixes {
		events := client.Watch(wctx, fmt.Sprintf("/registry/test/p%d/", p), clientv3.WithPrefix(), clientv3.WithProgressNotify())
		go func() {
			r := result{prefix: p}
			var progress int64
			for resp := range events {
				if err := resp.Err(); err != nil {
					r.watchEnded = err
					break
				}
				if resp.IsProgressNotify() {
					r.progress++
					progress = max(progress, resp.Header.Revision)
					continue
				}
				for _, ev := range resp.Events {
					r.events++
					r.lastEvent = ev.Kv.ModRevision
					if ev.Kv.ModRevision <= progress && len(r.overtaken) < 5 {
						r.overtaken = append(r.overtaken, fmt.Sprintf("event %s at revision %d after a progress notification at %d", ev.Kv.Key, ev.Kv.ModRevision, progress))
					}
				}
			}
			results <- r
		}()
	}

	// Progress asked for without a pause, from its own goroutine.
	done := make(chan struct{})
	var askers sync.WaitGroup
	askers.Add(1)
	go func() {
		defer askers.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			_ = client.RequestProgress(wctx)
			time.Sleep(2 * time.Millisecond)
		}
	}()

	var wg sync.WaitGroup
	deadline := time.Now().Add(duration)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				p := rand.IntN(prefixes)
				if _, err := client.Put(ctx, fmt.Sprintf("/registry/test/p%d/key-%d-%d", p, w, i%10), fmt.Sprintf("value %d", i)); err != nil {
					t.Errorf("writing: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Every watch receives its last write, then the watches end.
	time.Sleep(3 * time.Second)
	close(done)
	askers.Wait()
	stopWatches()

	var events, progress int
	for range prefixes {
		r := <-results
		events += r.events
		progress += r.progress
		if r.watchEnded != nil {
			t.Errorf("the watch of prefix %d ended: %v", r.prefix, r.watchEnded)
		}
		// The store's latest revision of the prefix's keys: its last write.
		resp, err := client.Get(ctx, fmt.Sprintf("/registry/test/p%d/", r.prefix), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		var last int64
		for _, kv := range resp.Kvs {
			last = max(last, kv.ModRevision)
		}
		if r.lastEvent != last {
			t.Errorf("the watch of prefix %d received revision %d last; the last write to it is at %d", r.prefix, r.lastEvent, last)
		}
		for _, o := range r.overtaken {
			t.Errorf("prefix %d: %s", r.prefix, o)
		}
	}
	t.Logf("%d events and %d progress notifications on %d watches", events, progress, prefixes)
	if progress == 0 {
		t.Errorf("no progress notification came: the test checked nothing")
	}
}
