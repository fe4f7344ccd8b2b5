//go:build integration

// Command adoption measures annex adopting a CRD of the cluster with its
// objects under a steady writer, each object count in a control plane of
// its own (about 25 minutes at 10,000 and 100,000); it writes the section
// "Adoption" of the report. See `make bench-adoption`.
package main

import "annex.dev/annex/bench/internal/bench"

func main() {
	bench.Main("adoption", true, &bench.AdoptionOptions{}, bench.RunAdoption)
}
