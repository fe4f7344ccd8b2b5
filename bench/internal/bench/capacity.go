package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"annex.dev/annex/test/process"
)

// The capacity command (`make bench-capacity`) fills one hosted type with many
// objects of the report shape on annex's embedded etcd and on PostgreSQL,
// restarts annex on the filled store and measures what a user of a type
// that large gets: the time from start to ready and to a full cache,
// annex's memory, paged LIST and watch latency.
//
// The fill goes through the store, not through the API (1,000,000 creates
// through annex would take about an hour): annex creates one object, the
// driver reads what annex stored and writes variants of it in exactly that
// format (capacity_fill.go). The fill is not part of any timed figure.

// capacityPlan is what the capacity command does on each store.
type capacityPlan struct {
	Mode string `json:"mode"`
	// Count is the number of objects of the type, the one created
	// through the API included.
	Count int `json:"count"`
	// EtcdBatch is the number of puts in one etcd transaction of the fill
	// (etcd's default --max-txn-ops, which annex's embedded etcd keeps);
	// kine takes one create per transaction. FillClients write at once.
	EtcdBatch   int `json:"etcdBatch"`
	FillClients int `json:"fillClients"`
	// KineClients write to kine at once, one create each.
	KineClients int `json:"kineClients"`
	// FillLimit bounds the fill of each store; a fill that reaches it stops
	// and the store is measured with what it holds.
	FillLimit time.Duration `json:"fillLimit"`
	// ReadyLimit bounds the wait for /readyz, and again for a full cache.
	ReadyLimit time.Duration `json:"readyLimit"`
	// Samples filled objects are compared with the API-created one.
	Samples int `json:"samples"`
	// Pages pages of PageLimit objects are listed one after another.
	Pages     int `json:"pages"`
	PageLimit int `json:"pageLimit"`
	// Watchers watches receive WatchEvents creates made at WatchRate per
	// second.
	Watchers    int     `json:"watchers"`
	WatchEvents int     `json:"watchEvents"`
	WatchRate   float64 `json:"watchRate"`
	// ProfileSeconds is the length of the CPU profile of annex taken from
	// /readyz on, while its cache fills.
	ProfileSeconds int `json:"profileSeconds"`
	// ConsistencyCheck waits, at the end, for a periodic check of the
	// full cache against the store (every 5 to 7.5 minutes), which lists
	// the whole type from the store again: up to about 10 minutes more
	// per store, and twice as long as the cache took to fill.
	ConsistencyCheck bool `json:"consistencyCheck"`
	// MemoryLimit is GOMEMLIMIT in annex's environment, as a container's
	// memory limit gives it through --memory-limit-ratio; empty for none.
	MemoryLimit string `json:"memoryLimit,omitempty"`
	// MemSamples reads of memory, MemGap apart, after a forced GC each.
	MemSamples int           `json:"memSamples"`
	MemGap     time.Duration `json:"memGap"`
	// Budget bounds the whole run.
	Budget time.Duration `json:"budget"`
}

// defaultCapacityCount is the object count of the goal.
const defaultCapacityCount = 1_000_000

// The goals of the issue, at 1,000,000 objects.
const (
	goalRSS   = 4 << 30
	goalReady = 2 * time.Minute
)

// capacityQuota is the embedded etcd's quota: annex's default
// --embedded-etcd-quota-backend-bytes, given to annex and to the fill
// explicitly so that both open the store alike.
const capacityQuota = 8 << 30

