//go:build integration

package faults

import (
	"fmt"
	"testing"
	"time"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
)

// TestRollingRestartOnPostgres runs two annex replicas (standalone, each
// with its own data directory and certificates) on one PostgreSQL
// database, with the clients and watchers spread over both, and restarts
// them one after the other as a rollout does: SIGTERM, wait until the
// replica has exited, start it again, wait until it is ready, then the
// other. The history, across both replicas, must check: a write
// acknowledged by one replica is seen by a read on the other that starts
// after it, and each watch, on either replica, delivers every write.
func TestRollingRestartOnPostgres(t *testing.T) {
	rounds, between := 1, 4*time.Second
	if long() {
		rounds, between = 4, 10*time.Second
	}
	pg := postgrestest.Start(t)
	dsnFile := writeDSNFile(t, pg)
	replicas := []*annex{startAnnex(t, "--postgres-dsn-file="+dsnFile), startAnnex(t, "--postgres-dsn-file="+dsnFile)}
	declareLedgers(t, replicas[0].restConfig())
	// The second replica learns of the type from the database.
	waitForLedgers(t, replicas[1].restConfig())

	r := startRun(t, 10*time.Second, replicas[0].restConfig(), replicas[1].restConfig())
	restarts := 0
	for round := 1; round <= rounds; round++ {
		for i, a := range replicas {
			time.Sleep(between)
			restarts++
			r.fault("SIGTERM replica %d (round %d of %d)", i, round, rounds)
			stopping := time.Now()
			if err := a.stop(); err != nil {
				t.Fatalf("stopping replica %d: %v", i, err)
			}
			stopped := time.Since(stopping)
			took, err := a.start()
			if err != nil {
				t.Fatalf("starting replica %d again: %v", i, err)
			}
			r.recovered("replica %d ready again, %s after its start", i, took.Round(time.Millisecond))
			t.Logf("round %d: replica %d stopped %s after SIGTERM, ready again %s after its start",
				round, i, stopped.Round(time.Millisecond), took.Round(time.Millisecond))
		}
	}
	r.finish(between, fmt.Sprintf("%d rolling restarts of two replicas on PostgreSQL (%d restarts)", rounds, restarts))
}
