//go:build integration

package bench

import "testing"

// TestCapacityQuick runs the capacity command with a tiny count on both
// stores: annex creates one object, the driver fills the store through it,
// annex restarts on it and serves the filled objects as the API-created
// one. It checks that every store was measured and the section written; it
// asserts no figure.
func TestCapacityQuick(t *testing.T) {
	const count = 300
	var r capacityResults
	runQuick(t, capacitySec, &r, RunCapacity, &CapacityOptions{Count: count, Stores: []string{"embedded-etcd", "postgres"}})
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
}