func capacityPlanFor(f Flags, count int) (capacityPlan, error) {
	pl := capacityPlan{Mode: f.mode("capacity", "capacity-quick"), EtcdBatch: 128, FillClients: 4, KineClients: 16, Samples: 20, PageLimit: 500,
		Watchers: 10, WatchRate: 20, MemSamples: 3, MemGap: 2 * time.Second}
	if f.Quick {
		// Proves the harness end to end; the figures mean nothing.
		pl.Count, pl.FillLimit, pl.ReadyLimit, pl.Pages, pl.PageLimit, pl.WatchEvents, pl.MemSamples, pl.MemGap, pl.Budget =
			2000, 2*time.Minute, 2*time.Minute, 5, 50, 10, 1, 0, 10*time.Minute
		pl.ProfileSeconds = 1
	} else {
		// At 1,000,000 on 2 cores: the fills about 1 and 9 minutes, each
		// start 10 to 13 minutes, the LIST and watch figures 2 to 3
		// minutes per store: about 40 minutes; the limits leave room for
		// a machine shared with other work.
		pl.Count, pl.FillLimit, pl.ReadyLimit, pl.Pages, pl.WatchEvents, pl.Budget =
			defaultCapacityCount, 15*time.Minute, 25*time.Minute, 200, 200, 60*time.Minute
		pl.ProfileSeconds = 30
	}
	if count > 0 {
		pl.Count = count
	}
	if pl.Count < 2 {
		return capacityPlan{}, usageError{fmt.Errorf("--count=%d: the type needs the API-created object and at least one filled one", pl.Count)}
	}
	return pl, nil
}

// capacityKinds are the stores of the capacity command: annex's default and
// PostgreSQL. An external etcd is the embedded one's code in another
// process, and would add nothing but that process.
func capacityKinds(slugs []string) ([]backendKind, error) {
	var out []backendKind
	for _, s := range slugs {
		found := false
		for _, k := range backendKinds {
			if k.slug == s && k.slug != "external-etcd" {
				out = append(out, k)
				found = true
			}
		}
		if !found {
			return nil, usageError{fmt.Errorf("--stores: unknown store %q (want embedded-etcd, postgres)", s)}
		}
	}
	return out, nil
}

// capacityResults is what one run of the capacity command measured; it is
// written as capacity.json and rendered into a section of the report.
type capacityResults struct {
	runInfo
	Plan   capacityPlan    `json:"plan"`
	Stores []capacityStore `json:"stores"`

	deadline time.Time
}

// capacityStore is what was measured on one store.
type capacityStore struct {
	Name string `json:"name"`
	// Template is what annex stored for the object created through the API.
	Template templateFacts `json:"template"`
	Fill     fillStats     `json:"fill"`
	// Verified is the number of filled objects that annex served as it
	// serves the API-created one, through the store and through its cache.
	Verified int `json:"verified"`
	// Disk is the store's size after the fill: the embedded etcd's data
	// directory (bbolt file and WAL), or PostgreSQL's database.
	Disk disk `json:"disk"`
	// ReadySeconds runs from annex's start to /readyz answering 200;
	// CacheSeconds to its cache answering a LIST with resourceVersion=0.
	ReadySeconds float64 `json:"readySeconds"`
	CacheSeconds float64 `json:"cacheSeconds"`
	// CacheInitializations is apiserver_watch_cache_initializations_total
	// of the type when the cache answered.
	CacheInitializations float64 `json:"cacheInitializations"`
	// StartCPUSeconds is the CPU time annex used from its start to a full
	// cache; StartProfile summarises its CPU profile from /readyz on.
	StartCPUSeconds float64 `json:"startCPUSeconds"`
	StartProfile    string  `json:"startProfile,omitempty"`
	// ChecksAtFull and ChecksAtEnd count the consistency checks of the
	// type's cache against the store, by status, when the cache was full
	// and at the end of the measurements; AfterCPUSeconds is the CPU time
	// annex used in between.
	ChecksAtFull    map[string]float64 `json:"consistencyChecksAtFull"`
	ChecksAtEnd     map[string]float64 `json:"consistencyChecksAtEnd"`
	AfterCPUSeconds float64            `json:"afterCPUSeconds"`
	// Check is a consistency check of the full cache, when the plan waits
	// for one.
	Check *consistencyCheck `json:"consistencyCheck,omitempty"`
	// Empty is annex's memory holding the type with its one API-created
	// object, before the fill; Full after the restart on the filled store,
	// once its cache is full; End at the end of the measurements, minutes
	// later, once the Go runtime has had time to return freed memory.
	Empty procMemory `json:"empty"`
	Full  procMemory `json:"full"`
	End   procMemory `json:"end"`
	// HeapPerObject is the growth of the live heap from Empty to Full per
	// object.
	HeapPerObject float64 `json:"heapPerObjectBytes"`
	// HWM is VmHWM at the end of the run: annex's peak RSS since its start
	// on the filled store.
	HWM float64 `json:"vmHWMBytes"`
	// Paged is each page of a walk of Pages pages (limit PageLimit).
	Paged latencies  `json:"paged"`
	Watch watchStats `json:"watch"`
	// Postgres holds annex's PostgreSQL metrics once its cache is full.
	Postgres map[string]float64 `json:"postgresMetrics,omitempty"`
	// HeapProfile summarises annex's heap once its cache is full.
	HeapProfile string `json:"heapProfile,omitempty"`
	outcome
}

