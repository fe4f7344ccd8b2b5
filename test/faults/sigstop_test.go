//go:build integration

package faults

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopAnnex stops annex (with its embedded etcd) with SIGSTOP for longer
// than the clients' timeout, several times, and lets it go on with SIGCONT.
// While it is stopped the kernel still accepts connections and takes in
// requests, which annex reads only when it goes on, after the clients gave
// up on them: writes whose outcome the client never learnt may be applied
// then. The history must check, annex must acknowledge writes again soon
// after each SIGCONT, and its watchers, stalled meanwhile, must go on.
func TestStopAnnex(t *testing.T) {
	const opTimeout = 3 * time.Second
	stops, between, paused := 2, 4*time.Second, 3*opTimeout
	if long() {
		stops, between, paused = 5, 15*time.Second, 20*time.Second
	}
	a := startAnnex(t)
	cfg := a.restConfig()
	declareLedgers(t, cfg)

	r := startRun(t, opTimeout, cfg)
	for i := 1; i <= stops; i++ {
		time.Sleep(between)
		r.fault("SIGSTOP annex (%d of %d) for %s", i, stops, paused)
		if err := a.signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(paused)
		if err := a.signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		r.recovered("SIGCONT annex")
		took, err := r.servesWrites(30 * time.Second)
		if err != nil {
			t.Fatalf("after SIGCONT %d: %v", i, err)
		}
		t.Logf("stop %d: annex stopped %s; a write acknowledged %s after SIGCONT", i, paused, took.Round(time.Millisecond))
	}
	rep := r.finish(between, fmt.Sprintf("%d stops of annex (SIGSTOP %s, clients' timeout %s)", stops, paused, opTimeout))
	// The stops outlasted the clients' timeout: requests timed out.
	timedOut := 0
	for cause, n := range rep.Causes {
		if strings.Contains(cause, "deadline exceeded") || strings.Contains(strings.ToLower(cause), "timeout") {
			timedOut += n
		}
	}
	if timedOut == 0 {
		t.Errorf("no write timed out while annex was stopped: the stops did not outlast the clients' timeout")
	}
}
