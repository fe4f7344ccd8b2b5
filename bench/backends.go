package main

import (
	"context"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"annex.dev/annex/test/integration/framework"
)

// The backends mode (`make bench-backends`) runs annex alone, in standalone
// mode, on each of its stores in turn, and measures on each the create
// throughput of one replica and the watch latency on the replica that
// wrote and, where two replicas can share the store, on the other one.

// backendsPlan is what the backends mode does on each store.
type backendsPlan struct {
	Mode string `json:"mode"`
	// Creates objects of the report shape are created by Clients
	// concurrent clients, within CreateLimit.
	Creates     int           `json:"creates"`
	Clients     int           `json:"clients"`
	CreateLimit time.Duration `json:"createLimit"`
	// WatchEvents objects are created one at a time at WatchRate per
	// second while the watchers wait for them; EventWait bounds the wait for
	// the last events after the last create.
	WatchEvents int           `json:"watchEvents"`
	WatchRate   float64       `json:"watchRate"`
	EventWait   time.Duration `json:"eventWait"`
}

func backendsPlanFor(mode string) (backendsPlan, error) {
	switch mode {
	case "backends-quick":
		// Proves the harness end to end; the figures mean nothing.
		return backendsPlan{Mode: mode, Creates: 40, Clients: 16, CreateLimit: 20 * time.Second,
			WatchEvents: 5, WatchRate: 20, EventWait: 30 * time.Second}, nil
	case "backends":
		return backendsPlan{Mode: mode, Creates: 5000, Clients: 16, CreateLimit: 75 * time.Second,
			WatchEvents: 200, WatchRate: 20, EventWait: 30 * time.Second}, nil
	}
	return backendsPlan{}, fmt.Errorf("unknown mode %q", mode)
}

// backendKind is a store to measure annex on.
type backendKind struct {
	Name  string
	slug  string
	start func(ctx context.Context, dataDir, logDir string) (*store, error)
}

var backendKinds = []backendKind{
	{Name: "embedded etcd", slug: "embedded-etcd", start: embeddedStore},
	{Name: "external etcd", slug: "external-etcd", start: etcdStore},
	{Name: "PostgreSQL (kine)", slug: "postgres", start: postgresStore},
}

// backendsResults is what one run of the backends mode measured; it is
// written as backends.json and rendered into a section of the report.
type backendsResults struct {
	Mode     string            `json:"mode"`
	Command  string            `json:"command"`
	Started  time.Time         `json:"started"`
	Seconds  float64           `json:"seconds"`
	Plan     backendsPlan      `json:"plan"`
	Machine  machine           `json:"machine"`
	Versions map[string]string `json:"versions"`
	// LoadBefore and LoadAfter are the machine's load averages
	// (/proc/loadavg: 1, 5, 15 minutes) when the run started and ended.
	LoadBefore string          `json:"loadBefore"`
	LoadAfter  string          `json:"loadAfter"`
	Backends   []backendResult `json:"backends"`
}

type backendResult struct {
	Name string `json:"name"`
	// Load is the 1-minute load average when its create phase started.
	Load float64 `json:"load1m"`
	// OthersCPU is the share of the machine's CPU that processes outside
	// this run used during the creates.
	OthersCPU float64    `json:"othersCPUDuringCreates"`
	Create    opStats    `json:"create"`
	Same      watchStats `json:"watchSameReplica"`
	// Cross is nil for the embedded etcd, which one replica owns.
	Cross *watchStats `json:"watchCrossReplica,omitempty"`
	// Postgres holds annex's PostgreSQL metrics after the creates.
	Postgres map[string]float64 `json:"postgresMetrics,omitempty"`
	Seconds  float64            `json:"seconds"`
	Error    string             `json:"error,omitempty"`
}