// consistencyCheck is what the first periodic consistency check of the
// cache against the store cost annex.
type consistencyCheck struct {
	// Status is the check's result (success, failure, error), "" if none
	// came within the wait.
	Status string `json:"status"`
	// Seconds is the time from a full cache to the check's result.
	Seconds float64 `json:"seconds"`
	// CPUSeconds is the CPU time annex used while the driver waited; an
	// idle annex uses little, so it is mostly the check's.
	CPUSeconds float64 `json:"cpuSeconds"`
	// After is annex's memory after the check.
	After procMemory `json:"after"`
}

type disk struct {
	// Bytes is the store's total size; Detail names its parts.
	Bytes  float64            `json:"bytes"`
	Detail map[string]float64 `json:"detail,omitempty"`
}

// procMemory is annex's memory: the harness's figures from /metrics after a
// forced GC, and the kernel's from /proc/<pid>.
type procMemory struct {
	memory
	// VmRSS, RssAnon and RssFile are /proc/<pid>/status's; VmHWM its peak
	// RSS.
	VmRSS   float64 `json:"vmRSSBytes"`
	VmHWM   float64 `json:"vmHWMBytes"`
	RssAnon float64 `json:"rssAnonBytes"`
	RssFile float64 `json:"rssFileBytes"`
	// Bolt is the resident part of the embedded etcd's bbolt file, which
	// etcd maps into annex's memory (from /proc/<pid>/smaps): file-backed
	// pages the kernel can drop and read again, not heap.
	Bolt float64 `json:"boltRssBytes"`
}

// RunCapacity fills and measures each store in turn, writes capacity.json
// and the logs into the output directory and, when every store was
// measured, the section "Capacity" of the report.
func RunCapacity(ctx context.Context, f Flags, opts *CapacityOptions) error {
	pl, err := capacityPlanFor(f, opts.Count)
	if err != nil {
		return err
	}
	pl.ConsistencyCheck = opts.WaitCheck
	pl.MemoryLimit = opts.MemoryLimit
	kinds, err := capacityKinds(opts.Stores)
	if err != nil {
		return err
	}
	s, err := startSession(f, capacitySec, 10*time.Second)
	if err != nil {
		return err
	}
	defer s.close()
	r := &capacityResults{runInfo: s.info(annexDependencies(s.bin)), Plan: pl, deadline: time.Now().Add(pl.Budget)}
	s.p.logf("bench: %s mode, %d objects of the report shape on %d stores, budget %s; logs in %s, report %s",
		r.Mode, pl.Count, len(kinds), pl.Budget, f.Out, f.Doc)
	s.p.logf("load average before the run: %s", r.LoadBefore)

	failed, err := s.each(ctx, len(kinds), func(i int) string { return kinds[i].Name }, func(i int) string {
		k := kinds[i]
		res := r.runStore(ctx, s.p, k, s.bin, filepath.Join(s.work, k.slug), filepath.Join(f.Out, "logs", k.slug), f.Out)
		r.Stores = append(r.Stores, res)
		return res.Error
	})
	if err != nil {
		return err
	}
	return s.finish(&r.runInfo, r, failed, false, func() string { return capacitySection(r) }, func() string { return capacityTables(r) })
}

// limit is d, shortened so that a phase never runs past the run's budget.
func (r *capacityResults) limit(d time.Duration) time.Duration {
	return max(min(d, time.Until(r.deadline)), time.Second)
}

// The namespaces of the capacity command: the filled objects, and the watch
// figure's creates (an empty namespace, as in the other commands).
const capacityNamespace, capacityWatchNamespace = "capacity", "capacity-watch"

