//go:build integration

package bench

import "testing"

// TestAdoptionQuick runs the adoption command at a tiny count: a CRD filled
// through the kube-apiserver, adopted with kubectl annex adopt while the
// writer writes, then checked through the cluster; then released with
// kubectl annex release, and checked again. It checks that the
// adoption was measured whole and the section written; it asserts no
// figure.
func TestAdoptionQuick(t *testing.T) {
	const count = 200
	var r adoptionResults
	runQuick(t, adoptionSec, &r, RunAdoption, &AdoptionOptions{Counts: []int{count}, ClusterEtcdFsync: true})
	if len(r.Runs) != 1 {
		t.Fatalf("%d counts measured, want 1", len(r.Runs))
	}
	a := r.Runs[0]
	if a.Error != "" || a.Objects != count || a.Status.Phase != "Adopted" || a.TotalSeconds <= 0 || a.FreezeSeconds <= 0 ||
		a.CopyRate <= 0 || a.Steps == "" || a.Writer.Writes == 0 || a.Writer.Errors != 0 || !a.Verify.ok() || a.After.RSS == 0 {
		t.Errorf("error %q, %d objects, phase %s, total %.1f s, freeze %.1f s, copy %.0f/s, steps %q, %d writes, %d errors, verify %+v, RSS %v",
			a.Error, a.Objects, a.Status.Phase, a.TotalSeconds, a.FreezeSeconds, a.CopyRate, a.Steps, a.Writer.Writes, a.Writer.Errors, a.Verify, a.After.RSS)
	}
	// Then the release, with the writer writing on.
	rel := a.Release
	if rel == nil {
		t.Fatal("no release was measured")
	}
	if rel.Objects < count || rel.FreezeSeconds <= 0 || rel.WriteBackRate <= 0 || rel.Writer.Writes == 0 || rel.Writer.Errors != 0 ||
		!rel.Verify.ok() || rel.Verify.Expected < a.Verify.Expected {
		t.Errorf("the release: %d objects written back, freeze %.1f s, %.0f/s, %d writes, %d errors, verify %+v (after the adoption %+v)",
			rel.Objects, rel.FreezeSeconds, rel.WriteBackRate, rel.Writer.Writes, rel.Writer.Errors, rel.Verify, a.Verify)
	}
}
