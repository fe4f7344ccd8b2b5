package process

import (
	"strings"
	"testing"
	"time"
)

func TestStopEndsAProcessThatHandlesSIGTERM(t *testing.T) {
	var out LogBuffer
	p, err := Start("sh", []string{"-c", "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.1; done"}, nil, t.TempDir(), &out)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "up") })
	if exited, err := p.Exited(); exited {
		t.Fatalf("exited before Stop: %v", err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !strings.Contains(out.String(), "bye") {
		t.Errorf("output %q: the process did not see SIGTERM", out.String())
	}
	if err := p.Stop(time.Second); err == nil || !strings.Contains(err.Error(), "already exited") {
		t.Errorf("a second Stop: got %v, want an error saying it had already exited", err)
	}
}

func TestStopKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	var out LogBuffer
	p, err := Start("sh", []string{"-c", "trap '' TERM; echo up; while :; do sleep 0.1; done"}, nil, t.TempDir(), &out)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "up") })
	err = p.Stop(300 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "was killed") {
		t.Errorf("Stop: got %v, want an error saying it was killed", err)
	}
	if exited, _ := p.Exited(); !exited {
		t.Error("the process is still running after Stop")
	}
}

func TestExitedReportsAnExitOfItsOwn(t *testing.T) {
	p, err := Start("sh", []string{"-c", "exit 3"}, []string{}, t.TempDir(), &LogBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the process did not exit")
	}
	exited, err := p.Exited()
	if !exited || err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Exited() = %v, %v; want true and exit status 3", exited, err)
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill of an exited process: %v", err)
	}
}

func TestStartUsesExactlyTheGivenEnvironment(t *testing.T) {
	t.Setenv("ANNEX_PROCESS_TEST", "inherited")
	var out LogBuffer
	p, err := Start("sh", []string{"-c", `echo "[$ANNEX_PROCESS_TEST]"`}, []string{"PATH=/usr/bin:/bin"}, t.TempDir(), &out)
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if got := strings.TrimSpace(out.String()); got != "[]" {
		t.Errorf("the child saw %s, want none of the parent's environment", got)
	}
}

func TestTail(t *testing.T) {
	if got := Tail("log", "", 3); got != "" {
		t.Errorf("Tail of nothing = %q, want \"\"", got)
	}
	got := Tail("annex.log", "1\n2\n3\n4\n", 2)
	want := "\n--- last 2 lines of annex.log ---\n3\n4\n---"
	if got != want {
		t.Errorf("Tail = %q, want %q", got, want)
	}
	if got := FileTail("/nonexistent/annex.log", 5); got != "" {
		t.Errorf("FileTail of a missing file = %q, want \"\"", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("timed out")
}
