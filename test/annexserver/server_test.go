//go:build integration

package annexserver

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServerLifecycle runs the annex binary through what the suites do with
// it: start, stop, start again on the same data, kill, pause.
func TestServerLifecycle(t *testing.T) {
	s := &Server{Dir: t.TempDir()}
	Cleanup(t, s)
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s.ReadyIn() <= 0 {
		t.Errorf("ReadyIn() = %s after a start", s.ReadyIn())
	}
	port := s.Port
	if err := s.Restart(ctx, "--v=2"); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if s.Port != port {
		t.Errorf("the port changed across a restart: %d, then %d", port, s.Port)
	}
	if got := strings.Count(s.Log(), "annex started: "); got != 2 {
		t.Errorf("the log marks %d starts, want 2", got)
	}
	if !strings.Contains(s.LogLines("annex started: "), "--v=2") {
		t.Errorf("the second start did not get the added flag:\n%s", s.LogLines("annex started: "))
	}

	if err := s.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Stop continues a paused annex before SIGTERM, so it stops in time.
	if err := s.Stop(); err != nil {
		t.Fatalf("stopping a paused annex: %v", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.ExitedOnItsOwn(); err != nil {
		t.Errorf("a killed annex counts as exited on its own: %v", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatalf("start after a kill: %v", err)
	}
}

// TestStartFailsFastWithTheLog starts annex with a flag it refuses: Start
// fails at once, not after the ready timeout, and says why.
func TestStartFailsFastWithTheLog(t *testing.T) {
	s := &Server{Dir: t.TempDir(), Args: []string{"--no-such-flag"}}
	started := time.Now()
	err := s.Start(context.Background())
	if err == nil {
		_ = s.Stop()
		t.Fatal("annex started with an unknown flag")
	}
	if took := time.Since(started); took > 30*time.Second {
		t.Errorf("Start took %s to notice the exit", took)
	}
	if !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Errorf("the error does not say that annex exited and why:\n%v", err)
	}
}

// TestAnExitOfItsOwnIsAnError kills annex behind the Server's back: Stop
// reports it, as a test's cleanup must.
func TestAnExitOfItsOwnIsAnError(t *testing.T) {
	s := &Server{Dir: t.TempDir()}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(s.Process().Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.Process().Done()
	if err := s.ExitedOnItsOwn(); err == nil {
		t.Error("ExitedOnItsOwn: nil after an exit the test did not cause")
	}
	if err := s.Stop(); err == nil || !strings.Contains(err.Error(), "exited on its own") {
		t.Errorf("Stop: got %v, want an error saying annex exited on its own", err)
	}
}
