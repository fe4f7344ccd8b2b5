//go:build integration

// Command capacity fills one hosted type with many objects on the
// embedded etcd and on PostgreSQL and measures annex restarted on it
// (about 40 minutes at 1,000,000); it writes the section "Capacity" of the
// report. See `make bench-capacity`.
package main

import "annex.dev/annex/bench/internal/bench"

func main() {
	bench.Main("capacity", true, &bench.CapacityOptions{}, bench.RunCapacity)
}
