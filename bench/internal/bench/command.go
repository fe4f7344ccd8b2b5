// Package bench measures annex. Each report has a command of its own under
// bench/cmd, which only names its options and calls Main with one
// Run function of this package:
//
//   - compare (RunCompare, `make bench`, `make bench-quick`): annex side
//     by side with the kube-apiserver's CRD path, in one run on one machine,
//     the same workload against A, the type as a CRD in the kube-apiserver
//     (stored in the cluster's etcd), B, the type as a HostedResource with
//     requests sent straight to annex, and C, the same HostedResource with
//     requests sent through the kube-apiserver, and against a 1 KiB
//     ConfigMap as the reference for a typed object. It starts the control
//     plane of the integration tests (kube-apiserver, etcd, annex
//     registered through an APIService) and writes the raw results as JSON,
//     a Markdown report with the ratios B/A and C/A, PNG plots and, in the
//     full run, CPU and heap profiles of annex.
//   - backends, capacity and adoption (RunBackends, RunCapacity,
//     RunAdoption): a section of the report each, which compare keeps.
//   - crud (RunCRUD): the create, update and get phases of compare alone,
//     for hack/bench-crud-ab.sh.
//
// It imports the integration test framework, so it builds with
// `-tags integration`.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"annex.dev/annex/test/integration/framework"
)

// Flags are what every command of the benchmark is given.
type Flags struct {
	// Out is the directory for the raw results, logs and profiles; the
	// processes the driver starts run in directories of their own and
	// read the files it writes there by name, so Main makes it absolute.
	Out string
	// Doc is where the Markdown report (or its section) is written.
	Doc string
	// Command reproduces the run, for the report.
	Command string
	// Quick runs with tiny counts, in seconds: it proves the harness end
	// to end and measures nothing worth reading.
	Quick bool
	// Log receives the driver's progress.
	Log io.Writer
}

// mode names the run in its results and report: full, or the quick one.
func (f Flags) mode(full, quick string) string {
	if f.Quick {
		return quick
	}
	return full
}

// RunCompare measures A, B and C, writes results.json, the plots and the
// report.
func RunCompare(ctx context.Context, f Flags, opts *CompareOptions) (retErr error) {
	mode := f.mode("full", "quick")
	pl := planFor(f.Quick)
	plotDir := opts.Plots
	if plotDir == "" {
		plotDir = f.Out
	}
	for _, d := range []string{f.Out, plotDir, filepath.Dir(f.Doc)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	p := newProgress(f, 5*time.Second)
	p.logf("bench: %s mode, output in %s, report %s", mode, f.Out, f.Doc)
	p.logf("%s", pl.budget())

	p.stage("start kube-apiserver, etcd and annex")
	b, stop, err := startAggregated(ctx, p, f.Out, opts.ClusterEtcdFsync, opts.ConsistencyChecks)
	if err != nil {
		return err
	}
	defer func() {
		if err := stop(retErr != nil); err != nil && retErr == nil {
			retErr = err
		}
	}()
	b.hostedCache = opts.HostedCache
	r := &results{
		runInfo:           newRunInfo(f, mode, b.versions(ctx)),
		Plan:              pl,
		ClusterEtcdFsync:  opts.ClusterEtcdFsync,
		HostedCache:       opts.HostedCache,
		ConsistencyChecks: opts.ConsistencyChecks,
		Phases:            opts.Phases,
	}
	p.logf("versions: %v", r.Versions)

	r.Run(ctx, p, b, f.Out)
	r.Seconds = time.Since(p.start).Seconds()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	p.stage("write results, plots and report")
	if err := writeJSON(f.Out, "results.json", r); err != nil {
		return err
	}
	plotFiles, err := writePlots(r, plotDir)
	if err != nil {
		return fmt.Errorf("plotting: %w", err)
	}
	if err := writeReport(r, f.Doc, plotFiles); err != nil {
		return err
	}
	p.logf("wrote %s, %s and %d plots in %s", filepath.Join(f.Out, "results.json"), f.Doc, len(plotFiles), plotDir)
	fmt.Fprintln(f.Log)
	fmt.Fprint(f.Log, summaryTable(r))
	return nil
}

// writeJSON writes v, indented, as dir/name.
func writeJSON(dir, name string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), data, 0o644)
}

// startAggregated starts the control plane of the integration tests: the
// cluster's etcd (with fsync if asked), the kube-apiserver with its
// aggregation layer, and annex in aggregated mode registered through its
// APIService. Without checks, both servers run without their periodic
// consistency checks of their caches (consistencyChecksOff). stop stops them
// all; after a failed run it keeps their directory, logs included, and says
// where it is.
func startAggregated(ctx context.Context, p *progress, outDir string, fsync, checks bool) (b *bench, stop func(failed bool) error, err error) {
	if fsync {
		restore, err := etcdWithFsync(outDir)
		if err != nil {
			return nil, nil, err
		}
		// The cluster's etcd is started with the assets read at the start.
		defer restore()
	}
	annexArgs, apiServerFlags := strings.Fields(annexFlags), map[string]string(nil)
	if !checks {
		annexArgs = append(annexArgs, "--feature-gates=kube:"+consistencyChecksOff)
		apiServerFlags = map[string]string{"feature-gates": consistencyChecksOff}
	}
	env, err := framework.StartWithAPIServerFlags(ctx, apiServerFlags, annexArgs...)
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

// consistencyChecksOff is the feature gate that turns off the periodic
// consistency check of the kube-apiserver's watch caches, and of annex's
// (on by default since 1.34). Every 5 to 7.5 minutes it lists each type from
// the store and from the cache and compares them: at 100,000 report objects
// it costs the kube-apiserver about 8 s of CPU, half of these 2 cores for 15 s,
// and it lands in whichever phase runs then, whatever that phase's target:
// C's requests pass through the kube-apiserver that holds A's objects. The
// benchmarks of throughput and latency turn it off in both servers
// (--consistency-checks turns it back on); the capacity benchmark measures
// annex's checks.
const consistencyChecksOff = "DetectCacheInconsistency=false"

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
