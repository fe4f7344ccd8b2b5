//go:build integration

package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"annex.dev/annex/test/integration/framework"
)

// TestKillEtcdLeader runs annex on an external etcd cluster of three
// members (separate processes, mutual TLS) and kills the cluster's leader
// with SIGKILL while the clients write, read and watch; once the two members
// left have elected a new leader, and a while later, it starts the killed
// member again on its data and waits until it has caught up. Writes that
// were on their way through the dead leader fail (their outcome is
// unknown); the history must check, and writes and watches must go on.
func TestKillEtcdLeader(t *testing.T) {
	cluster := framework.StartEtcdCluster(t, 3)
	a := startAnnex(t, etcdClusterFlags(cluster)...)
	cfg := a.restConfig()
	declareLedgers(t, cfg)
	killEtcdLeaderUnderWrites(t, cluster, cfg, a.Process().Exited)
}

// etcdClusterFlags are annex's flags for an external etcd cluster.
func etcdClusterFlags(cluster *framework.EtcdCluster) []string {
	return []string{
		"--etcd-servers=" + strings.Join(cluster.ClientURLs(), ","),
		"--etcd-cafile=" + cluster.CAFile, "--etcd-certfile=" + cluster.CertFile, "--etcd-keyfile=" + cluster.KeyFile,
	}
}

// killEtcdLeaderUnderWrites runs the clients on cfg and kills the leader of
// cluster twice (five times with long()), starting it again each time once
// a new leader is elected. exited says whether annex exited.
func killEtcdLeaderUnderWrites(t *testing.T, cluster *framework.EtcdCluster, cfg *rest.Config, exited func() (bool, error)) {
	t.Helper()
	kills, between, down := killSchedule(5)
	ctx := context.Background()
	r := startRun(t, 10*time.Second, cfg)
	for i := 1; i <= kills; i++ {
		time.Sleep(between)
		leader, err := cluster.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r.fault("kill -9 the etcd leader %s (%d of %d)", leader.Name, i, kills)
		killed := time.Now()
		if err := leader.Kill(); err != nil {
			t.Fatal(err)
		}
		var elected time.Duration
		for {
			if l, err := cluster.Leader(ctx); err == nil && l != leader {
				elected = time.Since(killed)
				r.mark("%s elected leader", l.Name)
				break
			}
			if time.Since(killed) > 30*time.Second {
				t.Fatalf("the two members left elected no leader within 30s of kill %d", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(down)
		if err := leader.Restart(); err != nil {
			t.Fatal(err)
		}
		hctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err = cluster.WaitHealthy(hctx)
		cancel()
		if err != nil {
			t.Fatalf("after kill %d: %v", i, err)
		}
		r.recovered("%s back and caught up", leader.Name)
		took, err := r.servesWrites(60 * time.Second)
		if err != nil {
			t.Fatalf("after kill %d: %v", i, err)
		}
		t.Logf("kill %d: leader %s killed; a new leader %s later; %s down %s, then caught up; a write acknowledged %s after",
			i, leader.Name, elected.Round(time.Millisecond), leader.Name, down, took.Round(time.Millisecond))
	}
	r.finish(between, fmt.Sprintf("%d kills of the etcd leader under annex", kills))
	if gone, err := exited(); gone {
		t.Fatalf("annex exited: %v", err)
	}
}
