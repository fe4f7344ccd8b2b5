//go:build integration

package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCapacityQuick runs the capacity mode with a tiny count on both
// stores: annex creates one object, the driver fills the store through it,
// annex restarts on it and serves the filled objects as the API-created
// one. It checks that every store was measured and the section written; it
// asserts no figure.
func TestCapacityQuick(t *testing.T) {
	out := t.TempDir()
	doc := filepath.Join(out, "benchmarks.md")
	before := "# Benchmarks\n\n" + capacityStart + "\nold figures\n" + capacityEnd + "\n\n## After\n"
	if err := os.WriteFile(doc, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	const count = 300
	var log strings.Builder
	opts := capacityOptions{Count: count, Stores: []string{"embedded-etcd", "postgres"}}
	err := runCapacity(context.Background(), &log, "capacity-quick", opts, out, doc, "go test -tags integration -run TestCapacityQuick")
	t.Logf("driver output:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(out, "capacity.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r capacityResults
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Stores) != 2 {
		t.Fatalf("%d stores measured, want 2", len(r.Stores))
	}
	for _, s := range r.Stores {
		if s.Error != "" || s.objects() != count || s.Verified == 0 || s.CacheSeconds < s.ReadySeconds || s.ReadySeconds == 0 ||
			s.Full.VmRSS == 0 || s.Paged.N == 0 || s.Watch.Latency.N == 0 {
			t.Errorf("%s: error %q, %d objects, %d verified, ready %.1f s, cache %.1f s, RSS %v, %d pages, %d watch events",
				s.Name, s.Error, s.objects(), s.Verified, s.ReadySeconds, s.CacheSeconds, s.Full.VmRSS, s.Paged.N, s.Watch.Latency.N)
		}
	}
	got, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	report := string(got)
	if strings.Contains(report, "old figures") || !strings.HasPrefix(report, "# Benchmarks\n\n"+capacityStart) || !strings.HasSuffix(report, capacityEnd+"\n\n## After\n") {
		t.Errorf("the section did not replace the old one in place:\n%s", report)
	}
}
