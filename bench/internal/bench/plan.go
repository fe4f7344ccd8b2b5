package bench

import (
	"fmt"
	"time"
)

// plan is what one run does: how many objects, samples and seconds.
type plan struct {
	Mode string `json:"mode"`
	// Clients is the number of concurrent clients of the CRUD and fill
	// phases.
	Clients int `json:"clients"`
	// Ops is the number of creates (then updates, then gets) per target,
	// by shape name.
	Ops map[string]int `json:"ops"`
	// PhaseLimit bounds each create, update or get phase.
	PhaseLimit time.Duration `json:"phaseLimit"`
	// Ladder is the object counts (report shape) at which LIST and memory
	// are measured, for A and B (C lists B's objects through the aggregator).
	Ladder []int `json:"ladder"`
	// FillLimit bounds each step of the ladder.
	FillLimit time.Duration `json:"fillLimit"`
	// ConfigMaps is the number of ConfigMaps of the typed reference's
	// memory and LIST figures.
	ConfigMaps int `json:"configMaps"`
	// List is the number of LIST samples at each ladder count; the last
	// count uses ListLast.
	List, ListLast listConfig
	// Watchers are the watcher counts of the watch figure; WatchEvents
	// objects are created at WatchRate per second for each.
	Watchers    []int   `json:"watchers"`
	WatchEvents int     `json:"watchEvents"`
	WatchRate   float64 `json:"watchRate"`
	// ProfileSeconds is the length of each CPU profile of annex.
	ProfileSeconds int `json:"profileSeconds"`
	// MemSamples is the number of reads (after a GC each, MemGap apart)
	// whose minimum is the memory figure.
	MemSamples int           `json:"memSamples"`
	MemGap     time.Duration `json:"memGap"`
	// Budget bounds the whole load: a phase never runs past it, it stops
	// early and says so.
	Budget time.Duration `json:"budget"`
}

// planFor is the full plan, whose arithmetic (under 30 minutes on 2
// cores) is in budget() and in docs/benchmarks.md, or the quick one: a few
// seconds of load with tiny counts, which proves the harness end to end and
// measures nothing worth reading.
func planFor(quick bool) plan {
	pl := plan{
		Mode:           "full",
		Clients:        16,
		Ops:            map[string]int{"report": 20000, "report-large": 1000, "flat": 5000, "configmap": 20000},
		PhaseLimit:     75 * time.Second,
		Ladder:         []int{10000, 100000},
		FillLimit:      5 * time.Minute,
		ConfigMaps:     10000,
		List:           listConfig{Full: 10, PagePasses: 5, Selector: 20, PageLimit: 500},
		ListLast:       listConfig{Full: 3, PagePasses: 1, Selector: 5, PageLimit: 500},
		Watchers:       []int{10, 200},
		WatchEvents:    200,
		WatchRate:      20,
		ProfileSeconds: 20,
		MemSamples:     3,
		MemGap:         2 * time.Second,
		Budget:         27 * time.Minute,
	}
	if quick {
		tiny := listConfig{Full: 3, PagePasses: 1, Selector: 3, PageLimit: 50}
		pl.Mode, pl.PhaseLimit, pl.Ladder, pl.FillLimit, pl.ConfigMaps, pl.List, pl.ListLast = "quick", 10*time.Second, []int{100, 300}, 20*time.Second, 100, tiny, tiny
		pl.Ops = map[string]int{"report": 200, "report-large": 40, "flat": 200, "configmap": 200}
		pl.Watchers, pl.WatchEvents, pl.WatchRate, pl.ProfileSeconds, pl.MemSamples, pl.MemGap, pl.Budget = []int{2, 10}, 10, 50, 1, 1, 0, 3*time.Minute
	}
	return pl
}

// budget explains, with the rates measured once on the 2-core machine the
// issue names (kube-apiserver CRD creates: report 453/s, flat 970/s,
// ConfigMap 1,528/s), how long the plan takes at most and as expected.
func (p plan) budget() string {
	if p.Mode != "full" {
		return "quick mode: every phase is capped at a few seconds."
	}
	return fmt.Sprintf(`Time budget of the full mode (2 cores). Rates measured once on this kind of machine through the
kube-apiserver: report CR creates about 450/s, flat 970/s, ConfigMaps 1,500/s; annex's are of the same order.
- setup (control plane, types, warm-up): about 30 s.
- ladder (report shape), A and B only: fills to %d objects, each step capped at %s:
  at 450/s 100,000 creates take 3.7 min, at 300/s 5.6 min (then the cap stops the fill at about 90,000 and the
  report says so), so 7.5 to 10 min for both; memory after a GC (%d reads %s apart) at each step: about 1 min;
  LIST at 100,000: 3 full lists of about 160 MB each for A, B and C (3 to 10 s each: about 1.5 min), a walk of
  200 pages and 5 selector lists each (about 1 min); at 10,000: about 30 s; 10,000 ConfigMaps: 10 s.
  C creates nothing here: its LIST at 100,000 reads B's objects through the aggregator, because 100,000 more
  creates for C (5 more minutes) do not fit.
- watch: %d objects at %.0f/s for each of %v watchers on A, B and C: about 1.5 min.
- CRUD with %d clients, each phase capped at %s: report 20,000 ops for A, B, C (create and update at 300 to 450/s:
  45 to 75 s each, get 10 to 40 s: 6 to 9 min), ConfigMap 20,000 (about 1 min), report-large 1,000 (create and
  update at about 70 to 90/s: 12 s each, about 1.5 min), flat 5,000 (A at 1,000/s, B and C at about 300/s:
  about 1.5 min): 10 to 13 min.
Expected total: 25 to 28 minutes (measured: 27.4 min of load with 2,000 report-large and 10,000 flat objects,
which cut the flat phases). The whole load also has a budget of %s: a phase that would run past it stops
early (or is skipped) and the report says so, so the run stays under 30 minutes on a slower machine too; the
order (ladder, watch, then CRUD: report, ConfigMap, report-large, flat) puts the least important phases last.`,
		p.Ladder[len(p.Ladder)-1], p.FillLimit, p.MemSamples, p.MemGap,
		p.WatchEvents, p.WatchRate, p.Watchers, p.Clients, p.PhaseLimit, p.Budget)
}