// runStore measures one store: annex creates the type and one object, the
// driver fills the store with annex stopped, then annex starts again on
// the filled store and is measured.
func (r *capacityResults) runStore(ctx context.Context, p *progress, k backendKind, bin, dataDir, logDir, outDir string) (res capacityStore) {
	res.Name = k.Name
	fail, note, done := measuring(&res, &res.outcome, p, k.Name)
	defer done()
	pl := r.Plan
	annexDir := filepath.Join(dataDir, "annex")

	p.stage(k.Name + ": start the store and annex, create the type and one object through the API")
	st, err := startStore(ctx, k, dataDir, logDir, r.Versions)
	if err != nil {
		return fail("%v", err)
	}
	defer res.stopping(st.stop, "stopping the store")
	args := st.Args
	if k.slug == "embedded-etcd" {
		args = append(args, "--embedded-etcd-quota-backend-bytes="+strconv.Itoa(capacityQuota))
	}
	var env []string
	if pl.MemoryLimit != "" {
		env = append(os.Environ(), "GOMEMLIMIT="+pl.MemoryLimit)
		// The lean caches' budget, by default half of that limit, would
		// refuse the watch phase's creates: this run measures what the
		// objects cost, not the budget.
		args = append(args, "--lean-cache-budget=0")
	}
	running, err := startReplicaWithin(ctx, bin, "annex", annexDir, logDir, args, env, 2*time.Minute)
	if err != nil {
		return fail("%v", err)
	}
	// running is the annex process up at the moment, stopped on the way out.
	defer func() {
		if running != nil {
			if err := running.stop(); err != nil {
				fail("%v", err)
			}
		}
	}()
	if v := running.target.Server.version(ctx); v != "" {
		r.Versions["annex"] = v
	}
	if err := installReportType(ctx, running, capacityNamespace, capacityWatchNamespace); err != nil {
		return fail("%v", err)
	}
	gvr := running.target.gvr(shapeReport)
	first := shapeReport.object(gvr.GroupVersion().String(), capacityNamespace, 0)
	if _, err := running.target.Dyn.Resource(gvr).Namespace(capacityNamespace).Create(ctx, first, metav1.CreateOptions{}); err != nil {
		return fail("creating %s through the API: %v", first.GetName(), err)
	}
	res.Empty, err = readProcMemory(ctx, running, pl, "")
	if err != nil {
		return fail("reading annex's memory: %v", err)
	}
	p.logf("%s: annex holding the type and one object: RSS %s, live heap %s", k.Name, mib(res.Empty.VmRSS), mib(res.Empty.HeapLive))
	p.stage(k.Name + ": stop annex")
	err = running.stop()
	running = nil
	if err != nil {
		return fail("%v", err)
	}

	p.stage(fmt.Sprintf("%s: fill the store to %d objects, annex stopped (not timed)", k.Name, pl.Count))
	fs, err := openFillStore(ctx, k.slug, annexDir, st, logDir, pl)
	if err != nil {
		return fail("opening the store to fill it: %v", err)
	}
	tmpl, err := fs.readTemplate(ctx, capacityNamespace, first.GetName())
	if err != nil {
		_ = fs.close()
		return fail("%v", err)
	}
	res.Template = tmpl.Facts()
	p.logf("%s: annex stored %s as %d bytes of JSON (apiVersion %s; metadata: %s)", k.Name, res.Template.Key, res.Template.ValueBytes,
		res.Template.APIVersion, strings.Join(res.Template.MetadataFields, ", "))
	res.Fill = fs.fill(ctx, p, tmpl, 1, pl.Count, r.limit(pl.FillLimit))
	if res.Fill.TimedOut {
		note("the fill stopped at its time limit (%s) with %d objects of %d", pl.FillLimit, res.Fill.Objects+1, pl.Count)
	}
	if res.Fill.Error != "" {
		_ = fs.close()
		return fail("filling: %s", res.Fill.Error)
	}
	res.Disk, err = fs.settle(ctx, p, &res.Fill)
	if cerr := fs.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail("%v", err)
	}
	objects := res.Fill.Objects + 1
	p.logf("%s: the store holds %d objects in %s", k.Name, objects, mib(res.Disk.Bytes))
	if ctx.Err() != nil {
		return fail("%v", ctx.Err())
	}

	p.stage(fmt.Sprintf("%s: start annex on %d objects (timed: to /readyz, then to a full cache)", k.Name, objects))
	// The first start's admin kubeconfig would let the driver in before
	// this annex writes its own.
	if err := os.Remove(filepath.Join(annexDir, "kubeconfig")); err != nil {
		return fail("%v", err)
	}
	t0 := time.Now()
	running, err = startReplicaWithin(ctx, bin, "annex-filled", annexDir, logDir, args, env, r.limit(pl.ReadyLimit))
	if err != nil {
		return fail("%v", err)
	}
	res.ReadySeconds = time.Since(t0).Seconds()
	p.logf("%s: /readyz answered 200 after %.1f s", k.Name, res.ReadySeconds)
	startProfile := filepath.Join(outDir, "annex-cpu-start-"+k.slug+".pb.gz")
	profiled := make(chan error, 1)
	go func() {
		profiled <- running.target.Server.saveProfile(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", pl.ProfileSeconds), startProfile)
	}()
	path := running.target.listPath(shapeReport, capacityNamespace)
	if err := waitCacheFull(ctx, p, running, path, r.limit(pl.ReadyLimit)); err != nil {
		return fail("%v", err)
	}
	res.CacheSeconds = time.Since(t0).Seconds()
	cacheFull := time.Now()
	res.StartCPUSeconds, _ = processCPU(running.Process().Pid())
	res.ChecksAtFull, _ = consistencyChecks(ctx, running.target.Server)
	if err := <-profiled; err != nil {
		note("CPU profile from /readyz on: %v", err)
	} else {
		res.StartProfile = pprofTop(startProfile, 15)
	}
	if body, err := running.target.Server.get(ctx, "/metrics"); err == nil {
		_ = os.WriteFile(filepath.Join(logDir, "metrics-cache-full.txt"), body, 0o644)
		name := "apiserver_watch_cache_initializations_total"
		labels := map[string]string{"group": hostedGroup, "resource": shapeReport.Plural}
		if v := parseLabelledMetrics(body, labels, name)[name]; !math.IsNaN(v) {
			res.CacheInitializations = v
		}
	}
	p.logf("%s: the cache answered a LIST with resourceVersion=0 and a field selector after %.1f s (%s of the type: %s); annex used %.1f s of CPU to then",
		k.Name, res.CacheSeconds, "apiserver_watch_cache_initializations_total", num(res.CacheInitializations), res.StartCPUSeconds)

	p.stage(fmt.Sprintf("%s: compare %d filled objects with the API-created one", k.Name, pl.Samples))
	res.Verified, err = verifyFilled(ctx, running.target.Server, path, first.GetName(), objects, pl.Samples)
	if err != nil {
		return fail("the filled objects are not served as the API-created one: %v", err)
	}
	p.logf("%s: %d filled objects served as the API-created one, from the store and from the cache", k.Name, res.Verified)

	p.stage(k.Name + ": memory once the cache is full")
	boltFile := ""
	if k.slug == "embedded-etcd" {
		boltFile = filepath.Join(annexDir, "data", "etcd", "data", "member", "snap", "db")
	}
	res.Full, err = readProcMemory(ctx, running, pl, boltFile)
	if err != nil {
		return fail("reading annex's memory: %v", err)
	}
	res.HeapPerObject = (res.Full.HeapLive - res.Empty.HeapLive) / float64(objects-1)
	p.logf("%s: RSS %s (anonymous %s, file-backed %s of which bbolt %s), VmHWM %s, live heap %s, %.0f bytes of heap per object",
		k.Name, mib(res.Full.VmRSS), mib(res.Full.RssAnon), mib(res.Full.RssFile), mib(res.Full.Bolt), mib(res.Full.VmHWM),
		mib(res.Full.HeapLive), res.HeapPerObject)
	heap := filepath.Join(outDir, "annex-heap-"+k.slug+".pb.gz")
	if err := running.target.Server.saveProfile(ctx, "/debug/pprof/heap?gc=1", heap); err != nil {
		note("heap profile: %v", err)
	} else {
		res.HeapProfile = pprofTop(heap, 12, "-sample_index=inuse_space")
	}
	if k.slug == "postgres" {
		m, err := running.metrics(ctx, "annex_postgres_database_size_bytes", "annex_postgres_table_size_bytes",
			"annex_postgres_current_revision", "annex_postgres_compacted_revision")
		if err != nil {
			note("reading annex's PostgreSQL metrics: %v", err)
		}
		// A metric annex did not report is left out (JSON has no NaN).
		maps.DeleteFunc(m, func(_ string, v float64) bool { return math.IsNaN(v) })
		res.Postgres = m
	}

	p.stage(fmt.Sprintf("%s: a walk of %d pages of %d", k.Name, pl.Pages, pl.PageLimit))
	res.Paged, err = walkPages(ctx, running.target.Server, path, pl.PageLimit, pl.Pages)
	if err != nil {
		return fail("paged LIST: %v", err)
	}
	p.logf("%s: %d pages of %d: p50 %.1f ms, p99 %.1f ms, max %.1f ms", k.Name, res.Paged.N, pl.PageLimit, res.Paged.P50, res.Paged.P99, res.Paged.Max)

	p.stage(fmt.Sprintf("%s: watch latency, %d watchers, %d creates at %.0f/s", k.Name, pl.Watchers, pl.WatchEvents, pl.WatchRate))
	if time.Until(r.deadline) < time.Duration(float64(pl.WatchEvents)/pl.WatchRate*float64(time.Second))+30*time.Second {
		note("watch latency skipped: the run's budget is spent")
	} else {
		res.Watch, err = measureWatch(ctx, p, running.target, shapeReport, capacityWatchNamespace, pl.Watchers, pl.WatchEvents, pl.WatchRate)
		if err != nil {
			return fail("watch: %v", err)
		}
	}
	if pl.ConsistencyCheck {
		// The first check comes 5 to 7.5 minutes after the type's storage
		// opened (at /readyz), the next as long after the last one ended;
		// one on a filling cache ends at once in an error. A check lists
		// the whole type again, about as long as the fill took.
		fillTook := time.Duration((res.CacheSeconds - res.ReadySeconds) * float64(time.Second))
		wait := 7*time.Minute + 30*time.Second + 2*fillTook + time.Minute
		if time.Until(r.deadline) < wait {
			note("the wait for a consistency check (up to %s) skipped: the run's budget is spent", wait.Round(time.Second))
		} else {
			p.stage(fmt.Sprintf("%s: wait for a consistency check of the full cache against the store (at most %s)", k.Name, wait.Round(time.Second)))
			c, err := waitConsistencyCheck(ctx, running, res.ChecksAtFull, wait)
			if err != nil {
				return fail("%v", err)
			}
			if c.Status == "" {
				note("no consistency check of the full cache within %s", wait.Round(time.Second))
			} else {
				c.Seconds = time.Since(cacheFull).Seconds()
				if c.After, err = readProcMemory(ctx, running, pl, boltFile); err != nil {
					return fail("reading annex's memory: %v", err)
				}
				p.logf("%s: consistency check: %s, %.0f s after the cache was full, %.1f s of CPU while waiting; then RSS %s, live heap %s, VmHWM %s",
					k.Name, c.Status, c.Seconds, c.CPUSeconds, mib(c.After.VmRSS), mib(c.After.HeapLive), mib(c.After.VmHWM))
			}
			res.Check = c
		}
	}
	res.End, err = readProcMemory(ctx, running, pl, boltFile)
	if err != nil {
		return fail("reading annex's memory: %v", err)
	}
	p.logf("%s: at the end, %s after the cache was full: RSS %s (anonymous %s, file-backed %s), live heap %s", k.Name,
		time.Since(cacheFull).Round(time.Second), mib(res.End.VmRSS), mib(res.End.RssAnon), mib(res.End.RssFile), mib(res.End.HeapLive))
	// What the heap gained since the cache was full, for the log.
	endHeap := filepath.Join(outDir, "annex-heap-end-"+k.slug+".pb.gz")
	if err := running.target.Server.saveProfile(ctx, "/debug/pprof/heap?gc=1", endHeap); err != nil {
		note("heap profile at the end: %v", err)
	} else if res.HeapProfile != "" {
		p.logf("%s: the live heap at the end against the full cache's (in use, top 10):\n%s", k.Name,
			pprofTop(endHeap, 10, "-sample_index=inuse_space", "-diff_base="+heap))
	}
	res.ChecksAtEnd, _ = consistencyChecks(ctx, running.target.Server)
	if cpu, err := processCPU(running.Process().Pid()); err == nil {
		res.AfterCPUSeconds = cpu - res.StartCPUSeconds
	}
	p.logf("%s: consistency checks of the type's cache when it was full %v, at the end %v; annex used %.1f s of CPU after its cache was full",
		k.Name, res.ChecksAtFull, res.ChecksAtEnd, res.AfterCPUSeconds)
	if m, err := process.Status(running.Process().Pid()); err == nil {
		res.HWM = m["VmHWM"]
	}
	p.logf("%s: annex's peak RSS since its start on the filled store (VmHWM): %s", k.Name, mib(res.HWM))
	p.stage(k.Name + ": stop")
	return res
}

