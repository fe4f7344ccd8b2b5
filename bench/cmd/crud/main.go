//go:build integration

// Command crud measures the create, update and get phases of the report
// shape alone, on a fresh control plane, in a few minutes, and writes
// crud.json; hack/bench-crud-ab.sh runs it to compare two builds of annex.
package main

import "annex.dev/annex/bench/internal/bench"

func main() {
	bench.Main("crud", false, &bench.CRUDOptions{}, bench.RunCRUD)
}
