//go:build integration

package framework

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"annex.dev/annex/test/process"
)

// Etcd is the test control plane's etcd run on loopback without TLS; a
// test can stop it and start it again on the same address and data.
type Etcd struct {
	// URL is the client URL, for --etcd-servers or a StorageBackend.
	URL  string
	dir  string
	args []string
	log  *os.File
	proc *process.Process
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
	clientPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	peerPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	clientURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	logPath := filepath.Join(dir, "external-etcd.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	e := &Etcd{URL: clientURL, dir: dir, log: log, args: []string{
		"--data-dir=" + filepath.Join(dir, "external-etcd"),
		"--listen-client-urls=" + clientURL, "--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
	}}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("stopping etcd: %v", err)
		}
		_ = log.Close()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			if len(data) > 4000 {
				data = data[len(data)-4000:]
			}
			t.Logf("etcd log (%s), last lines:\n%s", logPath, data)
		}
	})
	return e
}

// Start starts a stopped etcd again, with its data.
func (e *Etcd) Start() error {
	proc, err := process.Start(filepath.Join(os.Getenv(AssetsEnv), "etcd"), e.args, nil, e.dir, e.log)
	if err != nil {
		return err
	}
	e.proc = proc
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
