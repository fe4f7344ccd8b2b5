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

// TestBackendsQuick runs the backends mode with tiny counts: annex on its
// embedded etcd, on an external etcd and on PostgreSQL, two replicas on each
// shared store. It checks that every store was measured and that the
// report's section replaced the old one; it asserts no figure.
func TestBackendsQuick(t *testing.T) {
	out := t.TempDir()
	doc := filepath.Join(out, "benchmarks.md")
	before := "# Benchmarks\n\n" + backendsStart + "\nold figures\n" + backendsEnd + "\n\n## After\n"
	if err := os.WriteFile(doc, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	err := runBackends(context.Background(), &log, "backends-quick", out, doc, "go test -tags integration -run TestBackendsQuick")
	t.Logf("driver output:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(filepath.Join(out, "backends.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r backendsResults
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Backends) != len(backendKinds) {
		t.Fatalf("%d stores measured, want %d", len(r.Backends), len(backendKinds))
	}
	for _, b := range r.Backends {
		if b.Error != "" || b.Create.Ops == 0 || b.Same.Latency.N == 0 {
			t.Errorf("%s: error %q, %d creates, %d watch events on the same replica", b.Name, b.Error, b.Create.Ops, b.Same.Latency.N)
		}
		if shared := b.Name != "embedded etcd"; shared != (b.Cross != nil) {
			t.Errorf("%s: watched on another replica: %v, want %v", b.Name, b.Cross != nil, shared)
		} else if shared && b.Cross.Latency.N == 0 {
			t.Errorf("%s: no watch event reached the other replica", b.Name)
		}
	}

	got, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	report := string(got)
	if strings.Contains(report, "old figures") || !strings.HasPrefix(report, "# Benchmarks\n\n"+backendsStart) || !strings.HasSuffix(report, backendsEnd+"\n\n## After\n") {
		t.Errorf("the section did not replace the old one in place:\n%s", report)
	}
	for _, k := range backendKinds {
		if !strings.Contains(report, "| "+k.Name+" |") {
			t.Errorf("the report has no row for %s", k.Name)
		}
	}
}