// runBackends measures annex on each store in turn, writes backends.json and
// the logs into outDir and, when every store was measured, the section
// "Storage backends" of doc.
func runBackends(ctx context.Context, out io.Writer, mode, outDir, doc, command string) error {
	pl, err := backendsPlanFor(mode)
	if err != nil {
		return err
	}
	bin := os.Getenv(framework.AnnexBinEnv)
	if bin == "" {
		return fmt.Errorf("%s must name the annex-apiserver binary (make bench-backends sets it)", framework.AnnexBinEnv)
	}
	if err := checkBinary(bin); err != nil {
		return err
	}
	for _, d := range []string{outDir, filepath.Dir(doc)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The stores' data lives in a temporary directory, removed whatever
	// happens; the logs stay in outDir.
	work, err := os.MkdirTemp("", "annex-bench-backends-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	p := &progress{out: out, start: time.Now(), every: 5 * time.Second}
	if mode == "backends-quick" {
		p.every = time.Second
	}
	r := &backendsResults{
		Mode: mode, Command: command, Started: time.Now().UTC(), Plan: pl,
		Machine: describeMachine(), Versions: annexDependencies(bin), LoadBefore: loadAverages(),
	}
	p.logf("bench: %s mode, %d creates with %d clients and %d watch events at %.0f/s per store; logs in %s, report %s",
		mode, pl.Creates, pl.Clients, pl.WatchEvents, pl.WatchRate, outDir, doc)
	p.logf("load average before the run: %s", r.LoadBefore)

	var failed []string
	for _, k := range backendKinds {
		res := r.runBackend(ctx, p, k, bin, filepath.Join(work, k.slug), filepath.Join(outDir, "logs", k.slug))
		r.Backends = append(r.Backends, res)
		if res.Error != "" {
			failed = append(failed, k.Name+": "+res.Error)
			p.logf("%s failed: %s", k.Name, res.Error)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	r.LoadAfter = loadAverages()
	r.Seconds = time.Since(p.start).Seconds()

	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "backends.json"), data, 0o644); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("not every store was measured, %s is left as it was:\n  %s", doc, strings.Join(failed, "\n  "))
	}
	if err := writeBackendsSection(doc, r); err != nil {
		return err
	}
	p.logf("wrote %s and the section %q of %s in %.0f s; load average after the run: %s",
		filepath.Join(outDir, "backends.json"), "Storage backends", doc, r.Seconds, r.LoadAfter)
	fmt.Fprintln(out)
	fmt.Fprint(out, backendsTable(r))
	return nil
}

// runBackend measures annex on one store: creates through one replica,
// then watch latency on that replica and, if the store can be shared, on a
// second one.
func (r *backendsResults) runBackend(ctx context.Context, p *progress, k backendKind, bin, dataDir, logDir string) (res backendResult) {
	res.Name = k.Name
	start := time.Now()
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	fail := func(format string, args ...any) backendResult {
		if res.Error == "" {
			res.Error = fmt.Sprintf(format, args...)
		}
		return res
	}
	for _, d := range []string{dataDir, logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail("%v", err)
		}
	}
	pl := r.Plan

	p.stage(k.Name + ": start the store and annex")
	st, err := k.start(ctx, dataDir, logDir)
	if err != nil {
		return fail("starting the store: %v", err)
	}
	defer func() {
		if err := st.stop(); err != nil {
			fail("stopping the store: %v", err)
		}
	}()
	if st.Version != "" {
		r.Versions[k.Name] = st.Version
	}
	r1, err := startReplica(ctx, bin, "annex-1", filepath.Join(dataDir, "annex-1"), logDir, st.Args)
	if err != nil {
		return fail("%v", err)
	}
	defer func() {
		if err := r1.stop(); err != nil {
			fail("%v", err)
		}
	}()
	if v := r1.target.Server.version(ctx); v != "" {
		r.Versions["annex"] = v
	}

	const nsCreate, nsWarmup, nsWatch = "bench", "warmup", "watch"
	if err := installReportType(ctx, r1, nsCreate, nsWarmup, nsWatch); err != nil {
		return fail("%v", err)
	}
	gvr := r1.target.gvr(shapeReport)
	apiVersion := gvr.GroupVersion().String()
	create := func(ns string, from int) func(ctx context.Context, i int) error {
		res := r1.target.Dyn.Resource(gvr).Namespace(ns)
		return func(ctx context.Context, i int) error {
			_, err := res.Create(ctx, shapeReport.object(apiVersion, ns, from+i), metav1.CreateOptions{})
			return err
		}
	}
	// The first creates of a type pay for setting up its storage.
	if st := runOps(ctx, p, k.Name+": warm-up", 2*pl.Clients, pl.Clients, 30*time.Second, create(nsWarmup, 0)); st.Errors > 0 {
		return fail("warm-up: %d errors, first: %s", st.Errors, st.FirstError)
	}

	p.stage(fmt.Sprintf("%s: %d creates with %d clients", k.Name, pl.Creates, pl.Clients))
	res.Load = load1()
	cpuBefore := sampleCPU()
	res.Create = runOps(ctx, p, k.Name+": create report", pl.Creates, pl.Clients, pl.CreateLimit, create(nsCreate, 0))
	res.OthersCPU = othersCPU(cpuBefore, sampleCPU())
	p.logf("%s: processes outside this run used %.0f%% of the machine's CPU during the creates", k.Name, 100*res.OthersCPU)
	if res.Create.Errors > 0 {
		return fail("creates: %d errors, first: %s", res.Create.Errors, res.Create.FirstError)
	}
	if k.slug == "postgres" {
		m, err := r1.metrics(ctx, "annex_postgres_database_size_bytes", "annex_postgres_table_size_bytes",
			"annex_postgres_current_revision", "annex_postgres_compacted_revision", "annex_postgres_compaction_lag_revisions")
		if err != nil {
			return fail("reading annex's PostgreSQL metrics: %v", err)
		}
		res.Postgres = m
		p.logf("%s: annex's metrics after the creates: database %s, kine's table %s, revision %.0f, compacted to %.0f, lag %.0f",
			k.Name, mib(m["annex_postgres_database_size_bytes"]), mib(m["annex_postgres_table_size_bytes"]),
			m["annex_postgres_current_revision"], m["annex_postgres_compacted_revision"], m["annex_postgres_compaction_lag_revisions"])
	}

	watchers := []*target{r1.target}
	if st.Shared {
		p.stage(k.Name + ": start a second annex on the same store")
		r2, err := startReplica(ctx, bin, "annex-2", filepath.Join(dataDir, "annex-2"), logDir, st.Args)
		if err != nil {
			return fail("%v", err)
		}
		defer func() {
			if err := r2.stop(); err != nil {
				fail("%v", err)
			}
		}()
		if err := r2.waitServed(ctx, shapeReport, nsWatch); err != nil {
			return fail("%v", err)
		}
		watchers = append(watchers, r2.target)
	}

	p.stage(fmt.Sprintf("%s: watch latency, %d creates through annex-1 at %.0f/s", k.Name, pl.WatchEvents, pl.WatchRate))
	samples, err := watchLatencies(ctx, r1.target, watchers, shapeReport, nsWatch, pl.WatchEvents, pl.WatchRate, pl.EventWait)
	if err != nil {
		return fail("watch: %v", err)
	}
	// One figure per watch: the writing replica's, then the other's.
	stats := make([]watchStats, len(samples))
	for i, s := range samples {
		stats[i] = merge(pl.WatchEvents, s)
	}
	res.Same = stats[0]
	if len(stats) > 1 {
		res.Cross = &stats[1]
	}
	for i, s := range stats {
		p.logf("%s: watch on %s: p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d events (%d before the create's response, %d missed)",
			k.Name, watchers[i].Name, s.Latency.P50, s.Latency.P99, s.Latency.Max, s.Latency.N, s.Early, s.Missed)
	}
	p.stage(k.Name + ": stop")
	return res
}

