//go:build integration

package framework

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
)

// RestartAnnex stops annex and starts it again on the same data, port and
// certificates, with extraArgs added to its flags, as a new replica starts;
// it returns once annex reports ready (its /readyz answers 200), with how
// long that took from the start of the new process. The flags stay for the
// rest of the test binary.
func (e *Environment) RestartAnnex(ctx context.Context, timeout time.Duration, extraArgs ...string) (time.Duration, error) {
	return e.restartAnnex(ctx, timeout, func() error { return e.annex.Stop(annexStopTimeout) }, extraArgs)
}

// KillAndRestartAnnex is RestartAnnex after a SIGKILL: annex stops
// wherever it is, with no shutdown.
func (e *Environment) KillAndRestartAnnex(ctx context.Context, timeout time.Duration, extraArgs ...string) (time.Duration, error) {
	return e.restartAnnex(ctx, timeout, e.annex.Kill, extraArgs)
}

func (e *Environment) restartAnnex(ctx context.Context, timeout time.Duration, stop func() error, extraArgs []string) (time.Duration, error) {
	if e.annex == nil {
		return 0, fmt.Errorf("this environment does not run annex")
	}
	probe, err := e.AnnexAdminConfig(fmt.Sprintf("readiness-probe-%d", time.Now().UnixNano()))
	if err != nil {
		return 0, err
	}
	client, err := rest.HTTPClientFor(probe)
	if err != nil {
		return 0, err
	}
	if err := stop(); err != nil {
		return 0, fmt.Errorf("stopping annex: %w", err)
	}
	e.annexArgs = append(e.annexArgs, extraArgs...)
	fmt.Fprintf(e.annexOut, "\n--- annex started again with %s ---\n", strings.Join(extraArgs, " "))
	started := time.Now()
	if e.annex, err = StartProcess(e.annexBin, e.annexArgs, e.Dir, e.annexOut); err != nil {
		return 0, fmt.Errorf("starting annex again: %w", err)
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := e.AnnexRunning(); err != nil {
			return false, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.annexURL()+"/readyz?verbose", nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%d: %s", resp.StatusCode, body)
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return 0, fmt.Errorf("annex was not ready within %s of its start: %w; last /readyz: %s", timeout, err, last)
	}
	return time.Since(started), nil
}

// AnnexRunning returns an error when annex's process has exited.
func (e *Environment) AnnexRunning() error {
	if e.annex == nil {
		return fmt.Errorf("this environment does not run annex")
	}
	if exited, err := e.annex.Exited(); exited {
		return fmt.Errorf("annex exited: %v", err)
	}
	return nil
}

// WaitForAnnexThroughCluster waits until annex's APIService is Available
// and annex answers through the kube-apiserver, as after Start.
func (e *Environment) WaitForAnnexThroughCluster(ctx context.Context) error {
	return e.waitForAnnex(ctx)
}
