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

// TestAdoptionQuick runs the adoption mode at a tiny count: a CRD filled
// through the kube-apiserver, adopted with kubectl annex adopt while the
// writer writes, then checked through the cluster. It checks that the
// adoption was measured whole and the section written; it asserts no
// figure.
func TestAdoptionQuick(t *testing.T) {
	out := t.TempDir()
	doc := filepath.Join(out, "benchmarks.md")
	before := "# Benchmarks\n\n" + adoptionStart + "\nold figures\n" + adoptionEnd + "\n\n## After\n"
	if err := os.WriteFile(doc, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	const count = 200
	var log strings.Builder
	opts := adoptionOptions{Counts: []int{count}, ClusterEtcdFsync: true}
	err := runAdoption(context.Background(), &log, "adoption-quick", opts, out, doc, "go test -tags integration -run TestAdoptionQuick")
	t.Logf("driver output:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(out, "adoption.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r adoptionResults
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Runs) != 1 {
		t.Fatalf("%d counts measured, want 1", len(r.Runs))
	}
	a := r.Runs[0]
	if a.Error != "" || a.Objects != count || a.Status.Phase != "Adopted" || a.TotalSeconds <= 0 || a.FreezeSeconds <= 0 ||
		a.CopyRate <= 0 || a.Steps == "" || a.Writer.Writes == 0 || a.Writer.Errors != 0 || !a.Verify.ok() || a.After.RSS == 0 {
		t.Errorf("error %q, %d objects, phase %s, total %.1f s, freeze %.1f s, copy %.0f/s, steps %q, %d writes, %d errors, verify %+v, RSS %v",
			a.Error, a.Objects, a.Status.Phase, a.TotalSeconds, a.FreezeSeconds, a.CopyRate, a.Steps, a.Writer.Writes, a.Writer.Errors, a.Verify, a.After.RSS)
	}
	got, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	report := string(got)
	if strings.Contains(report, "old figures") || !strings.HasPrefix(report, "# Benchmarks\n\n"+adoptionStart) || !strings.HasSuffix(report, adoptionEnd+"\n\n## After\n") {
		t.Errorf("the section did not replace the old one in place:\n%s", report)
	}
}
