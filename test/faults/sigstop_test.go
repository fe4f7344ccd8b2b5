//go:build integration

package faults

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// TestStopAnnex stops annex (with its embedded etcd) with SIGSTOP for longer
// than the clients' timeout, several times, and lets it go on with SIGCONT.
// While it is stopped the kernel still accepts connections and takes in
// requests, which annex reads only when it goes on, after the clients gave
// up on them: writes whose outcome the client never learnt may be applied
// then. The history must check, annex must acknowledge writes again soon
// after each SIGCONT, and its watchers, stalled meanwhile, must go on.
func TestStopAnnex(t *testing.T) {
	a := startAnnex(t)
	cfg := a.restConfig()
	declareLedgers(t, cfg)
	stopAnnexUnderWrites(t, cfg, a.signal, "annex")
}

// stopAnnexUnderWrites runs the clients on cfg and stops annex with
// SIGSTOP (sent with signal) longer than their timeout, twice (five times
// with long()), letting it go on with SIGCONT each time; what names annex
// in the marks and logs.
func stopAnnexUnderWrites(t *testing.T, cfg *rest.Config, signal func(syscall.Signal) error, what string) {
	t.Helper()
	const opTimeout = 3 * time.Second
	stops, between, paused := 2, 4*time.Second, 3*opTimeout
	if long() {
		stops, between, paused = 5, 15*time.Second, 20*time.Second
	}
	r := startRun(t, opTimeout, cfg)
	for i := 1; i <= stops; i++ {
		time.Sleep(between)
		r.fault("SIGSTOP %s (%d of %d) for %s", what, i, stops, paused)
		if err := signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(paused)
		if err := signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		r.recovered("SIGCONT %s", what)
		took, err := r.servesWrites(30 * time.Second)
		if err != nil {
			t.Fatalf("after SIGCONT %d: %v", i, err)
		}
		t.Logf("stop %d: %s stopped %s; a write acknowledged %s after SIGCONT", i, what, paused, took.Round(time.Millisecond))
	}
	rep := r.finish(between, fmt.Sprintf("%d stops of %s (SIGSTOP %s, clients' timeout %s)", stops, what, paused, opTimeout))
	// The stops outlasted the clients' timeout: requests timed out.
	timedOut := 0
	for cause, n := range rep.Causes {
		if strings.Contains(cause, "deadline exceeded") || strings.Contains(strings.ToLower(cause), "timeout") {
			timedOut += n
		}
	}
	if timedOut == 0 {
		t.Errorf("no write timed out while %s was stopped: the stops did not outlast the clients' timeout", what)
	}
}
