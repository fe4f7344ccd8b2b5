package bench

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

var nan = math.NaN()

// row is one figure of the report: its value for each target and the
// ratios to A.
type row struct {
	Figure string
	Unit   string
	A, B   float64
	C, CM  float64
	// higherIsBetter says which way a ratio is good.
	higherIsBetter bool
}

func (rw row) ratio(x float64) string {
	if math.IsNaN(x) || math.IsNaN(rw.A) || rw.A == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", x/rw.A)
}

func num(x float64) string {
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		return "–"
	case math.Abs(x) >= 100:
		return fmt.Sprintf("%.0f", x)
	case math.Abs(x) >= 10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.2f", x)
	}
}

func table(rows []row) string {
	var sb strings.Builder
	sb.WriteString("| figure | unit | A (CRD) | B (annex) | C (via aggregator) | B/A | C/A | ConfigMap |\n")
	sb.WriteString("|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, rw := range rows {
		better := "lower is better"
		if rw.higherIsBetter {
			better = "higher is better"
		}
		fmt.Fprintf(&sb, "| %s | %s (%s) | %s | %s | %s | %s | %s | %s |\n", rw.Figure, rw.Unit, better,
			num(rw.A), num(rw.B), num(rw.C), rw.ratio(rw.B), rw.ratio(rw.C), num(rw.CM))
	}
	return sb.String()
}

// crudRows are figure 1: create, update and get of each shape.
func (r *results) crudRows() []row {
	var rows []row
	cm := r.CRUD[shapeConfigMap.Name][configMapTarget]
	for _, s := range crShapes {
		by := r.CRUD[s.Name]
		if by == nil {
			continue
		}
		for _, op := range []string{"create", "update", "get"} {
			pick := func(c crudStats) opStats { return pickOp(c, op) }
			get := func(t string, f func(opStats) float64) float64 {
				c, ok := by[t]
				if !ok || pick(c).Ops == 0 {
					return nan
				}
				return f(pick(c))
			}
			cmv := func(f func(opStats) float64) float64 {
				if s == shapeReportLarge || pick(cm).Ops == 0 {
					return nan
				}
				return f(pick(cm))
			}
			measured := func(t string) bool { c, ok := by[t]; return ok && pick(c).Ops > 0 }
			if !measured("A") && !measured("B") && !measured("C") {
				continue // skipped for every target (the run's notes say why): no row of dashes
			}
			n := 0
			if c, ok := by["A"]; ok {
				n = pick(c).Ops
			}
			name := fmt.Sprintf("%s %s (%d ops)", op, s.Name, n)
			for _, m := range []struct {
				unit   string
				f      func(opStats) float64
				higher bool
			}{
				{"objects/s", func(o opStats) float64 { return o.PerSecond }, true},
				{"p50 ms", func(o opStats) float64 { return o.Latency.P50 }, false},
				{"p99 ms", func(o opStats) float64 { return o.Latency.P99 }, false},
			} {
				rows = append(rows, row{Figure: name, Unit: m.unit, A: get("A", m.f), B: get("B", m.f), C: get("C", m.f), CM: cmv(m.f), higherIsBetter: m.higher})
			}
		}
	}
	return rows
}

// listRows are figure 2: LIST at each ladder count.
func (r *results) listRows() []row {
	var rows []row
	l := r.Ladder.List
	for i := range r.Plan.Ladder {
		at := func(t string) *listStats {
			if i < len(l[t]) {
				return &l[t][i]
			}
			return nil
		}
		a, b, c := at("A"), at("B"), at("C")
		var cm *listStats
		if i == 0 && len(l[configMapTarget]) > 0 {
			cm = &l[configMapTarget][0]
		}
		count := 0
		if a != nil {
			count = a.Objects
		}
		if b != nil && b.Objects != count {
			count = max(count, b.Objects)
		}
		for _, kind := range []struct {
			name string
			f    func(*listStats) latencies
		}{
			{"full list", func(s *listStats) latencies { return s.Full }},
			{fmt.Sprintf("page (limit %d)", r.Plan.ListLast.PageLimit), func(s *listStats) latencies { return s.Paged }},
			{"label selector matching nothing", func(s *listStats) latencies { return s.Selector }},
		} {
			for _, q := range []string{"p50", "p99"} {
				v := func(s *listStats) float64 {
					if s == nil || kind.f(s).N == 0 {
						return nan
					}
					if q == "p50" {
						return kind.f(s).P50
					}
					return kind.f(s).P99
				}
				n := 0
				if a != nil {
					n = kind.f(a).N
				}
				rows = append(rows, row{Figure: fmt.Sprintf("LIST at %d: %s (%d samples)", count, kind.name, n), Unit: q + " ms", A: v(a), B: v(b), C: v(c), CM: v(cm)})
			}
		}
	}
	return rows
}