// readProcMemory reads annex's memory once it is quiet: the harness's
// figures after forced GCs, then /proc/<pid>. boltFile, if set, is the
// bbolt file whose resident pages are counted apart.
func readProcMemory(ctx context.Context, rep *replica, pl capacityPlan, boltFile string) (procMemory, error) {
	m, err := rep.target.Server.memory(ctx, pl.MemSamples, pl.MemGap)
	if err != nil {
		return procMemory{}, err
	}
	out := procMemory{memory: m}
	pid := rep.Process().Pid()
	status, err := process.Status(pid)
	if err != nil {
		return procMemory{}, err
	}
	out.VmRSS, out.VmHWM, out.RssAnon, out.RssFile = status["VmRSS"], status["VmHWM"], status["RssAnon"], status["RssFile"]
	if boltFile != "" {
		if out.Bolt, err = mappedRSS(pid, boltFile); err != nil {
			return procMemory{}, err
		}
	}
	return out, nil
}

// mappedRSS is the resident size of the mappings of file in process pid,
// from /proc/<pid>/smaps.
func mappedRSS(pid int, file string) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, err
	}
	var total float64
	in := false
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		// A mapping's header starts with its address range, "lo-hi".
		if strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = len(f) >= 6 && f[len(f)-1] == file
			continue
		}
		if in && f[0] == "Rss:" && len(f) == 3 {
			n, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, err
			}
			total += n * 1024
		}
	}
	return total, nil
}

