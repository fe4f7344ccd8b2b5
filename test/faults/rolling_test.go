//go:build integration

package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
	"annex.dev/annex/test/integration/framework"
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

// TestRollingRestartThroughTheAggregator is TestRollingRestartOnPostgres as
// a cluster's clients meet it: two annex replicas on one PostgreSQL
// database, run as the Helm chart runs them (--leader-elect, a shutdown
// delay), behind annex's APIService and a Service whose connections go to
// the replicas whose endpoints are ready, with the clients and watchers on
// the kube-apiserver. Each replica is restarted in turn as a rollout
// restarts a pod: its endpoint marked terminating and SIGTERM at once,
// annex serving on for its --shutdown-delay-duration, then started again
// and marked ready once ready. The history must check, and no client may
// see an error but the writes a GOAWAY catches on the wire
// (maxGoawayRacesPerRestart): no write refused, none of unknown outcome
// for another cause.
func TestRollingRestartThroughTheAggregator(t *testing.T) {
	rounds, between := 1, 4*time.Second
	if long() {
		rounds, between = 4, 10*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pg := postgrestest.Start(t)
	env, err := framework.StartReplicas(ctx, 2, "--postgres-dsn-file="+writeDSNFile(t, pg), "--leader-elect", "--shutdown-delay-duration=2s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			env.KeepDir = true
			t.Logf("the logs of annex's replicas and of the kube-apiserver are in %s", env.Dir)
		}
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	declareLedgers(t, env.Config)

	r := startRun(t, 10*time.Second, env.Config)
	restarts := 0
	for round := 1; round <= rounds; round++ {
		for i := range env.Replicas() {
			time.Sleep(between)
			restarts++
			r.fault("replica %d terminating and SIGTERM (round %d of %d)", i, round, rounds)
			took, err := env.RollReplica(ctx, i, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			r.recovered("replica %d ready again, %s after its start", i, took.Round(time.Millisecond))
			t.Logf("round %d: replica %d ready again %s after its start", round, i, took.Round(time.Millisecond))
		}
	}
	rep := r.finish(between, fmt.Sprintf("%d rolling restarts of two replicas behind the aggregator (%d restarts)", rounds, restarts))
	if n := goawayRaces(rep.Causes); rep.RefusedWrites > 0 || rep.UnknownWrites > n || n > maxGoawayRacesPerRestart*restarts {
		t.Errorf("the clients saw errors during the rollout: %d writes of unknown outcome and %d refused (%v); want none but writes the aggregator could not retry after a GOAWAY, at most %d per restart",
			rep.UnknownWrites, rep.RefusedWrites, rep.Causes, maxGoawayRacesPerRestart)
	}
}

// maxGoawayRacesPerRestart bounds the writes a restart may fail through
// the aggregator. A replica ends each HTTP/2 connection with a GOAWAY when
// its shutdown delay is over. Through a Service, the aggregator's
// connection stays with the replica it was opened to (kube-proxy, and the
// test's proxy, leave established connections alone), so the aggregator
// is still sending on it: a request it sends after the replica wrote the
// GOAWAY is not processed, and the aggregator's HTTP/2 client cannot send
// it again when it has a body (it cannot read the body again). The client
// gets a 503 naming the GOAWAY for a write the replica never processed. One
// GOAWAY per connection; the writes in flight on the wire at that instant
// are few.
const maxGoawayRacesPerRestart = 2

// goawayRaces counts the writes of unknown outcome whose error names the
// GOAWAY.
func goawayRaces(causes map[string]int) int {
	n := 0
	for cause, c := range causes {
		if strings.HasPrefix(cause, "unknown: ") && strings.Contains(cause, "GOAWAY") {
			n += c
		}
	}
	return n
}