// watchRows are figure 3.
func (r *results) watchRows() []row {
	var rows []row
	for _, w := range r.Plan.Watchers {
		for _, q := range []string{"p50", "p99"} {
			v := func(t string) float64 {
				s, ok := r.Watch[t][watchKey(w)]
				if !ok || s.Latency.N == 0 {
					return nan
				}
				if q == "p50" {
					return s.Latency.P50
				}
				return s.Latency.P99
			}
			rows = append(rows, row{Figure: fmt.Sprintf("watch, %d watchers, %d events each", w, r.Plan.WatchEvents), Unit: q + " ms", A: v("A"), B: v("B"), C: v("C"), CM: nan})
		}
	}
	return rows
}

// memoryRows are figure 4: the kube-apiserver (A) and annex (B) at each
// ladder count, and the heap each object costs.
func (r *results) memoryRows() []row {
	var rows []row
	m := r.Ladder.Memory
	counts := r.Ladder.Counts
	for i := 1; i < len(m["A"]) || i < len(m["B"]); i++ {
		get := func(t string, f func(memory) float64) float64 {
			if i < len(m[t]) {
				return f(m[t][i])
			}
			return nan
		}
		count := 0
		if i < len(counts["A"]) {
			count = counts["A"][i]
		}
		if i < len(counts["B"]) {
			count = max(count, counts["B"][i])
		}
		for _, k := range []struct {
			unit string
			f    func(memory) float64
		}{
			{"RSS MiB", func(x memory) float64 { return x.RSS / (1 << 20) }},
			{"heap in use MiB", func(x memory) float64 { return x.HeapInuse / (1 << 20) }},
			{"live heap MiB", func(x memory) float64 { return x.HeapLive / (1 << 20) }},
		} {
			rows = append(rows, row{Figure: fmt.Sprintf("server memory holding %d report objects", count), Unit: k.unit, A: get("A", k.f), B: get("B", k.f), C: nan, CM: nan})
		}
	}
	// Per object: live heap growth from empty to the last count.
	perObj := func(t string) float64 {
		if len(m[t]) < 2 || len(counts[t]) < 2 || counts[t][len(counts[t])-1] == 0 {
			return nan
		}
		return (m[t][len(m[t])-1].HeapLive - m[t][0].HeapLive) / float64(counts[t][len(counts[t])-1])
	}
	cm := nan
	if r.Ladder.ConfigMapCount > 0 {
		cm = (r.Ladder.ConfigMapAfter.HeapLive - r.Ladder.ConfigMapBefore.HeapLive) / float64(r.Ladder.ConfigMapCount)
	}
	rows = append(rows, row{Figure: "live heap per report object (empty to the last count)", Unit: "KiB", A: perObj("A") / 1024, B: perObj("B") / 1024, C: nan, CM: cm / 1024})
	for _, s := range crShapes {
		h := r.HeapPerObject[s.Name]
		if h == nil {
			continue
		}
		v := func(t string) float64 {
			if x, ok := h[t]; ok {
				return x / 1024
			}
			return nan
		}
		cmv := nan
		if x, ok := r.HeapPerObject[shapeConfigMap.Name]; ok && s != shapeReportLarge {
			cmv = x[configMapTarget] / 1024
		}
		rows = append(rows, row{Figure: fmt.Sprintf("live heap per %s object (CRUD phase, %d objects)", s.Name, r.CRUD[s.Name]["A"].Create.Ops), Unit: "KiB", A: v("A"), B: v("B"), C: nan, CM: cmv})
	}
	return rows
}

