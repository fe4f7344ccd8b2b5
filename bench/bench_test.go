package main

import (
	"math"
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
