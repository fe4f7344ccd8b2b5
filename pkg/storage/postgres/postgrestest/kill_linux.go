//go:build linux

package postgrestest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// prSetChildSubreaper is prctl's PR_SET_CHILD_SUBREAPER.
const prSetChildSubreaper = 36

var adoptOnce sync.Once

// adoptOrphans makes the test process the subreaper of its orphaned
// descendants. pg_ctl leaves the postmaster it starts to be adopted, and not
// every init reaps what it adopts (a container's first process often does
// not): a killed postmaster left a zombie keeps its PID alive, and
// PostgreSQL refuses to start on a data directory whose postmaster.pid names
// a living process. Adopted here, Kill and Stop reap it.
func adoptOrphans() {
	adoptOnce.Do(func() {
		_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	})
}

// postmasterPID reads the postmaster's PID from the data directory's
// postmaster.pid (its first line).
func postmasterPID(data string) (int, error) {
	raw, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("postmaster.pid: no PID on its first line: %q", first)
	}
	return pid, nil
}

// killServer sends SIGKILL to the postmaster and all its backends at once
// (pg_ctl starts the postmaster in a session of its own, so they share its
// process group) and waits until every one of them is gone.
func killServer(data string) error {
	pid, err := postmasterPID(data)
	if err != nil {
		return err
	}
	pgid, err := syscall.Getpgid(pid)
	if err != nil {
		return fmt.Errorf("the postmaster %d: %w", pid, err)
	}
	if pgid != pid {
		return fmt.Errorf("the postmaster %d does not lead its process group (%d): its backends cannot be killed with it", pid, pgid)
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("SIGKILL to the postmaster's process group %d: %w", pgid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		reap(pgid)
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of the postmaster's group %d are still there 10s after SIGKILL (zombies this process cannot reap?)", pgid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reap collects the exit status of this process's children in process
// group pgid that have ended.
func reap(pgid int) {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-pgid, &ws, syscall.WNOHANG, nil)
		if err != nil || got <= 0 {
			return
		}
	}
}

// processAlive says whether process pid runs (and is not a zombie).
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command's closing parenthesis.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}