// isolationRows are figure 5: what the fill of A and of B cost the cluster.
func (r *results) isolationRows() []row {
	iso := r.Ladder.Isolation
	nA, nB := last(r.Ladder.Counts["A"]), last(r.Ladder.Counts["B"])
	return []row{
		{Figure: fmt.Sprintf("cluster etcd DB growth while filling (A: %d, B: %d objects)", nA, nB), Unit: "MiB",
			A: (iso.EtcdAfterA.DBSize - iso.EtcdAfterB.DBSize) / (1 << 20), B: (iso.EtcdAfterB.DBSize - iso.EtcdBefore.DBSize) / (1 << 20), C: nan, CM: nan},
		{Figure: "cluster etcd keys added while filling", Unit: "keys",
			A: iso.EtcdAfterA.Keys - iso.EtcdAfterB.Keys, B: iso.EtcdAfterB.Keys - iso.EtcdBefore.Keys, C: nan, CM: nan},
		{Figure: "kube-apiserver live heap growth while filling", Unit: "MiB",
			A: (iso.KASAfterA.HeapLive - iso.KASAfterB.HeapLive) / (1 << 20), B: (iso.KASAfterB.HeapLive - iso.KASBefore.HeapLive) / (1 << 20), C: nan, CM: nan},
		{Figure: "kube-apiserver RSS growth while filling", Unit: "MiB",
			A: (iso.KASAfterA.RSS - iso.KASAfterB.RSS) / (1 << 20), B: (iso.KASAfterB.RSS - iso.KASBefore.RSS) / (1 << 20), C: nan, CM: nan},
		{Figure: "annex data directory growth while filling B (where B's objects went)", Unit: "MiB",
			A: nan, B: (iso.AnnexDataAfterB - iso.AnnexDataBefore) / (1 << 20), C: nan, CM: nan},
	}
}

func last(s []int) int {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1]
}

// targetLines says where annex stands against each target of the issue.
func (r *results) targetLines() []string {
	var out []string
	verdict := func(ok bool, known bool) string {
		switch {
		case !known:
			return "not measured"
		case ok:
			return "**met**"
		}
		return "**not met**"
	}
	measured := func(xs ...float64) bool {
		for _, x := range xs {
			if math.IsNaN(x) || math.IsInf(x, 0) || x == 0 {
				return false
			}
		}
		return true
	}
	if c := r.CRUD[shapeReport.Name]; c != nil {
		a, b, cc := c["A"].Create.PerSecond, c["B"].Create.PerSecond, c["C"].Create.PerSecond
		out = append(out, fmt.Sprintf("create throughput (report): B/A = %.2f (target >= 1.5): %s; C/A = %.2f (target >= 1.0): %s",
			b/a, verdict(b/a >= 1.5, measured(a, b)), cc/a, verdict(cc/a >= 1.0, measured(a, cc))))
		for _, op := range []struct {
			name string
			rate func(crudStats) float64
		}{
			{"update", func(s crudStats) float64 { return s.Update.PerSecond }},
			{"get", func(s crudStats) float64 { return s.Get.PerSecond }},
		} {
			a, b := op.rate(c["A"]), op.rate(c["B"])
			out = append(out, fmt.Sprintf("%s throughput (report): B/A = %.2f (target >= 1.2): %s", op.name, b/a, verdict(b/a >= 1.2, measured(a, b))))
		}
	}
	if la, lb := r.Ladder.List["A"], r.Ladder.List["B"]; len(la) > 0 && len(lb) > 0 {
		a, b := la[len(la)-1], lb[len(lb)-1]
		ratio := b.Full.P99 / a.Full.P99
		out = append(out, fmt.Sprintf("full LIST p99 at %d objects: B/A = %.2f (target <= 0.3): %s", b.Objects, ratio, verdict(ratio <= 0.3, measured(a.Full.P99, b.Full.P99))))
		paged := b.Paged.P99 / a.Paged.P99
		out = append(out, fmt.Sprintf("paged LIST (limit %d) p99 at %d objects: B/A = %.2f (target <= 0.5): %s", r.Plan.ListLast.PageLimit, b.Objects, paged,
			verdict(paged <= 0.5, measured(a.Paged.P99, b.Paged.P99))))
	}
	rows := r.memoryRows()
	for _, rw := range rows {
		if strings.HasPrefix(rw.Figure, "live heap per report object (empty") {
			ratio := rw.B / rw.A
			out = append(out, fmt.Sprintf("memory per hosted object (live heap of the server, report shape): B/A = %.2f (target <= 0.2): %s; annex's figure includes its embedded etcd, the kube-apiserver's does not include the cluster's etcd",
				ratio, verdict(ratio <= 0.2, measured(rw.A, rw.B))))
		}
	}
	for _, w := range r.Plan.Watchers {
		if s, ok := r.Watch["B"][watchKey(w)]; ok {
			out = append(out, fmt.Sprintf("watch p99 for B with %d watchers: %.2f ms (target < 20 ms): %s", w, s.Latency.P99, verdict(s.Latency.P99 < 20, s.Latency.N > 0)))
		}
	}
	iso := r.Ladder.Isolation
	keys := iso.EtcdAfterB.Keys - iso.EtcdBefore.Keys
	db := iso.EtcdAfterB.DBSize - iso.EtcdBefore.DBSize
	out = append(out, fmt.Sprintf("isolation: filling B with %d objects added %.0f keys and %.1f MiB to the cluster's etcd (A: %.0f keys, %.1f MiB) (target: nothing): %s",
		last(r.Ladder.Counts["B"]), keys, db/(1<<20), iso.EtcdAfterA.Keys-iso.EtcdAfterB.Keys, (iso.EtcdAfterA.DBSize-iso.EtcdAfterB.DBSize)/(1<<20), verdict(keys < 10, iso.EtcdAfterB.Keys > 0)))
	return out
}

