//go:build integration

package faults

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
)

// TestKillPostgres kills the PostgreSQL server of an annex that keeps its
// data there (standalone, --postgres-dsn-file) with SIGKILL, the postmaster
// and every backend at once, while the clients write, read and watch; it
// leaves it down a while and starts it again on the same data (PostgreSQL
// recovers from its write-ahead log). annex itself keeps running. The
// history must check, annex must acknowledge writes again after each
// restart without being restarted itself, and its watchers must go on.
//
// While PostgreSQL is down, requests of every kind (get, list, create,
// delete, sent with a plain HTTP client) must be answered 503 with
// Retry-After, whose body names neither the database's user, its name nor
// its address.
//
// The kill is a crash of the database's processes, not of its machine: what
// PostgreSQL had written is in the kernel's page cache and survives, so the
// test's fsync=off changes nothing here.
func TestKillPostgres(t *testing.T) {
	pg := postgrestest.Start(t)
	a := startAnnex(t, "--postgres-dsn-file="+writeDSNFile(t, pg))
	cfg := a.restConfig()
	declareLedgers(t, cfg)
	killPostgresUnderWrites(t, pg, cfg, fmt.Sprintf("https://127.0.0.1:%d", a.Port), a.Process().Exited)
}

// killPostgresUnderWrites runs the clients on cfg, whose server is host,
// and kills pg twice (six times with long()), starting it again each time.
// exited says whether annex exited.
func killPostgresUnderWrites(t *testing.T, pg *postgrestest.Server, cfg *rest.Config, host string, exited func() (bool, error)) {
	t.Helper()
	kills, between, down := killSchedule(6)
	// What an answer must not name: the database's user, name and address.
	secrets := []string{"user=", "database=", fmt.Sprintf("127.0.0.1:%d", pg.Port), strconv.Itoa(pg.Port), "failed to connect", "connection refused"}

	r := startRun(t, 10*time.Second, cfg)
	for i := 1; i <= kills; i++ {
		time.Sleep(between)
		r.fault("kill -9 PostgreSQL (%d of %d)", i, kills)
		pg.Kill(t)
		downSince := time.Now()
		// While it is down, annex answers 503 with Retry-After, and names
		// nothing of the database.
		answers, problems := probeStoreDown(cfg, host, downSince.Add(down-500*time.Millisecond), secrets)
		for _, p := range problems {
			t.Errorf("kill %d, PostgreSQL down: %s", i, p)
		}
		for _, a := range answers {
			t.Logf("kill %d, PostgreSQL down: %s answered %d (Retry-After %q) in %s: %s", i, a.what, a.code, a.retryAfter,
				a.took.Round(time.Millisecond), strings.TrimSpace(a.body))
		}
		time.Sleep(time.Until(downSince.Add(down)))
		started := time.Now()
		pg.Restart(t)
		ready := time.Since(started).Round(time.Millisecond)
		r.recovered("PostgreSQL ready again, %s after its start", ready)
		took, err := r.servesWrites(60 * time.Second)
		if err != nil {
			t.Fatalf("after kill %d and PostgreSQL's restart: %v", i, err)
		}
		if gone, err := exited(); gone {
			t.Fatalf("annex exited after PostgreSQL was killed: %v", err)
		}
		t.Logf("kill %d: PostgreSQL down %s, ready again %s after its start; annex acknowledged a write %s later",
			i, down, ready, took.Round(time.Millisecond))
	}
	// That the kills reached annex is shown by the probes above (each
	// request kind answered 503 while PostgreSQL was down), not by the
	// clients' failed writes: client-go sends a write answered 503 with
	// Retry-After again, up to ten times, so a client's write that meets
	// PostgreSQL down usually succeeds once it is back. Only a write in
	// flight at the kill fails, and whether one is depends on timing.
	r.finish(between, fmt.Sprintf("%d kills of PostgreSQL under annex", kills))
	if gone, err := exited(); gone {
		t.Fatalf("annex exited: %v", err)
	}
}
