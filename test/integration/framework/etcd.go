//go:build integration

package framework

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// StartEtcd runs the test control plane's etcd (from KUBEBUILDER_ASSETS) on
// loopback, without TLS, with its data and log in dir, and stops it when the
// test ends. It returns the client URL, for annex's --etcd-servers.
func StartEtcd(t testing.TB, dir string) string {
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
	proc, err := StartProcess(filepath.Join(os.Getenv(AssetsEnv), "etcd"), []string{
		"--data-dir=" + filepath.Join(dir, "external-etcd"),
		"--listen-client-urls=" + clientURL, "--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
	}, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proc.Stop(10 * time.Second); err != nil {
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
	return clientURL
}
