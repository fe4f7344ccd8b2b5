//go:build integration

package etcdfault

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// outcome is the result of one create of the load.
type outcome struct {
	name string
	response
}

// load is a set of clients that create records continuously, each waiting
// for its answer before sending the next, and remember every answer.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	outcomes []outcome
}

// startLoad starts workers clients creating records through annex.
func startLoad(a *annex, workers int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				name := fmt.Sprintf("w%02d-%06d", w, seq)
				// Not ctx: a request in flight when the load stops is
				// answered, not abandoned, so its outcome is known.
				r := a.createRecord(context.Background(), name, w, seq)
				l.mu.Lock()
				l.outcomes = append(l.outcomes, outcome{name: name, response: r})
				l.mu.Unlock()
				if !r.ok() {
					// A client backs off a little after an error, as
					// client-go's callers do; it does not resend this create.
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	return l
}

// stop ends the load once every request in flight is answered and returns
// every outcome.
func (l *load) stop() []outcome {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]outcome(nil), l.outcomes...)
}

// waitEveryWorkerAcked waits until each of the workers has had a create sent
// after since acknowledged: the load is flowing, and no request sent before
// since is still waiting for its answer.
func (l *load) waitEveryWorkerAcked(workers int, since time.Time, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		acked := map[string]bool{}
		l.mu.Lock()
		for _, o := range l.outcomes {
			if o.ok() && !o.started.Before(since) {
				acked[o.name[:3]] = true // "wNN"
			}
		}
		l.mu.Unlock()
		if len(acked) == workers {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s only %d of %d clients had a create acknowledged", timeout, len(acked), workers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ackedSentSince counts the acknowledged creates sent since t.
func (l *load) ackedSentSince(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, o := range l.outcomes {
		if o.ok() && !o.started.Before(t) {
			n++
		}
	}
	return n
}

// answeredBefore keeps the outcomes answered before t.
func answeredBefore(outcomes []outcome, t time.Time) []outcome {
	var kept []outcome
	for _, o := range outcomes {
		if o.started.Add(o.took).Before(t) {
			kept = append(kept, o)
		}
	}
	return kept
}

// tally counts outcomes.
type tally struct {
	total, ok, failed int
	// failures counts the failed requests by what they said.
	failures map[string]int
	// maxOK is the slowest successful request, maxFailed the slowest failed one.
	maxOK, maxFailed time.Duration
}

func tallyOf(outcomes []outcome) tally {
	t := tally{failures: map[string]int{}}
	for _, o := range outcomes {
		t.total++
		if o.ok() {
			t.ok++
			t.maxOK = max(t.maxOK, o.took)
			continue
		}
		t.failed++
		t.maxFailed = max(t.maxFailed, o.took)
		t.failures[o.describe()]++
	}
	return t
}

func (t tally) String() string {
	s := fmt.Sprintf("%d requests, %d succeeded (slowest %s), %d failed", t.total, t.ok, t.maxOK.Round(time.Millisecond), t.failed)
	if t.failed > 0 {
		s += fmt.Sprintf(" (slowest %s)", t.maxFailed.Round(time.Millisecond))
	}
	var lines []string
	for what, n := range t.failures {
		lines = append(lines, fmt.Sprintf("\n    %4d x %s", n, what))
	}
	sort.Strings(lines)
	return s + strings.Join(lines, "")
}