// installReportType creates the namespaces and the HostedResource of the
// report shape through r, and waits until r serves it.
func installReportType(ctx context.Context, r *replica, namespaces ...string) error {
	for _, n := range namespaces {
		ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": n}}}
		if _, err := r.target.Dyn.Resource(namespacesGVR).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating namespace %s: %w", n, err)
		}
	}
	spec, err := toMap(shapeReport.crdSpec(hostedGroup))
	if err != nil {
		return err
	}
	hr := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": framework.Group + "/" + framework.Version,
		"kind":       "HostedResource",
		"metadata":   map[string]any{"name": shapeReport.Plural + "." + hostedGroup},
		"spec":       spec,
	}}
	if _, err := r.target.Dyn.Resource(framework.HostedResources).Create(ctx, hr, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating HostedResource %s: %w", hr.GetName(), err)
	}
	return r.waitServed(ctx, shapeReport, namespaces[0])
}

// annexDependencies are the versions of the stores linked into annex's
// binary bin: the embedded etcd and kine.
func annexDependencies(bin string) map[string]string {
	out := map[string]string{}
	if info, err := buildinfo.ReadFile(bin); err == nil {
		for _, d := range info.Deps {
			switch d.Path {
			case "github.com/k3s-io/kine":
				out["kine (in annex)"] = d.Version
			case "go.etcd.io/etcd/server/v3":
				out["embedded etcd (in annex)"] = d.Version
			}
		}
	}
	return out
}

// loadAverages is /proc/loadavg's 1, 5 and 15 minute load averages.
func loadAverages() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}

// load1 is the 1-minute load average, NaN if unknown.
func load1() float64 {
	f, err := strconv.ParseFloat(strings.SplitN(loadAverages(), ",", 2)[0], 64)
	if err != nil {
		return nan
	}
	return f
}
