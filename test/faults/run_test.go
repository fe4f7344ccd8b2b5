//go:build integration

package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"annex.dev/annex/test/history"
)

// watchers is how many of the recorder's clients list and watch.
const watchers = 2

// run is the recorder's clients at work on ledgers while a test injects
// faults, and what the test needs to say afterwards whether annex came
// through them.
type run struct {
	t   *testing.T
	rec *history.Recorder
	// acked holds how many writes were acknowledged before each fault, and
	// at the end.
	acked []int
	// back is when the system under test was last back after a fault, on
	// the recorder's clock.
	back int64
}

// startRun starts four clients and two watchers on ledgers; each of the
// clients' operations has opTimeout. With more than one server, the
// clients and watchers share them in turn (see history.Config.Replicas).
func startRun(t *testing.T, opTimeout time.Duration, servers ...*rest.Config) *run {
	t.Helper()
	var replicas []*rest.Config
	if len(servers) > 1 {
		replicas = servers
	}
	rec, err := history.Start(history.Config{
		REST:     servers[0],
		Replicas: replicas,
		Resource: ledgers,
		Object:   ledger,
		Names:    []string{"l0", "l1", "l2", "l3", "l4", "l5"},
		Clients:  4, Watchers: watchers,
		Pause:     20 * time.Millisecond,
		OpTimeout: opTimeout,
		// Watches end every 5s after a bookmark and are resumed from it.
		WatchTimeout: 5 * time.Second,
		Seed:         time.Now().UnixNano(),
		Logf:         t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.Stop)
	return &run{t: t, rec: rec}
}

// fault notes the writes acknowledged so far and marks a fault in the
// history. It first waits (up to a second) for a client's write to be on
// its way, so that the fault the caller injects next lands between a
// request and its answer.
func (r *run) fault(format string, args ...any) {
	for wait := time.Now(); r.rec.WritesInFlight() == 0 && time.Since(wait) < time.Second; {
		time.Sleep(100 * time.Microsecond)
	}
	_, acked := r.rec.Counts()
	r.acked = append(r.acked, acked)
	r.rec.Mark("%s, %d writes in flight", fmt.Sprintf(format, args...), r.rec.WritesInFlight())
}

// mark notes something else that happened, in the history.
func (r *run) mark(format string, args ...any) { r.rec.Mark(format, args...) }

// recovered marks the system under test back after a fault.
func (r *run) recovered(format string, args ...any) {
	r.back = r.rec.Now()
	r.rec.Mark(format, args...)
}

// servesWrites waits until a client's write is acknowledged, and returns
// how long that took.
func (r *run) servesWrites(timeout time.Duration) (time.Duration, error) {
	_, before := r.rec.Counts()
	started := time.Now()
	for {
		if _, acked := r.rec.Counts(); acked > before {
			return time.Since(started), nil
		}
		if time.Since(started) > timeout {
			return 0, fmt.Errorf("no write was acknowledged within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// finish lets the clients work for settle more, stops them, and checks
// the history: the test fails on any violation. Then writes must have been
// acknowledged between every two faults and after the last, and every
// watcher must have received events after the system was last back.
func (r *run) finish(settle time.Duration, what string) *history.Report {
	t := r.t
	t.Helper()
	time.Sleep(settle)
	_, acked := r.rec.Counts()
	r.acked = append(r.acked, acked)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := r.rec.Finish(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	dir := historyDir(t)
	rep := history.Check(h, dir, 2*time.Minute)
	keep(t, dir, h)
	t.Logf("%s:\n%s", what, rep)
	if !rep.OK() {
		t.Fatalf("the history does not check:\n%s", rep)
	}
	for i := 1; i < len(r.acked); i++ {
		if r.acked[i] <= r.acked[i-1] {
			t.Errorf("no write was acknowledged between fault %d and the next stop (%d before, %d after)", i, r.acked[i-1], r.acked[i])
		}
	}
	for w := 0; w < watchers; w++ {
		delivered := 0
		for _, c := range h.Chains {
			for _, e := range c.Events() {
				if c.Watcher == r.rec.Clients()+w && e.At > r.back && e.Type != history.Bookmark {
					delivered++
				}
			}
		}
		if delivered == 0 {
			t.Errorf("watcher %d received no event after the last fault was over", w)
		}
	}
	return rep
}
