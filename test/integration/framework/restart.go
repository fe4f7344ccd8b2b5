//go:build integration

package framework

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RestartAnnex stops annex and starts it again on the same data, port and
// certificates, with extraArgs added to its flags, as a new replica starts;
// it returns once annex reports ready (its /readyz answers 200), with how
// long that took from the start of the new process. The flags stay for the
// rest of the test binary.
func (e *Environment) RestartAnnex(ctx context.Context, timeout time.Duration, extraArgs ...string) (time.Duration, error) {
	return e.restartAnnex(ctx, timeout, func() error { return e.annex.Stop() }, extraArgs)
}

// KillAndRestartAnnex is RestartAnnex after a SIGKILL: annex stops
// wherever it is, with no shutdown.
func (e *Environment) KillAndRestartAnnex(ctx context.Context, timeout time.Duration, extraArgs ...string) (time.Duration, error) {
	return e.restartAnnex(ctx, timeout, func() error { return e.annex.Kill() }, extraArgs)
}

// RestartAnnexAfter stops annex, runs while (on its data, with no process
// holding it), and starts annex again as RestartAnnex does. A failure of
// while leaves annex stopped.
func (e *Environment) RestartAnnexAfter(ctx context.Context, timeout time.Duration, while func() error) (time.Duration, error) {
	return e.restartAnnex(ctx, timeout, func() error {
		if err := e.annex.Stop(); err != nil {
			return err
		}
		return while()
	}, nil)
}

func (e *Environment) restartAnnex(ctx context.Context, timeout time.Duration, stop func() error, extraArgs []string) (time.Duration, error) {
	if e.annex == nil {
		return 0, fmt.Errorf("this environment does not run annex")
	}
	if err := stop(); err != nil {
		return 0, fmt.Errorf("stopping annex: %w", err)
	}
	e.annex.Args = append(e.annex.Args, extraArgs...)
	e.annex.ReadyTimeout = timeout
	if err := e.annex.Start(ctx); err != nil {
		return 0, err
	}
	return e.annex.ReadyIn(), nil
}

// AnnexRunning returns an error when annex's process has exited.
func (e *Environment) AnnexRunning() error {
	if e.annex == nil {
		return fmt.Errorf("this environment does not run annex")
	}
	if err := e.annex.Running(); err != nil {
		return fmt.Errorf("annex exited: %v", err)
	}
	return nil
}

// WaitForAnnexThroughCluster waits until annex's APIService is Available
// and annex answers through the kube-apiserver, as after Start.
func (e *Environment) WaitForAnnexThroughCluster(ctx context.Context) error {
	return e.waitForAnnex(ctx)
}

// APIServerPid is the process id of the kube-apiserver, for its figures
// under /proc: the kube-apiserver process whose flags name its port.
func (e *Environment) APIServerPid() (int, error) {
	port := "--secure-port=" + e.env.ControlPlane.APIServer.SecureServing.ListenAddr.Port
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if filepath.Base(args[0]) == "kube-apiserver" && slices.Contains(args, port) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no kube-apiserver process with %s", port)
}

// SignalAnnex sends sig to annex's process: SIGSTOP and SIGCONT pause it
// and let it go on.
func (e *Environment) SignalAnnex(sig syscall.Signal) error {
	if e.annex == nil {
		return fmt.Errorf("this environment does not run annex")
	}
	return e.annex.Signal(sig)
}
