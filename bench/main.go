// Command bench measures annex side by side with the kube-apiserver's CRD
// path in one run on one machine: the same workload against
//
//	A: the type as a CRD in the kube-apiserver (stored in the cluster's etcd),
//	B: the type as a HostedResource, requests sent straight to annex,
//	C: the same HostedResource, requests sent through the kube-apiserver,
//
// and against a 1 KiB ConfigMap as the reference for a typed object. It
// starts the control plane of the integration tests (kube-apiserver, etcd,
// annex registered through an APIService), writes the raw results as JSON,
// a Markdown report with the ratios B/A and C/A, PNG plots and, in the full
// mode, CPU and heap profiles of annex.
//
// It imports the integration test framework, so it builds with
// `-tags integration`; see `make bench` and `make bench-quick`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"annex.dev/annex/test/integration/framework"
)

func main() {
	var (
		mode = flag.String("mode", "quick", "quick (seconds, tiny counts, proves the harness) or full (under 30 minutes on 2 cores); "+
			"backends (annex alone on each of its stores, under 5 minutes) or backends-quick; "+
			"capacity (one type filled with --count objects on the embedded etcd and PostgreSQL, about 40 minutes at 1,000,000) or capacity-quick; "+
			"adoption (a CRD of the cluster with --count objects adopted by annex under a steady writer, about 15 minutes at 10,000 and 100,000) or adoption-quick; "+
			"crud (only the create, update and get phases of the report shape, --count objects per target, a few minutes)")
		outDir  = flag.String("out", "", "directory for results.json, logs and profiles (required)")
		doc     = flag.String("doc", "", "where to write the Markdown report (default <out>/benchmarks.md)")
		plots   = flag.String("plots", "", "directory for the PNG plots (default <out>)")
		command = flag.String("command", "", "the command that reproduces this run, for the report")
		fsync   = flag.Bool("cluster-etcd-fsync", true, "run the cluster's etcd with fsync, as in production and as annex's embedded etcd runs (envtest turns fsync off)")
		cache   = flag.String("hosted-cache", "", "spec.storage.cache of the HostedResources of B and C: Lean (the default), WatchCache or None")
		count   = flag.String("count", "", "capacity modes: the number of objects of the type (default 1,000,000 for capacity, 2,000 for capacity-quick); "+
			"adoption modes: the object counts to adopt at, comma-separated, each in a control plane of its own (default 10000,100000 for adoption, 200 for adoption-quick); "+
			"crud mode: the objects each target creates, updates and gets (default 3,000)")
		stores = flag.String("stores", "embedded-etcd,postgres", "capacity modes: the stores to fill and measure, in order")
		check  = flag.Bool("wait-consistency-check", false, "capacity modes: wait for a periodic consistency check of the full cache against the store "+
			"and measure it (5 to 7.5 minutes, plus about twice the time the cache took to fill, per store)")
		targets  = flag.String("targets", "A,B", "crud mode: the targets measured, in order (A, B, C)")
		prefill  = flag.Int("prefill", 0, "crud mode: report objects created in A and B before the phases")
		profileS = flag.Int("profile-seconds", 0, "crud mode: profile annex during B's create and update, and the kube-apiserver during A's, for this many seconds")
	)
	flag.Parse()
	if *outDir == "" {
		fmt.Fprintln(os.Stderr, "bench: --out is required")
		os.Exit(2)
	}
	// The processes the driver starts run in directories of their own,
	// and read the files it writes there by name.
	abs, err := filepath.Abs(*outDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	*outDir = abs
	if *doc == "" {
		*doc = filepath.Join(*outDir, "benchmarks.md")
	}
	if *plots == "" {
		*plots = *outDir
	}
	if *command == "" {
		*command = "cd bench && go run -tags integration . " + strings.Join(os.Args[1:], " ")
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	counts, err := parseCounts(*count)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: --count:", err)
		os.Exit(2)
	}
	if strings.HasPrefix(*mode, "adoption") {
		opts := adoptionOptions{Counts: counts, ClusterEtcdFsync: *fsync}
		if err := runAdoption(ctx, os.Stdout, *mode, opts, *outDir, *doc, *command); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if strings.HasPrefix(*mode, "capacity") {
		if len(counts) > 1 {
			fmt.Fprintln(os.Stderr, "bench: --count: the capacity modes take one count")
			os.Exit(2)
		}
		opts := capacityOptions{Stores: strings.Split(*stores, ","), WaitCheck: *check}
		if len(counts) == 1 {
			opts.Count = counts[0]
		}
		if err := runCapacity(ctx, os.Stdout, *mode, opts, *outDir, *doc, *command); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if *mode == "crud" {
		if len(counts) > 1 {
			fmt.Fprintln(os.Stderr, "bench: --count: the crud mode takes one count")
			os.Exit(2)
		}
		opts := crudOptions{Targets: strings.Split(*targets, ","), Prefill: *prefill, ProfileSeconds: *profileS}
		if len(counts) == 1 {
			opts.Count = counts[0]
		}
		if err := runCRUDMode(ctx, os.Stdout, opts, *outDir, *command); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if strings.HasPrefix(*mode, "backends") {
		if err := runBackends(ctx, os.Stdout, *mode, *outDir, *doc, *command); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, *mode, *outDir, *doc, *plots, *command, *fsync, *cache); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// parseCounts reads --count: object counts, comma-separated; none if empty.
func parseCounts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive object count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, mode, outDir, doc, plotDir, command string, fsync bool, cache string) (retErr error) {
	pl, err := planFor(mode)
	if err != nil {
		return err
	}
	for _, d := range []string{outDir, plotDir, filepath.Dir(doc)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	p := &progress{out: os.Stdout, start: time.Now(), every: 5 * time.Second}
	if mode == "quick" {
		p.every = time.Second
	}
	p.logf("bench: %s mode, output in %s, report %s", mode, outDir, doc)
	p.logf("%s", pl.budget())

	p.stage("start kube-apiserver, etcd and annex")
	b, stop, err := startAggregated(ctx, p, outDir, fsync)
	if err != nil {
		return err
	}
	defer func() {
		if err := stop(retErr != nil); err != nil && retErr == nil {
			retErr = err
		}
	}()
	b.hostedCache = cache
	r := &results{
		Mode:    mode,
		Command: command,
		Started: time.Now().UTC(),
		Plan:    pl,
		Machine: describeMachine(),
		Versions: map[string]string{
			"kube-apiserver": b.kas.version(ctx),
			"etcd (cluster)": b.etcd.version(ctx),
			"annex":          b.annex.version(ctx),
		},
		ClusterEtcdFsync: fsync,
		HostedCache:      cache,
	}
	p.logf("versions: %v", r.Versions)

	r.Run(ctx, p, b, outDir)
	r.Seconds = time.Since(p.start).Seconds()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	p.stage("write results, plots and report")
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "results.json"), data, 0o644); err != nil {
		return err
	}
	plotFiles, err := writePlots(r, plotDir)
	if err != nil {
		return fmt.Errorf("plotting: %w", err)
	}
	if err := writeReport(r, doc, plotFiles); err != nil {
		return err
	}
	p.logf("wrote %s, %s and %d plots in %s", filepath.Join(outDir, "results.json"), doc, len(plotFiles), plotDir)
	fmt.Println()
	fmt.Print(summaryTable(r))
	return nil
}

// startAggregated starts the control plane of the integration tests: the
// cluster's etcd (with fsync if asked), the kube-apiserver with its
// aggregation layer, and annex in aggregated mode registered through its
// APIService. stop stops them all; after a failed run it keeps their
// directory, logs included, and says where it is.
func startAggregated(ctx context.Context, p *progress, outDir string, fsync bool) (b *bench, stop func(failed bool) error, err error) {
	if fsync {
		restore, err := etcdWithFsync(outDir)
		if err != nil {
			return nil, nil, err
		}
		// The cluster's etcd is started with the assets read at the start.
		defer restore()
	}
	env, err := framework.Start(ctx, strings.Fields(*annexFlags)...)
	if err != nil {
		return nil, nil, err
	}
	stop = func(failed bool) error {
		if failed {
			env.KeepDir = true
			p.logf("environment kept in %s (annex log %s, kube-apiserver log %s)", env.Dir, env.AnnexLog, env.APIServerLog)
		}
		return env.Stop()
	}
	if b, err = newBench(env); err != nil {
		_ = stop(true)
		return nil, nil, err
	}
	return b, stop, nil
}

// etcdWithFsync points KUBEBUILDER_ASSETS at a copy of the assets directory
// whose etcd drops the --unsafe-no-fsync=true that envtest adds: the
// cluster's etcd then syncs its WAL as in production and as annex's embedded
// etcd does, and neither side of a write-throughput ratio is favoured.
func etcdWithFsync(outDir string) (restore func(), err error) {
	orig := os.Getenv(framework.AssetsEnv)
	if orig == "" {
		return nil, fmt.Errorf("%s is not set: point it at the directory printed by hack/tools/install.sh", framework.AssetsEnv)
	}
	dir, err := filepath.Abs(filepath.Join(outDir, "assets"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(orig)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		link := filepath.Join(dir, e.Name())
		_ = os.Remove(link)
		if e.Name() == "etcd" {
			continue
		}
		if err := os.Symlink(filepath.Join(orig, e.Name()), link); err != nil {
			return nil, err
		}
	}
	script := fmt.Sprintf(`#!/bin/sh
# Written by annex's bench: runs the cluster's etcd with fsync (envtest turns it off).
for a do
  shift
  case "$a" in --unsafe-no-fsync|--unsafe-no-fsync=*) ;; *) set -- "$@" "$a" ;; esac
done
exec %q "$@"
`, filepath.Join(orig, "etcd"))
	if err := os.WriteFile(filepath.Join(dir, "etcd"), []byte(script), 0o755); err != nil {
		return nil, err
	}
	if err := os.Setenv(framework.AssetsEnv, dir); err != nil {
		return nil, err
	}
	return func() { _ = os.Setenv(framework.AssetsEnv, orig) }, nil
}
