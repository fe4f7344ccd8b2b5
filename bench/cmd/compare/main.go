//go:build integration

// Command compare measures annex side by side with the kube-apiserver's
// CRD path (A: the type as a CRD, B: a HostedResource served by annex, C:
// the same through the aggregator) and writes docs/benchmarks.md, keeping
// the sections the other commands write; see `make bench` and
// `make bench-quick`.
package main

import "annex.dev/annex/bench/internal/bench"

func main() {
	bench.Main("compare", true, &bench.CompareOptions{}, bench.RunCompare)
}
