//go:build integration

package rollout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"annex.dev/annex/test/integration/framework"
)

// stopTimeout bounds a replica's graceful shutdown: the shutdown delay, the
// watch termination grace period and a margin.
const stopTimeout = 30 * time.Second

// replica is one annex process, restartable with the same arguments, as a
// pod of the chart's Deployment is.
type replica struct {
	name    string
	bin     string
	port    int
	dir     string
	logPath string
	log     *os.File
	// shutdownDelay is --shutdown-delay-duration of the running process.
	shutdownDelay time.Duration
	// common are the flags every replica shares.
	common []string

	proc  *framework.Process
	ready *http.Client
}

// newReplica prepares (but does not start) a replica serving on a free port
// of 127.0.0.1 with the shared flags.
func newReplica(t *testing.T, name, dir string, common []string, caPEM []byte) *replica {
	t.Helper()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, bin: os.Getenv(framework.AnnexBinEnv), port: port, dir: filepath.Join(dir, name), common: common}
	if r.bin == "" {
		t.Fatalf("%s is not set: build annex with `make build` and point it at bin/annex-apiserver", framework.AnnexBinEnv)
	}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	r.logPath = filepath.Join(dir, "annex-"+name+".log")
	if r.log, err = os.Create(r.logPath); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	r.ready = &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	t.Cleanup(func() {
		if r.proc != nil {
			if exited, err := r.proc.Exited(); exited {
				t.Errorf("annex %s exited on its own: %v", r.name, err)
			} else if err := r.proc.Stop(stopTimeout); err != nil {
				t.Errorf("stopping annex %s: %v", r.name, err)
			}
		}
		_ = r.log.Close()
		if t.Failed() {
			t.Logf("annex %s log: %s%s", r.name, r.logPath, tail(r.logPath, 40))
		}
	})
	return r
}

// addr is where the replica serves.
func (r *replica) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *replica) args() []string {
	return append([]string{
		"--secure-port=" + strconv.Itoa(r.port),
		"--data-dir=" + r.dir,
		"--shutdown-delay-duration=" + r.shutdownDelay.String(),
	}, r.common...)
}

// start runs the replica with shutdownDelay as --shutdown-delay-duration.
func (r *replica) start(shutdownDelay time.Duration) error {
	r.shutdownDelay = shutdownDelay
	fmt.Fprintf(r.log, "=== %s test: starting annex %s with %s\n", time.Now().Format(time.RFC3339Nano), r.name, strings.Join(r.args(), " "))
	proc, err := framework.StartProcess(r.bin, r.args(), r.dir, r.log)
	if err != nil {
		return fmt.Errorf("starting annex %s: %w", r.name, err)
	}
	r.proc = proc
	return nil
}

// stop sends SIGTERM and waits until the process has exited, as the kubelet
// does within the pod's grace period.
func (r *replica) stop() (time.Duration, error) {
	fmt.Fprintf(r.log, "=== %s test: SIGTERM to annex %s\n", time.Now().Format(time.RFC3339Nano), r.name)
	start := time.Now()
	err := r.proc.Stop(stopTimeout)
	r.proc = nil
	if err != nil {
		return time.Since(start), fmt.Errorf("stopping annex %s: %w", r.name, err)
	}
	return time.Since(start), nil
}

// waitReady waits until the replica's own /readyz answers 200.
func (r *replica) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if exited, err := r.proc.Exited(); exited {
			return fmt.Errorf("annex %s exited before it was ready: %v%s", r.name, err, tail(r.logPath, 30))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+r.addr()+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := r.ready.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("annex %s was not ready within %s%s", r.name, timeout, tail(r.logPath, 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of the file at path, to append to a message.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil || len(data) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n--- last lines ---\n" + strings.Join(lines, "\n") + "\n---"
}