// consistencyChecks are apiserver_storage_consistency_checks_total of the
// report type, by status (success, failure, error).
func consistencyChecks(ctx context.Context, srv *server) (map[string]float64, error) {
	body, err := srv.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	name := "apiserver_storage_consistency_checks_total"
	out := map[string]float64{}
	for _, status := range []string{"success", "failure", "error"} {
		labels := map[string]string{"group": hostedGroup, "resource": shapeReport.Plural, "status": status}
		if v := parseLabelledMetrics(body, labels, name)[name]; !math.IsNaN(v) {
			out[status] = v
		}
	}
	return out, nil
}

// waitConsistencyCheck waits up to timeout for a check of the full cache,
// one that succeeded or failed after the counts before.
func waitConsistencyCheck(ctx context.Context, rep *replica, before map[string]float64, timeout time.Duration) (*consistencyCheck, error) {
	pid := rep.Process().Pid()
	cpuBefore, err := processCPU(pid)
	if err != nil {
		return nil, err
	}
	c := &consistencyCheck{}
	err = wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		if exited, err := rep.Process().Exited(); exited {
			return false, fmt.Errorf("annex exited: %v (log %s)", err, rep.LogFile)
		}
		counts, err := consistencyChecks(ctx, rep.target.Server)
		if err != nil {
			return false, nil
		}
		for _, status := range []string{"success", "failure"} {
			if counts[status] > before[status] {
				c.Status = status
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil && !wait.Interrupted(err) {
		return nil, err
	}
	cpuAfter, err := processCPU(pid)
	if err != nil {
		return nil, err
	}
	c.CPUSeconds = cpuAfter - cpuBefore
	return c, nil
}

// processCPU is the CPU time, user and system, that process pid has used,
// in seconds, from /proc/<pid>/stat (clock ticks of 1/100 s, Linux's USER_HZ).
func processCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, in parentheses, start with the
	// state (field 3); utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, data)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, data)
	}
	return (utime + stime) / 100, nil
}

