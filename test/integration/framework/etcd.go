//go:build integration

package framework

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"annex.dev/annex/test/ports"
	"annex.dev/annex/test/process"
)

// Etcd is the test control plane's etcd run on loopback without TLS; a
// test can stop it and start it again on the same address and data.
type Etcd struct {
	// URL is the client URL, for --etcd-servers or a StorageBackend.
	URL string
	// LogPath receives etcd's output, appended across starts.
	LogPath string
	dir     string
	args    []string
	proc    *process.Process
}

// StartEtcd runs an etcd (from KUBEBUILDER_ASSETS) with its data and log in
// dir, stopped when the test ends, and returns its client URL.
func StartEtcd(t testing.TB, dir string) string {
	return StartEtcdServer(t, dir).URL
}

// StartEtcdServer runs an etcd (from KUBEBUILDER_ASSETS) with its data and
// log in dir, stopped when the test ends.
func StartEtcdServer(t testing.TB, dir string) *Etcd {
	t.Helper()
	e, err := StartEtcdProcess(context.Background(), filepath.Join(dir, "external-etcd"), filepath.Join(dir, "external-etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("stopping etcd: %v", err)
		}
		if t.Failed() {
			t.Logf("etcd log:%s", process.FileTail(e.LogPath, 40))
		}
	})
	return e
}

// StartEtcdProcess runs an etcd (from KUBEBUILDER_ASSETS) on loopback
// without TLS, syncing its WAL as in production, with its data in dataDir
// and its output appended to logPath, and waits until it reports healthy.
// The caller stops it.
func StartEtcdProcess(ctx context.Context, dataDir, logPath string) (*Etcd, error) {
	if err := checkExecutable(filepath.Join(os.Getenv(AssetsEnv), "etcd")); err != nil {
		return nil, fmt.Errorf("etcd from %s: %w", AssetsEnv, err)
	}
	free, err := ports.FreeN(2)
	if err != nil {
		return nil, err
	}
	clientURL := "http://127.0.0.1:" + strconv.Itoa(free[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(free[1])
	e := &Etcd{URL: clientURL, LogPath: logPath, dir: filepath.Dir(dataDir), args: []string{
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + clientURL, "--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
	}}
	if err := e.Start(); err != nil {
		return nil, err
	}
	if err := e.waitHealthy(ctx, 30*time.Second); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

// Start starts a stopped etcd again, with its data; it does not wait.
func (e *Etcd) Start() error {
	log, err := os.OpenFile(e.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// etcd writes to its own copy of the descriptor.
	defer log.Close()
	proc, err := process.Start(filepath.Join(os.Getenv(AssetsEnv), "etcd"), e.args, nil, e.dir, log)
	if err != nil {
		return err
	}
	e.proc = proc
	return nil
}

// waitHealthy waits until etcd's /health says so.
func (e *Etcd) waitHealthy(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if exited, err := e.proc.Exited(); exited {
			return false, fmt.Errorf("etcd exited: %v", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/health", nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("etcd did not become healthy (log %s): %w%s", e.LogPath, err, process.FileTail(e.LogPath, 20))
	}
	return nil
}

// Stop stops etcd; stopping a stopped etcd does nothing.
func (e *Etcd) Stop() error {
	if e.proc == nil {
		return nil
	}
	proc := e.proc
	e.proc = nil
	return proc.Stop(10 * time.Second)
}
