package bench

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"annex.dev/annex/test/integration/framework"
)

// The backends command (`make bench-backends`) runs annex alone, in standalone
// mode, on each of its stores in turn, and measures on each the create
// throughput of one replica and the watch latency on the replica that
// wrote and, where two replicas can share the store, on the other one.

// backendsPlan is what the backends command does on each store.
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

func backendsPlanFor(f Flags) backendsPlan {
	pl := backendsPlan{Mode: f.mode("backends", "backends-quick"), Clients: 16, EventWait: 30 * time.Second, WatchRate: 20}
	if f.Quick {
		// Proves the harness end to end; the figures mean nothing.
		pl.Creates, pl.CreateLimit, pl.WatchEvents = 40, 20*time.Second, 5
	} else {
		pl.Creates, pl.CreateLimit, pl.WatchEvents = 5000, 75*time.Second, 200
	}
	return pl
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

// backendsResults is what one run of the backends command measured; it
// is written as backends.json and rendered into a section of the report.
type backendsResults struct {
	runInfo
	Plan     backendsPlan    `json:"plan"`
	Backends []backendResult `json:"backends"`
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
	outcome
}

// RunBackends measures annex on each store in turn, writes backends.json
// and the logs into the output directory and, when every store was
// measured, the section "Storage backends" of the report.
func RunBackends(ctx context.Context, f Flags, _ *BackendsOptions) error {
	s, err := startSession(f, backendsSec, 5*time.Second)
	if err != nil {
		return err
	}
	defer s.close()
	pl := backendsPlanFor(f)
	r := &backendsResults{runInfo: s.info(annexDependencies(s.bin)), Plan: pl}
	s.p.logf("bench: %s mode, %d creates with %d clients and %d watch events at %.0f/s per store; logs in %s, report %s",
		r.Mode, pl.Creates, pl.Clients, pl.WatchEvents, pl.WatchRate, f.Out, f.Doc)
	s.p.logf("load average before the run: %s", r.LoadBefore)

	failed, err := s.each(ctx, len(backendKinds), func(i int) string { return backendKinds[i].Name }, func(i int) string {
		k := backendKinds[i]
		res := r.runBackend(ctx, s.p, k, s.bin, filepath.Join(s.work, k.slug), filepath.Join(f.Out, "logs", k.slug))
		r.Backends = append(r.Backends, res)
		return res.Error
	})
	if err != nil {
		return err
	}
	return s.finish(&r.runInfo, r, failed, false, func() string { return backendsSection(r) }, func() string { return backendsTable(r) })
}

// runBackend measures annex on one store: creates through one replica,
// then watch latency on that replica and, if the store can be shared, on a
// second one.
func (r *backendsResults) runBackend(ctx context.Context, p *progress, k backendKind, bin, dataDir, logDir string) (res backendResult) {
	res.Name = k.Name
	fail, _, done := measuring(&res, &res.outcome, p, k.Name)
	defer done()
	pl := r.Plan

	p.stage(k.Name + ": start the store and annex")
	st, err := startStore(ctx, k, dataDir, logDir, r.Versions)
	if err != nil {
		return fail("%v", err)
	}
	defer res.stopping(st.stop, "stopping the store")
	r1, err := startReplica(ctx, bin, "annex-1", filepath.Join(dataDir, "annex-1"), logDir, st.Args)
	if err != nil {
		return fail("%v", err)
	}
	defer res.stopping(r1.stop, "")
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
		defer res.stopping(r2.stop, "")
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
