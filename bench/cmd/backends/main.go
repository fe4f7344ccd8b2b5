//go:build integration

// Command backends measures annex alone on each of its stores (embedded
// etcd, external etcd, PostgreSQL): create throughput and watch latency
// across two replicas, under 5 minutes; it writes the section "Storage
// backends" of the report. See `make bench-backends`.
package main

import "annex.dev/annex/bench/internal/bench"

func main() {
	bench.Main("backends", true, &bench.BackendsOptions{}, bench.RunBackends)
}
