package bench

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

// results is everything one run measured; it is written as results.json and
// rendered into the report.
type results struct {
	runInfo
	Plan             plan `json:"plan"`
	ClusterEtcdFsync bool `json:"clusterEtcdFsync"`
	// HostedCache is spec.storage.cache of B's and C's HostedResources;
	// empty for the default, the lean cache.
	HostedCache string `json:"hostedCache,omitempty"`
	// ConsistencyChecks says that the servers' periodic consistency checks
	// were left on.
	ConsistencyChecks bool `json:"consistencyChecks"`
	// Phases are the phases run (--phases); the report has only their
	// figures.
	Phases []string `json:"phases"`

	Ladder ladder `json:"ladder"`
	// CRUD is keyed by shape, then target (A, B, C, ConfigMap).
	CRUD map[string]map[string]crudStats `json:"crud"`
	// HeapPerObject is the growth of the live heap per object created in
	// the CRUD phase, by shape, then A (kube-apiserver) or B (annex).
	HeapPerObject map[string]map[string]float64 `json:"heapPerObjectBytes"`
	// Watch is keyed by target, then "watchers=N".
	Watch map[string]map[string]watchStats `json:"watch"`
	// Profiles are annex's profiles and their summaries.
	Profiles []profile `json:"profiles"`
	// Notes are things that went wrong or deserve a word in the report.
	Notes []string `json:"notes,omitempty"`

	deadline time.Time
}

// ladder is the report shape at growing object counts.
type ladder struct {
	// Counts are the object counts reached (index 0 is the empty baseline).
	Counts map[string][]int `json:"counts"`
	// Fill is the create phase that reached each count, for A and B.
	Fill map[string][]opStats `json:"fill"`
	// Memory is the kube-apiserver's (A) and annex's (B) memory at each
	// count, baseline first.
	Memory map[string][]memory `json:"memory"`
	// List is keyed by target (A, B, C, ConfigMap), one entry per count.
	List map[string][]listStats `json:"list"`
	// ConfigMaps is the typed reference: the kube-apiserver's memory
	// before and after ConfigMaps were created.
	ConfigMapCount  int    `json:"configMapCount"`
	ConfigMapBefore memory `json:"configMapBefore"`
	ConfigMapAfter  memory `json:"configMapAfter"`
	// Isolation is what the cluster holds before and after each fill.
	Isolation isolation `json:"isolation"`
}

// isolation is the cluster's etcd and kube-apiserver before and after the
// fills of B (which must leave them alone) and of A.
type isolation struct {
	EtcdBefore, EtcdAfterB, EtcdAfterA etcdState
	KASBefore, KASAfterB, KASAfterA    memory
	// AnnexDataBefore and AnnexDataAfterB are the sizes of annex's data
	// directory (its embedded etcd), where B's objects go instead.
	AnnexDataBefore, AnnexDataAfterB float64
}

type profile struct {
	Name    string `json:"name"`
	File    string `json:"file"`
	Summary string `json:"summary"`
}

type machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpuModel"`
	MemTotal string `json:"memTotal"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	m.MemTotal = procField("/proc/meminfo", "MemTotal")
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	return m
}

// procField is the value of the first "key: value" line of a /proc file.
func procField(file, key string) string {
	f, err := os.Open(file)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// limit is d, shortened so that a phase never runs past the run's budget.
func (r *results) limit(d time.Duration) time.Duration {
	left := time.Until(r.deadline)
	if left < d {
		d = left
	}
	return max(d, time.Second)
}

func (r *results) note(p *progress, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.Notes = append(r.Notes, msg)
	p.logf("note: %s", msg)
}

// Run measures everything, in an order chosen so that each memory figure
// is read on servers that hold only what it is about: the ladder (memory,
// LIST, isolation) first on empty servers, then watch, then the CRUD phases.
func (r *results) Run(ctx context.Context, p *progress, b *bench, outDir string) {
	r.deadline = time.Now().Add(r.Plan.Budget)
	pl := r.Plan
	nsA, nsB, nsCM := "ladder-a", "ladder-b", "ladder-cm"
	namespaces := []string{nsA, nsB, nsCM, "ops-a", "ops-b", "ops-c", "ops-cm", "warmup"}
	for _, t := range []*target{b.A, b.B, b.C} {
		for _, w := range pl.Watchers {
			namespaces = append(namespaces, watchNamespace(t, w))
		}
	}
	p.stage("namespaces and types (CRDs for A, HostedResources for B and C)")
	if err := b.createNamespaces(ctx, namespaces...); err != nil {
		r.note(p, "setup failed: %v", err)
		return
	}
	if err := b.installTypes(ctx, nsA); err != nil {
		r.note(p, "setup failed: %v", err)
		return
	}
	// The first requests for a type on a server pay for setting it up
	// (storage, watch cache, schema): a few creates on every path first keep
	// that out of the figures.
	p.stage("warm-up: a few creates per type and path")
	for ti, t := range []*target{b.A, b.B, b.C, b.CM} {
		shapes := crShapes
		if t == b.CM {
			shapes = []shape{shapeConfigMap}
		}
		for _, s := range shapes {
			from := 9000000 + ti*100 // names no other phase uses
			if st := fill(ctx, p, t, s, "warmup", from, from+2*pl.Clients, pl.Clients, r.limit(30*time.Second)); st.Errors > 0 {
				r.note(p, "warm-up of %s %s: %d errors, first: %s", t.Name, s.Name, st.Errors, st.FirstError)
			}
		}
	}

	// Watch before CRUD: it is short, and if the budget runs out it is the
	// last CRUD phases (the least important shapes) that are cut.
	phases := []struct {
		name string
		run  func()
	}{
		{"ladder", func() { r.runLadder(ctx, p, b, outDir) }},
		{"watch", func() { r.runWatch(ctx, p, b, outDir) }},
		{"crud", func() { r.runCRUD(ctx, p, b) }},
	}
	for _, ph := range phases {
		if !slices.Contains(r.Phases, ph.name) {
			r.note(p, "the %s phase was not run (--phases=%s): its figures are missing", ph.name, strings.Join(r.Phases, ","))
			continue
		}
		ph.run()
		if ctx.Err() != nil {
			return
		}
	}
}

func watchNamespace(t *target, watchers int) string {
	return fmt.Sprintf("watch-%s-%d", strings.ToLower(t.Name), watchers)
}

func (r *results) mem(ctx context.Context, p *progress, s *server, what string) memory {
	m, err := s.memory(ctx, r.Plan.MemSamples, r.Plan.MemGap)
	if err != nil {
		r.note(p, "reading the memory of %s (%s): %v", s.Name, what, err)
		return memory{}
	}
	p.logf("%s memory (%s): RSS %s, heap in use %s, live heap %s", s.Name, what, mib(m.RSS), mib(m.HeapInuse), mib(m.HeapLive))
	return m
}

func (r *results) etcd(ctx context.Context, p *progress, b *bench, what string) etcdState {
	e, err := b.etcd.etcdState(ctx)
	if err != nil {
		r.note(p, "reading the cluster's etcd metrics (%s): %v", what, err)
	}
	p.logf("cluster etcd (%s): db %s (in use %s), %.0f keys", what, mib(e.DBSize), mib(e.DBInUse), e.Keys)
	return e
}

// leanGetAnswers reads annex's count of the gets of lean types by answer
// (annex_lean_get_requests_total): from the cache's encoding, or why not.
func leanGetAnswers(ctx context.Context, annex *server) map[string]float64 {
	body, err := annex.get(ctx, "/metrics")
	if err != nil {
		return nil
	}
	return sumByLabel(body, "annex_lean_get_requests_total", "answer")
}

// leanGetsNote says how annex answered the gets between two reads of
// leanGetAnswers, "" if it cannot: a get of B or C answered by the
// upstream handler (stale, for one) costs as much as before the lean gets.
func leanGetsNote(before, after map[string]float64) string {
	var parts []string
	for _, answer := range slices.Sorted(maps.Keys(after)) {
		if n := after[answer] - before[answer]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", answer, n))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "annex answered its lean gets (annex_lean_get_requests_total by answer): " + strings.Join(parts, ", ")
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// cpuProfile starts a CPU profile of annex in the background, for the
// plan's ProfileSeconds or, when given, seconds; wait returns when it is
// written.
func (r *results) cpuProfile(ctx context.Context, p *progress, b *bench, outDir, name string, seconds ...int) (done <-chan struct{}) {
	ch := make(chan struct{})
	file := filepath.Join(outDir, "annex-cpu-"+name+".pb.gz")
	length := r.Plan.ProfileSeconds
	if len(seconds) > 0 {
		length = seconds[0]
	}
	go func() {
		defer close(ch)
		if err := b.annex.saveProfile(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", length), file); err != nil {
			r.note(p, "CPU profile %s: %v", name, err)
			return
		}
		r.Profiles = append(r.Profiles, profile{Name: "CPU, " + name, File: file, Summary: pprofTop(file, 15)})
		p.logf("CPU profile of annex (%s) in %s", name, file)
	}()
	return ch
}

func (r *results) runLadder(ctx context.Context, p *progress, b *bench, outDir string) {
	pl := r.Plan
	lad := &r.Ladder
	lad.Counts = map[string][]int{"A": {0}, "B": {0}}
	lad.Fill = map[string][]opStats{}
	lad.List = map[string][]listStats{}
	lad.Memory = map[string][]memory{}

	p.stage("memory baseline")
	lad.Isolation.EtcdBefore = r.etcd(ctx, p, b, "before any fill")
	lad.Isolation.KASBefore = r.mem(ctx, p, b.kas, "empty")
	lad.Isolation.AnnexDataBefore = dirSize(b.env.AnnexDataDir())
	lad.Memory["A"] = []memory{lad.Isolation.KASBefore}
	lad.Memory["B"] = []memory{r.mem(ctx, p, b.annex, "empty")}

	last := len(pl.Ladder) - 1
	// B first: while B fills, the kube-apiserver holds nothing of the
	// ladder, so its growth (and the etcd's) is what B costs the cluster.
	for _, t := range []*target{b.B, b.A} {
		ns := nsFor(t, "ladder-a", "ladder-b")
		from := 0
		for i, count := range pl.Ladder {
			p.stage(fmt.Sprintf("%s: report objects %d to %d", t.Name, from, count))
			var profDone <-chan struct{}
			if t == b.B && i == last {
				profDone = r.cpuProfile(ctx, p, b, outDir, "create")
			}
			st := fill(ctx, p, t, shapeReport, ns, from, count, pl.Clients, r.limit(pl.FillLimit))
			if profDone != nil {
				<-profDone
			}
			reached := from + st.Ops
			if st.Errors > 0 || reached < count {
				r.note(p, "%s reached %d of %d report objects (%d errors)", t.Name, reached, count, st.Errors)
			}
			lad.Fill[t.Name] = append(lad.Fill[t.Name], st)
			lad.Counts[t.Name] = append(lad.Counts[t.Name], reached)
			from = reached
			if ctx.Err() != nil {
				return
			}
			if t == b.B {
				lad.Memory["B"] = append(lad.Memory["B"], r.mem(ctx, p, b.annex, fmt.Sprintf("holding %d B objects", reached)))
			} else {
				lad.Memory["A"] = append(lad.Memory["A"], r.mem(ctx, p, b.kas, fmt.Sprintf("holding %d A objects", reached)))
			}
			if i == last {
				if t == b.B {
					lad.Isolation.EtcdAfterB = r.etcd(ctx, p, b, "after B's fill")
					lad.Isolation.KASAfterB = r.mem(ctx, p, b.kas, "after B's fill")
					lad.Isolation.AnnexDataAfterB = dirSize(b.env.AnnexDataDir())
					heap := filepath.Join(outDir, "annex-heap.pb.gz")
					if err := b.annex.saveProfile(ctx, "/debug/pprof/heap?gc=1", heap); err != nil {
						r.note(p, "heap profile: %v", err)
					} else {
						r.Profiles = append(r.Profiles, profile{Name: fmt.Sprintf("heap (in use) holding %d report objects", reached), File: heap, Summary: pprofTop(heap, 15, "-sample_index=inuse_space")})
					}
				} else {
					lad.Isolation.EtcdAfterA = r.etcd(ctx, p, b, "after A's fill")
					lad.Isolation.KASAfterA = lad.Memory["A"][len(lad.Memory["A"])-1]
				}
			}
			cfg := pl.List
			if i == last {
				cfg = pl.ListLast
			}
			p.stage(fmt.Sprintf("%s: LIST at %d objects", t.Name, reached))
			if t == b.B {
				var profDone <-chan struct{}
				if i == last {
					profDone = r.cpuProfile(ctx, p, b, outDir, "list")
				}
				lad.List["B"] = append(lad.List["B"], measureList(ctx, p, b.B, shapeReport, ns, reached, cfg))
				if profDone != nil {
					// Keep annex listing until the profile ends, so that it
					// holds only the LIST workload.
					for waiting := true; waiting; {
						select {
						case <-profDone:
							waiting = false
						default:
							_, _, _ = timedGet(ctx, b.annex, b.B.listPath(shapeReport, ns), nil, false)
						}
					}
				}
				// C lists the same objects through the aggregator.
				lad.List["C"] = append(lad.List["C"], measureList(ctx, p, b.C, shapeReport, ns, reached, cfg))
			} else {
				lad.List["A"] = append(lad.List["A"], measureList(ctx, p, b.A, shapeReport, ns, reached, cfg))
			}
		}
	}

	p.stage(fmt.Sprintf("ConfigMap reference: %d ConfigMaps of 1 KiB", pl.ConfigMaps))
	lad.ConfigMapBefore = lad.Memory["A"][len(lad.Memory["A"])-1]
	st := fill(ctx, p, b.CM, shapeConfigMap, "ladder-cm", 0, pl.ConfigMaps, pl.Clients, r.limit(pl.FillLimit))
	lad.ConfigMapCount = st.Ops
	lad.ConfigMapAfter = r.mem(ctx, p, b.kas, fmt.Sprintf("after %d ConfigMaps", st.Ops))
	lad.List[configMapTarget] = []listStats{measureList(ctx, p, b.CM, shapeConfigMap, "ladder-cm", st.Ops, pl.List)}
}

func nsFor(t *target, a, b string) string {
	if t.Name == "A" {
		return a
	}
	return b
}

func (r *results) runCRUD(ctx context.Context, p *progress, b *bench) {
	pl := r.Plan
	r.CRUD = map[string]map[string]crudStats{}
	r.HeapPerObject = map[string]map[string]float64{}
	// The headline shape and its typed reference first: if the budget runs
	// out, the phases it cuts are the last ones.
	for _, s := range []shape{shapeReport, shapeConfigMap, shapeReportLarge, shapeFlat} {
		r.CRUD[s.Name] = map[string]crudStats{}
		targets := []*target{b.A, b.B, b.C}
		if s == shapeConfigMap {
			targets = []*target{b.CM}
		}
		for _, t := range targets {
			if time.Until(r.deadline) < 5*time.Second {
				r.note(p, "%s %s create, update, get skipped: the run's budget is spent", t.Name, s.Name)
				continue
			}
			p.stage(fmt.Sprintf("%s: create, update, get %d %s objects", t.Name, pl.Ops[s.Name], s.Name))
			// Memory per object is read on the server that holds the
			// objects: not for C, whose objects land in annex beside B's.
			var srv *server
			switch t {
			case b.A, b.CM:
				srv = b.kas
			case b.B:
				srv = b.annex
			}
			var before memory
			if srv != nil {
				before = r.mem(ctx, p, srv, "before "+t.Name+" "+s.Name)
			}
			ns := "ops-" + strings.ToLower(t.Name)
			if t == b.CM {
				ns = "ops-cm"
			}
			// B's and C's gets reach annex's lean types; A's and the ConfigMaps' do not.
			leanGets := t == b.B || t == b.C
			var answersBefore map[string]float64
			if leanGets {
				answersBefore = leanGetAnswers(ctx, b.annex)
			}
			st := crud(ctx, p, t, s, ns, pl.Ops[s.Name], pl.Clients, r.limit(pl.PhaseLimit))
			if leanGets {
				if n := leanGetsNote(answersBefore, leanGetAnswers(ctx, b.annex)); n != "" {
					r.note(p, "%s %s: %s", t.Name, s.Name, n)
				}
			}
			r.CRUD[s.Name][t.Name] = st
			if srv != nil && st.Create.Ops > 0 {
				after := r.mem(ctx, p, srv, "after "+t.Name+" "+s.Name)
				if r.HeapPerObject[s.Name] == nil {
					r.HeapPerObject[s.Name] = map[string]float64{}
				}
				r.HeapPerObject[s.Name][t.Name] = (after.HeapLive - before.HeapLive) / float64(st.Create.Ops)
			}
			if ctx.Err() != nil {
				return
			}
		}
	}
}

// runWatch measures watch latency. For B with the most watchers it also
// profiles annex and the driver (whose watchers decode every event), for
// as long as the events are created.
func (r *results) runWatch(ctx context.Context, p *progress, b *bench, outDir string) {
	pl := r.Plan
	r.Watch = map[string]map[string]watchStats{}
	for _, t := range []*target{b.A, b.B, b.C} {
		r.Watch[t.Name] = map[string]watchStats{}
		for _, w := range pl.Watchers {
			p.stage(fmt.Sprintf("%s: watch latency with %d watchers", t.Name, w))
			if time.Until(r.deadline) < 10*time.Second {
				r.note(p, "watch %s with %d watchers skipped: the run's budget is spent", t.Name, w)
				continue
			}
			var profiled <-chan struct{}
			stopDriver := func() {}
			if t == b.B && w == slices.Max(pl.Watchers) {
				seconds := 1 + int(math.Ceil(float64(pl.WatchEvents)/pl.WatchRate))
				profiled = r.cpuProfile(ctx, p, b, outDir, "watch", seconds)
				stopDriver = r.driverProfile(p, filepath.Join(outDir, "driver-cpu-watch.pb.gz"), fmt.Sprintf("CPU of the driver, %s watch with %d watchers", t.Name, w))
			}
			st, err := measureWatch(ctx, p, t, shapeReport, watchNamespace(t, w), w, pl.WatchEvents, pl.WatchRate)
			stopDriver()
			if profiled != nil {
				<-profiled
			}
			if err != nil {
				r.note(p, "watch %s with %d watchers: %v", t.Name, w, err)
				continue
			}
			r.Watch[t.Name][watchKey(w)] = st
		}
	}
}

// driverProfile profiles the driver's CPU until the returned function is
// called.
func (r *results) driverProfile(p *progress, file, name string) (stop func()) {
	f, err := os.Create(file)
	if err != nil {
		r.note(p, "driver profile: %v", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		r.note(p, "driver profile: %v", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			r.note(p, "driver profile: %v", err)
			return
		}
		r.Profiles = append(r.Profiles, profile{Name: name, File: file, Summary: pprofTop(file, 15)})
		p.logf("%s in %s", name, file)
	}
}

func watchKey(w int) string { return fmt.Sprintf("watchers=%d", w) }