// summaryTable is what the driver prints at the end: the headline ratios.
func summaryTable(r *results) string {
	var sb strings.Builder
	sb.WriteString("Targets:\n")
	for _, l := range r.targetLines() {
		sb.WriteString("  - " + strings.ReplaceAll(l, "**", "") + "\n")
	}
	return sb.String()
}

func writeReport(r *results, doc string, plots []string) error {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	w("# Benchmarks: annex against the kube-apiserver's CRD path\n\n")
	w("<!-- Generated by bench/ (%s mode); do not edit by hand: rerun the command below. -->\n\n", r.Mode)
	w("One run on one machine measures the same workload against **A**, the type as a CRD in the\n")
	w("kube-apiserver (stored in the cluster's etcd), **B**, the type as a HostedResource with requests\n")
	w("sent straight to annex, and **C**, the same HostedResource through the kube-apiserver\n")
	w("(aggregation), with a 1 KiB ConfigMap in the kube-apiserver as the reference for a typed\n")
	w("object. Every figure is read in the same run, so the ratios B/A and C/A hold even on a shared\n")
	w("machine where the absolute values do not.\n\n")
	w("Reproduce with:\n\n```sh\n%s\n```\n\n", r.Command)
	if r.Mode != "full" {
		w("> **Quick mode**: tiny counts and a few seconds of load, to prove the harness works. The figures\n> below mean nothing; `make bench` runs the full mode.\n\n")
	}

	w("## Machine and versions\n\n")
	w("| | |\n|---|---|\n")
	w("| CPUs (nproc) | %d |\n| CPU model | %s |\n| memory | %s |\n| kernel | %s |\n| Go (driver and annex) | %s |\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.MemTotal, r.Machine.Kernel, r.Machine.Go)
	keys := make([]string, 0, len(r.Versions))
	for k := range r.Versions {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w("| %s | %s |\n", k, r.Versions[k])
	}
	w("| cluster etcd fsync | %v (annex's embedded etcd always syncs) |\n", r.ClusterEtcdFsync)
	cache := r.HostedCache
	if cache == "" {
		cache = "Lean (the default)"
	}
	w("| B's and C's `spec.storage.cache` | %s |\n", cache)
	w("| annex's `--storage-compression` | %s |\n", storageCompression())
	w("| periodic consistency checks of the caches (`DetectCacheInconsistency`) | %s |\n", onOff(r.ConsistencyChecks, "on in both servers", "off in both servers (see Method)"))
	w("| started (UTC), duration | %s, %.0f s |\n\n", r.Started.Format("2006-01-02 15:04"), r.Seconds)

	w("## Against the targets\n\n")
	for _, l := range r.targetLines() {
		w("- %s\n", l)
	}
	w("\n")

	w("## 1. Create, update, get (%d concurrent clients)\n\n", r.Plan.Clients)
	w("Each target creates its objects, then updates each once (the object returned by its create, so no\n")
	w("conflicts), then gets each once. The ConfigMap column is the typed reference (1 KiB of data) and is\n")
	w("shown next to the shapes of about 1 KiB.\n\n")
	w("%s\n", table(r.crudRows()))

	w("## 2. LIST latency\n\n")
	w("Lists of one namespace holding the report objects of the ladder; C lists B's objects through the\n")
	w("aggregator. Bodies are read to the last byte as JSON and discarded (pages are decoded only for\n")
	w("their continue token), so the figure is the server's time and the transfer, not client decoding.\n")
	w("A page figure is the latency of one page of a walk through the whole list. With fewer than 100\n")
	w("samples p99 is the maximum.")
	if cm := r.Ladder.List[configMapTarget]; len(cm) > 0 {
		w(" The ConfigMap column (first count only) lists %d ConfigMaps of 1 KiB.", cm[0].Objects)
	}
	w("\n\n")
	w("%s\n", table(r.listRows()))

	w("## 3. Watch latency\n\n")
	w("From the response to a create to each watcher receiving the ADDED event, over every watcher and\n")
	w("every object; objects are created one at a time at %.0f/s. An event that arrives before the\n", r.Plan.WatchRate)
	w("create's response counts as 0 ms. The watchers run in the driver's process, on the same 2 cores as\n")
	w("the servers: with 200 watchers, decoding each event 200 times is part of the figure, for every target.\n")
	w("Each watch starts at the resourceVersion of a list of its namespace, as an informer's does, so that\n")
	w("opening 200 watches (without one, the watch cache reads every object of the type for each) is not.\n")
	w("Each watch has an HTTP/2 connection of its own, as the watches of separate controllers do.\n\n")
	w("%s\n", table(r.watchRows()))
	for _, t := range []string{"A", "B", "C"} {
		for _, wn := range r.Plan.Watchers {
			if s, ok := r.Watch[t][watchKey(wn)]; ok && (s.Early > 0 || s.Missed > 0) {
				w("- %s, %d watchers: %d events arrived before the create's response, %d were missed.\n", t, wn, s.Early, s.Missed)
			}
		}
	}
	w("\n")

	w("## 4. Memory\n\n")
	w("Read from each server's `/metrics` after a forced GC: a GET of `/debug/pprof/heap?gc=1` makes the\n")
	w("Go runtime collect before it writes the profile, and both servers serve it (`--profiling` is on by\n")
	w("default), so no GC endpoint is needed; the figure is the minimum over %d such reads %s apart.\n", r.Plan.MemSamples, r.Plan.MemGap)
	w("RSS is `process_resident_memory_bytes`, heap in use `go_memstats_heap_inuse_bytes`, live heap\n")
	w("`go_gc_heap_live_bytes` (what the forced GC marked live; the per-object figures use it). A is the\n")
	w("kube-apiserver alone (the cluster's etcd is a separate process); B is annex, **including its\n")
	w("embedded etcd**, which runs in annex's process.\n\n")
	w("%s\n", table(r.memoryRows()))

	w("## 5. Isolation\n\n")
	w("B is filled first, while the cluster holds nothing of the ladder, then A. The etcd figures come\n")
	w("from the cluster etcd's `/metrics` (`etcd_mvcc_db_total_size_in_bytes`,\n")
	w("`etcd_debugging_mvcc_keys_total`); the DB size grows in steps and never shrinks without a defrag.\n\n")
	w("%s\n", table(r.isolationRows()))

	if len(plots) > 0 {
		w("## Plots\n\n")
		for _, f := range plots {
			rel, err := filepath.Rel(filepath.Dir(doc), f)
			if err != nil {
				rel = f
			}
			w("![%s](%s)\n\n", strings.TrimSuffix(filepath.Base(f), ".png"), filepath.ToSlash(rel))
		}
	}

	w("## Where annex spends its time and memory\n\n")
	if len(r.Profiles) == 0 {
		w("No profiles were captured.\n\n")
	}
	for _, pr := range r.Profiles {
		w("### %s\n\n`%s` (`go tool pprof -top`, first entries by flat value):\n\n```\n%s\n```\n\n", pr.Name, filepath.Base(pr.File), trimPprof(pr.Summary))
	}

	w("## Method and budget\n\n")
	w("- Objects are JSON for every target (the dynamic client; CRDs have no protobuf). Shapes: **report**,\n")
	w("  a policy-report-like object with a summary and 8 results (policy, rule, result, severity, category,\n")
	w("  a nested timestamp, a list of resource references), about %d bytes as JSON; **report-large**, the\n", jsonSize(shapeReport))
	w("  same with 64 results, about %d bytes; **flat**, one 1 KiB string, about %d bytes; the ConfigMap\n", jsonSize(shapeReportLarge), jsonSize(shapeFlat))
	w("  holds one 1 KiB value. The types have full structural schemas, so both servers validate and prune.\n")
	w("- B authenticates with a client certificate for a `system:masters` user issued by the cluster's client\n")
	w("  CA (envtest's): annex trusts that CA (from the `extension-apiserver-authentication` ConfigMap) and\n")
	w("  delegates authorization to the cluster, exactly as for any client. A and C use the kube-apiserver's\n")
	w("  admin certificate. Client-side rate limiting is off; each target uses one HTTP/2 connection\n")
	w("  for its requests, and each watch one of its own.\n")
	w("- The cluster's etcd runs with fsync (envtest turns it off; the driver wraps its etcd binary to drop\n")
	w("  `--unsafe-no-fsync`) so that both etcds pay the same for a write. Both run on the same disk.\n")
	if !r.ConsistencyChecks {
		w("- Both servers run without their periodic consistency checks of their watch caches (the feature gate\n")
		w("  `DetectCacheInconsistency`, on by default since 1.34; `--consistency-checks` leaves them on). Every 5 to\n")
		w("  7.5 minutes a check lists each type from the store and from the cache: at 100,000 report objects the\n")
		w("  kube-apiserver's costs about 8 s of CPU, half of the machine for 15 s, and it lands in whichever phase\n")
		w("  runs then. C's requests pass through the kube-apiserver that holds A's objects, so with the checks on,\n")
		w("  C's figures carried A's checks. The section \"Capacity\" measures annex's checks.\n")
	}
	w("- C's objects are created in annex like B's; C's LIST reads B's objects through the aggregator, so\n")
	w("  100,000 objects are created for A and B only.\n")
	w("- Raw results (every figure, sample counts, errors) are in `results.json` beside the profiles.\n\n")
	w("```\n%s\n```\n\n", r.Plan.budget())
	if len(r.Notes) > 0 {
		w("## Notes from this run\n\n")
		for _, n := range r.Notes {
			w("- %s\n", n)
		}
		w("\n")
	}
	// The sections "Storage backends" and "Capacity" come from commands of
	// their own: keep them.
	return os.WriteFile(doc, []byte(keepSections(doc, sb.String())), 0o644)
}

// trimPprof drops pprof's file and build lines, keeping the table.
func trimPprof(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// annexFlags are further flags for the annex of the kube-apiserver's
// environment (B and C): --annex-flags of the commands that start it.
var annexFlags string

// storageCompression is annex's --storage-compression in this run: the
// default, unless --annex-flags sets it.
func storageCompression() string {
	mode := "S2 (the default)"
	for _, arg := range strings.Fields(annexFlags) {
		if v, ok := strings.CutPrefix(arg, "--storage-compression="); ok {
			mode = v
		}
	}
	return mode
}

// onOff is on when b holds, off otherwise.
func onOff(b bool, on, off string) string {
	if b {
		return on
	}
	return off
}
