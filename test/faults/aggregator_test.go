//go:build integration

package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"annex.dev/annex/test/integration/framework"
)

// TestKillAnnexThroughTheAggregator is TestKillAnnexUnderWrites with the
// clients and watchers talking to a real kube-apiserver, whose aggregator
// proxies the hosted type to annex through its APIService, as every client
// of a cluster does. annex (with its embedded etcd) is killed with SIGKILL
// and started again on its data; meanwhile the aggregator answers the
// clients itself: 503 "service unavailable" when it did not send a request
// on (refused), its proxy error otherwise (of unknown outcome when the
// connection was lost during the request). The history must check, and
// writes must be acknowledged through the aggregator again after each kill.
func TestKillAnnexThroughTheAggregator(t *testing.T) {
	kills, between := 2, 4*time.Second
	if long() {
		kills, between = 6, 15*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env, err := framework.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			env.KeepDir = true
			t.Logf("annex's log: %s; the kube-apiserver's: %s", env.AnnexLog, env.APIServerLog)
		}
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	cfg := env.Config
	declareLedgers(t, cfg)

	r := startRun(t, 10*time.Second, cfg)
	for i := 1; i <= kills; i++ {
		time.Sleep(between)
		r.fault("kill -9 annex behind the aggregator (%d of %d)", i, kills)
		took, err := env.KillAndRestartAnnex(ctx, time.Minute)
		if err != nil {
			t.Fatalf("after kill %d: %v", i, err)
		}
		r.recovered("annex ready again, %s after its start", took.Round(time.Millisecond))
		through, err := r.servesWrites(60 * time.Second)
		if err != nil {
			t.Fatalf("after kill %d, through the aggregator: %v", i, err)
		}
		t.Logf("kill %d: annex ready again %s after its start; a write acknowledged through the aggregator %s later",
			i, took.Round(time.Millisecond), through.Round(time.Millisecond))
	}
	r.finish(between, fmt.Sprintf("%d kills of annex behind the aggregator", kills))
}
