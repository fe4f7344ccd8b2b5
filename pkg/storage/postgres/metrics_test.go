//go:build integration

package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/util/wait"

	"annex.dev/annex/pkg/storage/postgres"
	"annex.dev/annex/pkg/storage/postgres/postgrestest"
)

// gauges gathers reg and returns the value of each gauge of the default
// backend (labelled storage_backend="default") or without labels.
func gauges(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering the metrics: %v", err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := m.GetLabel()
			defaultBackend := len(labels) == 1 && labels[0].GetName() == "storage_backend" && labels[0].GetValue() == "default"
			if g := m.GetGauge(); g != nil && (len(labels) == 0 || defaultBackend) {
				out[f.GetName()] = g.GetValue()
			}
		}
	}
	return out
}

// write makes n revisions in kine as the apiserver writes (a create, then
// updates that compare the key's last revision), spread over 10 keys.
func write(ctx context.Context, t *testing.T, client *clientv3.Client, round, n int) {
	t.Helper()
	last := map[string]int64{}
	for i := range n {
		key := fmt.Sprintf("/registry/test/round-%d/key-%d", round, i%10)
		resp, err := client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", last[key])).
			Then(clientv3.OpPut(key, fmt.Sprintf("value %d", i))).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			t.Fatalf("writing %s: %v", key, err)
		}
		if !resp.Succeeded {
			t.Fatalf("writing %s at revision %d: the comparison failed", key, last[key])
		}
		last[key] = resp.Header.Revision
	}
}

// start runs kine on dsn with the metrics registered in a registry of
// their own.
func start(t *testing.T, dsn string, compactInterval time.Duration) (*postgres.Server, *clientv3.Client, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, client := startKine(t, context.Background(), postgres.Options{DSN: dsn, MetricsRegisterer: reg, CompactInterval: compactInterval})
	return s, client, reg
}

// startKine runs kine with opts, in a socket directory of the test's and
// with progress notifications every second, and connects a client to it.
// The caller closes both.
func startKine(t *testing.T, ctx context.Context, opts postgres.Options) (*postgres.Server, *clientv3.Client) {
	t.Helper()
	opts.SocketDir, opts.NotifyInterval = t.TempDir(), time.Second
	s, err := postgres.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 10 * time.Second})
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	return s, client
}

var statsGauges = []string{
	"annex_postgres_database_size_bytes", "annex_postgres_table_size_bytes", "annex_postgres_current_revision",
	"annex_postgres_compacted_revision", "annex_postgres_compaction_lag_revisions",
}

// checkLag fails unless the lag is current - compacted, and at least the
// 1000 revisions kine never compacts once there are that many.
func checkLag(t *testing.T, m map[string]float64) {
	t.Helper()
	cur, comp, lag := m["annex_postgres_current_revision"], m["annex_postgres_compacted_revision"], m["annex_postgres_compaction_lag_revisions"]
	if lag != cur-comp {
		t.Errorf("compaction lag %v, want current - compacted = %v - %v", lag, cur, comp)
	}
	if cur > 1000 && lag < 1000 {
		t.Errorf("compaction lag %v: kine keeps the latest 1000 revisions", lag)
	}
}

// TestMetrics writes revisions to kine on a real PostgreSQL and reads the
// database's size and kine's compaction lag from the metrics, before and
// after a compaction: first one asked for through the etcd API, with kine's
// periodic compaction off, then kine's periodic compaction, as annex runs it.
func TestMetrics(t *testing.T) {
	pg := postgrestest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Without a compact interval kine compacts only when asked to.
	s, client, reg := start(t, pg.DSN, 0)
	m := gauges(t, reg)
	for _, name := range statsGauges {
		if _, ok := m[name]; !ok {
			t.Errorf("metric %s is missing; got %v", name, m)
		}
	}
	if m["annex_postgres_database_size_bytes"] <= 0 || m["annex_postgres_table_size_bytes"] <= 0 {
		t.Errorf("database size %v, table size %v: want both > 0", m["annex_postgres_database_size_bytes"], m["annex_postgres_table_size_bytes"])
	}
	if m["annex_postgres_compacted_revision"] != 0 {
		t.Errorf("compacted revision of a new database: %v, want 0", m["annex_postgres_compacted_revision"])
	}

	const n = 1200
	write(ctx, t, client, 1, n)
	before := gauges(t, reg)
	t.Logf("after %d writes: %v", n, before)
	checkLag(t, before)
	if before["annex_postgres_current_revision"] < n || before["annex_postgres_compaction_lag_revisions"] < n {
		t.Errorf("after %d writes and no compaction: current revision %v, lag %v; want both at least %d",
			n, before["annex_postgres_current_revision"], before["annex_postgres_compaction_lag_revisions"], n)
	}
	if _, err := client.Compact(ctx, int64(before["annex_postgres_current_revision"])); err != nil {
		t.Fatalf("compacting: %v", err)
	}
	after := gauges(t, reg)
	t.Logf("after a compaction: %v", after)
	checkLag(t, after)
	if after["annex_postgres_compacted_revision"] <= before["annex_postgres_compacted_revision"] ||
		after["annex_postgres_compaction_lag_revisions"] >= before["annex_postgres_compaction_lag_revisions"] {
		t.Errorf("a compaction moved the compacted revision from %v to %v and the lag from %v to %v; want the first up, the second down",
			before["annex_postgres_compacted_revision"], after["annex_postgres_compacted_revision"],
			before["annex_postgres_compaction_lag_revisions"], after["annex_postgres_compaction_lag_revisions"])
	}
	// PostgreSQL's statistics count the rows with a delay (a backend
	// reports its counts when it has been idle for a while).
	if err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(context.Context) (bool, error) {
		m = gauges(t, reg)
		return m["annex_postgres_rows"] > 0, nil
	}); err != nil {
		t.Errorf("annex_postgres_rows never became positive: %v; last metrics %v", err, m)
	}

	// Closing the server unregisters the collector.
	_ = client.Close()
	s.Close()
	for name := range gauges(t, reg) {
		if strings.HasPrefix(name, "annex_postgres_") {
			t.Errorf("metric %s is still registered after the server closed", name)
		}
	}

	// kine's periodic compaction, on the same database: it starts with
	// kine, and each run compacts to the revision that was current at the
	// run before, keeping the latest 1000.
	s, client, reg = start(t, pg.DSN, time.Second)
	defer s.Close()
	defer client.Close()
	write(ctx, t, client, 2, 300)
	first := gauges(t, reg)
	t.Logf("on a new server, after 300 more writes: %v", first)
	checkLag(t, first)
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		m = gauges(t, reg)
		return m["annex_postgres_compacted_revision"] > after["annex_postgres_compacted_revision"], nil
	}); err != nil {
		t.Fatalf("kine's periodic compaction did not move the compacted revision past %v: %v; last metrics %v", after["annex_postgres_compacted_revision"], err, m)
	}
	t.Logf("after a periodic compaction: %v", m)
	checkLag(t, m)
}