// waitCacheFull waits until annex answers a LIST of path with
// resourceVersion=0 and a field selector on the name of object 0, which
// only a full cache answers: while the type's watch cache fills, annex
// answers it 429. (A LIST with a limit and no selector it would send to the
// store instead, whatever its resourceVersion.)
func waitCacheFull(ctx context.Context, p *progress, rep *replica, path string, timeout time.Duration) error {
	var lastErr error
	q := url.Values{"resourceVersion": {"0"}, "fieldSelector": {"metadata.name=" + objectName(0)}}
	start, next := time.Now(), time.Now().Add(p.every)
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if exited, err := rep.Process().Exited(); exited {
			return false, fmt.Errorf("annex exited while its cache filled: %v (log %s)", err, rep.LogFile)
		}
		if time.Now().After(next) {
			next = next.Add(p.every)
			status, _ := process.Status(rep.Process().Pid())
			cpu, _ := processCPU(rep.Process().Pid())
			p.logf("  the cache is filling: %s so far, annex's RSS %s, %.0f s of CPU", time.Since(start).Round(time.Second), mib(status["VmRSS"]), cpu)
		}
		_, _, lastErr = timedGet(ctx, rep.target.Server, path, q, false)
		return lastErr == nil, nil
	})
	if err != nil {
		return fmt.Errorf("the cache did not fill within %s: %w; last answer: %v", timeout, err, lastErr)
	}
	return nil
}

