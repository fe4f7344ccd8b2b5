//go:build integration

package bench

import (
	"strings"
	"testing"
)

// TestBackendsQuick runs the backends command with tiny counts: annex on its
// embedded etcd, on an external etcd and on PostgreSQL, two replicas on each
// shared store. It checks that every store was measured and that the
// report's section replaced the old one; it asserts no figure.
func TestBackendsQuick(t *testing.T) {
	var r backendsResults
	report := runQuick(t, backendsSec, &r, RunBackends, &BackendsOptions{})
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

	for _, k := range backendKinds {
		if !strings.Contains(report, "| "+k.Name+" |") {
			t.Errorf("the report has no row for %s", k.Name)
		}
	}
}
