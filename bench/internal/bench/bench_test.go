package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestShapeSizes(t *testing.T) {
	// The issue asks for about 1 KiB (report, flat) and about 10 KiB
	// (report-large) of JSON; metadata comes on top.
	for _, tc := range []struct {
		s        shape
		min, max int
	}{
		{shapeReport, 900, 2000},
		{shapeReportLarge, 8000, 14000},
		{shapeFlat, 1024, 1400},
		{shapeConfigMap, 1024, 1400},
	} {
		if n := jsonSize(tc.s); n < tc.min || n > tc.max {
			t.Errorf("%s is %d bytes as JSON, want %d to %d", tc.s.Name, n, tc.min, tc.max)
		}
	}
}

func TestQuantile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	s := summarise(d)
	if s.P50 != 100 || s.P99 != 198 || s.Max != 200 || s.N != 200 {
		t.Errorf("got %+v", s)
	}
	// With fewer than 100 samples p99 is the maximum.
	if s := summarise(d[:3]); s.P99 != 3 {
		t.Errorf("p99 of 3 samples: got %v, want the maximum 3", s.P99)
	}
}

func TestParseMetrics(t *testing.T) {
	body := []byte(`# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.2345e+08
go_memstats_heap_inuse_bytes{foo="bar"} 7
go_memstats_heap_inuse_bytes 42
`)
	got := parseMetrics(body, "process_resident_memory_bytes", "go_memstats_heap_inuse_bytes", "missing")
	if got["process_resident_memory_bytes"] != 1.2345e+08 || got["go_memstats_heap_inuse_bytes"] != 42 || !math.IsNaN(got["missing"]) {
		t.Errorf("got %v", got)
	}
}

// A labelled sample is found by its labels, all of them, whatever their
// order; a store's metrics by the label of the command-line store, or none.
func TestParseLabelledMetrics(t *testing.T) {
	body := []byte(`# TYPE apiserver_storage_consistency_checks_total counter
apiserver_storage_consistency_checks_total{group="bench.annex.dev",resource="benchreports",status="success"} 3
apiserver_storage_consistency_checks_total{resource="benchreports",group="bench.annex.dev",status="failure"} 1
apiserver_storage_consistency_checks_total{group="other.annex.dev",resource="benchreports",status="success"} 9
# TYPE annex_postgres_database_size_bytes gauge
annex_postgres_database_size_bytes{storage_backend="default"} 4096
annex_postgres_database_size_bytes{storage_backend="pg"} 8192
# TYPE annex_postgres_table_size_bytes gauge
annex_postgres_table_size_bytes 512
`)
	name := "apiserver_storage_consistency_checks_total"
	for status, want := range map[string]float64{"success": 3, "failure": 1, "error": math.NaN()} {
		labels := map[string]string{"group": "bench.annex.dev", "resource": "benchreports", "status": status}
		if got := parseLabelledMetrics(body, labels, name)[name]; got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Errorf("%s %v = %v, want %v", name, labels, got, want)
		}
	}
	if got := parseLabelledMetrics(body, map[string]string{"group": "bench.annex.dev"}, name)[name]; !math.IsNaN(got) {
		t.Errorf("a sample matched by some of its labels: %v", got)
	}
	got := parseStoreMetrics(body, "annex_postgres_database_size_bytes", "annex_postgres_table_size_bytes")
	if got["annex_postgres_database_size_bytes"] != 4096 || got["annex_postgres_table_size_bytes"] != 512 {
		t.Errorf("the command-line store's metrics: %v, want 4096 and 512", got)
	}
}

// A shape whose phases the run's budget skipped for every target gets no
// rows: a row of dashes beside the ConfigMap's figures would read as if the
// ConfigMap had been measured against it.
func TestCRUDRowsLeaveOutSkippedShapes(t *testing.T) {
	done := opStats{Ops: 100, PerSecond: 50, Latency: latencies{P50: 10, P99: 20}}
	r := &results{CRUD: map[string]map[string]crudStats{
		shapeReport.Name:    {"A": {Create: done, Update: done, Get: done}, "B": {Create: done, Update: done, Get: done}},
		shapeFlat.Name:      {"A": {}, "B": {}, "C": {}},
		shapeConfigMap.Name: {configMapTarget: {Create: done, Update: done, Get: done}},
	}}
	rows := r.crudRows()
	if len(rows) != 9 {
		t.Fatalf("got %d rows, want the 9 of the report shape (3 operations, 3 figures each): %+v", len(rows), rows)
	}
	for _, rw := range rows {
		if !strings.Contains(rw.Figure, shapeReport.Name+" ") {
			t.Errorf("row %q is not of the report shape", rw.Figure)
		}
	}
}

func TestSumByLabel(t *testing.T) {
	body := []byte(`# TYPE annex_lean_get_requests_total counter
annex_lean_get_requests_total{answer="encoded",group="g",resource="a",version="v1"} 5
annex_lean_get_requests_total{answer="encoded",group="g",resource="b",version="v1"} 2
annex_lean_get_requests_total{answer="stale",group="g",resource="a",version="v1"} 3
`)
	got := sumByLabel(body, "annex_lean_get_requests_total", "answer")
	if len(got) != 2 || got["encoded"] != 7 || got["stale"] != 3 {
		t.Errorf("got %v, want encoded 7 and stale 3", got)
	}
	if got := sumByLabel(body, "missing_total", "answer"); got != nil {
		t.Errorf("a missing counter gave %v", got)
	}
}