// verifyFilled compares samples filled objects, and the last one, with the
// API-created object named first: GET through the store and GET with
// resourceVersion=0 through the cache must give the same bytes but for
// the name, uid and resourceVersion.
func verifyFilled(ctx context.Context, srv *server, listPath, first string, objects, samples int) (int, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	picks := []int{objects - 1}
	for range samples - 1 {
		picks = append(picks, 1+rng.IntN(objects-1))
	}
	verified := 0
	for _, q := range []string{"", "?resourceVersion=0"} {
		want, err := srv.get(ctx, listPath+"/"+first+q)
		if err != nil {
			return 0, err
		}
		wantNorm, err := normalizeServed(want)
		if err != nil {
			return 0, err
		}
		for _, i := range picks {
			name := objectName(i)
			got, err := srv.get(ctx, listPath+"/"+name+q)
			if err != nil {
				return 0, err
			}
			gotNorm, err := normalizeServed(got)
			if err != nil {
				return 0, err
			}
			if gotNorm != wantNorm {
				return 0, fmt.Errorf("GET %s%s differs from the API-created object:\n%s\nwant (the API-created one):\n%s", name, q, gotNorm, wantNorm)
			}
		}
		verified = len(picks)
	}
	return verified, nil
}

// normalizeServed is a served object with its name, uid and
// resourceVersion replaced by placeholders.
func normalizeServed(body []byte) (string, error) {
	var obj struct {
		Metadata struct {
			Name, UID, ResourceVersion string
		}
	}
	if err := json.Unmarshal(body, &obj); err != nil {
		return "", err
	}
	m := obj.Metadata
	if m.Name == "" || m.UID == "" || m.ResourceVersion == "" {
		return "", fmt.Errorf("a served object without name, uid or resourceVersion: %.300s", body)
	}
	s := string(body)
	for _, r := range [][2]string{{m.Name, "NAME"}, {m.UID, "UID"}, {m.ResourceVersion, "RV"}} {
		s = strings.ReplaceAll(s, strconv.Quote(r[0]), strconv.Quote(r[1]))
	}
	return s, nil
}

// walkPages lists path limit objects at a time, following the continue
// token, for pages pages (or to the end), and times each page.
func walkPages(ctx context.Context, srv *server, path string, limit, pages int) (latencies, error) {
	var durations []time.Duration
	cont := ""
	for range pages {
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if cont != "" {
			q.Set("continue", cont)
		}
		d, next, err := timedGet(ctx, srv, path, q, true)
		if err != nil {
			return latencies{}, err
		}
		durations = append(durations, d)
		if cont = next; cont == "" {
			break
		}
	}
	return summarise(durations), nil
}

// gib is bytes in GiB, for the verdicts.
func gib(b float64) string {
	if math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.2f GiB", b/(1<<30))
}
