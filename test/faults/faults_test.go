//go:build integration

// Package faults runs annex under faults while the clients of
// test/history write, read and watch one hosted type, and checks the
// recorded history: linearizable against Kubernetes object semantics,
// nothing acknowledged lost, no stale read, no silent gap in any watch.
// TestListStorm, apart, overloads annex with full LISTs of a large type
// beside other clients.
//
// The short version runs in make test-integration; ANNEX_FAULTS_LONG=1
// (make test-faults) runs more faults for longer. On a violation the test
// writes porcupine's visualization and the history as JSON, into
// ANNEX_HISTORY_DIR or a new directory under the system's temp directory,
// and prints their paths.
package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
	"annex.dev/annex/test/annexserver"
	"annex.dev/annex/test/history"
)

// long selects the longer run of make test-faults.
func long() bool { return os.Getenv("ANNEX_FAULTS_LONG") == "1" }

// killSchedule is how many times a test kills a process, how long apart,
// and how long it leaves it down: twice, 4 s apart, down 3 s; or, with
// long(), longKills times, 15 s apart, down 10 s.
func killSchedule(longKills int) (kills int, between, down time.Duration) {
	if long() {
		return longKills, 15 * time.Second, 10 * time.Second
	}
	return 2, 4 * time.Second, 3 * time.Second
}

// annex is one annex-apiserver in standalone mode, on its embedded etcd or
// on the store its extra flags name, which the test kills, stops or starts
// again on the same data.
type annex struct {
	*annexserver.Server
	t *testing.T
}

// startAnnex starts annex in standalone mode, with extraArgs added to its
// flags, and waits until it is ready. Its cleanup is registered after those
// of the stores the test started first, so it runs before them: annex stops
// before its store does.
func startAnnex(t *testing.T, extraArgs ...string) *annex {
	t.Helper()
	return &annex{Server: annexserver.StartT(t, &annexserver.Server{Args: extraArgs}), t: t}
}

// start starts annex again on its data and waits until /readyz answers
// 200; it returns how long that took.
func (a *annex) start() (time.Duration, error) {
	if err := a.Start(context.Background()); err != nil {
		return 0, err
	}
	return a.ReadyIn(), nil
}

// stop stops annex as a rollout does: SIGTERM, and SIGKILL if it has not
// exited within 30s, which fails the test.
func (a *annex) stop() error { return a.Stop() }

// kill ends annex and its embedded etcd with SIGKILL.
func (a *annex) kill() error { return a.Kill() }

// signal sends sig to annex.
func (a *annex) signal(sig syscall.Signal) error { return a.Signal(sig) }

func (a *annex) restConfig() *rest.Config { return annexserver.AdminConfigT(a.t, a.Server) }

// The hosted type the clients share.
var ledgers = schema.GroupVersionResource{Group: "history.example.com", Version: "v1", Resource: "ledgers"}

// clusterType is the HostedResource of a cluster-scoped type of one version
// whose spec holds one string field.
func clusterType(gvr schema.GroupVersionResource, kind, field string) string {
	return fmt.Sprintf(`{
  "apiVersion": "annex.dev/v1alpha1",
  "kind": "HostedResource",
  "metadata": {"name": %q},
  "spec": {
    "group": %q,
    "names": {"kind": %q, "plural": %q},
    "scope": "Cluster",
    "versions": [{
      "name": %q, "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {%q: {"type": "string"}}}
      }}}
    }]
  }
}`, gvr.Resource+"."+gvr.Group, gvr.Group, kind, gvr.Resource, gvr.Version, field)
}

func ledger(string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "history.example.com/v1", "kind": "Ledger", "spec": map[string]any{"note": "history"},
	}}
}

// declareLedgers declares the type and waits until it is served.
func declareLedgers(t *testing.T, cfg *rest.Config) {
	t.Helper()
	declareType(t, cfg, ledgers, clusterType(ledgers, "Ledger", "note"))
}

// waitForLedgers waits until the type is served.
func waitForLedgers(t *testing.T, cfg *rest.Config) {
	t.Helper()
	waitForType(t, cfg, ledgers)
}

// declareType creates the HostedResource hostedResource, given as JSON, and
// waits until its type gvr is served.
func declareType(t *testing.T, cfg *rest.Config, gvr schema.GroupVersionResource, hostedResource string) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hr := &unstructured.Unstructured{}
	if err := json.Unmarshal([]byte(hostedResource), &hr.Object); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hrs := schema.GroupVersionResource{Group: "annex.dev", Version: "v1alpha1", Resource: "hostedresources"}
	if _, err := dyn.Resource(hrs).Create(ctx, hr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForType(t, cfg, gvr)
}

// waitForType waits until the type gvr is served.
func waitForType(t *testing.T, cfg *rest.Config, gvr schema.GroupVersionResource) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var last error
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, last = dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s were not served: %v", gvr.Resource, last)
	}
}

// writeDSNFile writes the DSN of pg to a file only its owner reads, for
// --postgres-dsn-file, and returns its path.
func writeDSNFile(t *testing.T, pg *postgrestest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(path, []byte(pg.DSN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// historyDir is where a failing check writes its files.
func historyDir(t *testing.T) string {
	if dir := os.Getenv("ANNEX_HISTORY_DIR"); dir != "" {
		return filepath.Join(dir, t.Name())
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("annex-history-%s-%d", filepath.Base(t.Name()), time.Now().UnixNano()))
}

// keep writes the history as JSON into ANNEX_HISTORY_DIR, when set, also
// when it checks: the figures of docs/reliability.md come from there.
func keep(t *testing.T, dir string, h *history.History) {
	if os.Getenv("ANNEX_HISTORY_DIR") == "" {
		return
	}
	data, err := json.Marshal(h)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "history.json"), data, 0o644)
	}
	if err != nil {
		t.Errorf("keeping the history: %v", err)
		return
	}
	t.Logf("history: %s", filepath.Join(dir, "history.json"))
}

// TestKillAnnexUnderWrites kills annex (and with it its embedded etcd) with
// SIGKILL several times while four clients write, read and watch, and
// starts it again on the same data each time. The clients' requests fail
// while it is down (their outcome is unknown), their watches end and are
// resumed from the last resourceVersion they delivered; the history must
// check: nothing acknowledged lost, no stale read, no silent gap.
func TestKillAnnexUnderWrites(t *testing.T) {
	kills, between := 3, 4*time.Second
	if long() {
		kills, between = 10, 15*time.Second
	}
	a := startAnnex(t)
	cfg := a.restConfig()
	declareLedgers(t, cfg)

	r := startRun(t, 10*time.Second, cfg)
	for i := 1; i <= kills; i++ {
		time.Sleep(between)
		r.fault("kill -9 annex (%d of %d)", i, kills)
		if err := a.kill(); err != nil {
			t.Fatalf("kill %d: %v", i, err)
		}
		took, err := a.start()
		if err != nil {
			t.Fatalf("after kill %d: %v", i, err)
		}
		r.recovered("annex ready again, %s after its start", took.Round(time.Millisecond))
		t.Logf("kill %d: annex ready again %s after its start", i, took.Round(time.Millisecond))
	}
	r.finish(between, fmt.Sprintf("%d kills of annex with its embedded etcd", kills))
}
