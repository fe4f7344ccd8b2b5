package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"annex.dev/annex/test/integration/framework"
)

// The crud command measures the create, update and get phases of the report
// shape alone, on a fresh control plane, for the targets it is given: a
// few minutes instead of the full run's thirty, to compare two builds of
// annex in turns on the same machine (hack/bench-crud-ab.sh). Beside each
// phase's rate and latency it reads the CPU time each process of the run
// spent per operation, and it can profile annex (B's phases) and the
// kube-apiserver (A's) while they run. It writes crud.json; no report.

// crudPhase is one phase of one target.
type crudPhase struct {
	opStats
	// CPUMsPerOp is the CPU time each process of the run (annex,
	// kube-apiserver, etcd, driver) spent per operation, in milliseconds;
	// annex's includes its embedded etcd.
	CPUMsPerOp map[string]float64 `json:"cpuMsPerOp"`
	// OthersCPU is the share of the machine's CPU (0 to 1) that processes
	// outside the run used during the phase.
	OthersCPU float64 `json:"othersCPU"`
}

type crudResults struct {
	runInfo
	Options CRUDOptions `json:"options"`
	// Phases is keyed by target, then phase (create, update, get).
	Phases map[string]map[string]crudPhase `json:"phases"`
	// Profiles are the CPU profiles taken, by server, target and phase ("annex C create").
	Profiles map[string]string `json:"profiles,omitempty"`
	Notes    []string          `json:"notes,omitempty"`
}

// RunCRUD runs the create, update and get phases and writes crud.json
// into the output directory.
func RunCRUD(ctx context.Context, f Flags, opts *CRUDOptions) (retErr error) {
	if opts.Count <= 0 {
		opts.Count = 3000
	}
	p := newProgress(f, 5*time.Second)
	p.logf("bench: crud mode, %d objects per target for %v, output in %s", opts.Count, opts.Targets, f.Out)
	p.stage("start kube-apiserver, etcd and annex")
	b, stop, err := startAggregated(ctx, p, f.Out, true, opts.ConsistencyChecks)
	if err != nil {
		return err
	}
	defer func() {
		if err := stop(retErr != nil); err != nil && retErr == nil {
			retErr = err
		}
	}()
	targets := map[string]*target{"A": b.A, "B": b.B, "C": b.C}
	for _, name := range opts.Targets {
		if targets[name] == nil {
			return fmt.Errorf("unknown target %q: want A, B or C", name)
		}
	}
	r := &crudResults{
		runInfo: newRunInfo(f, "crud", map[string]string{"kube-apiserver": b.kas.version(ctx), "annex": b.annex.version(ctx)}),
		Options: *opts, Phases: map[string]map[string]crudPhase{}, Profiles: map[string]string{},
	}
	note := func(format string, args ...any) {
		r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
		p.logf("note: "+format, args...)
	}

	const clients = 16
	var profileMu sync.Mutex
	p.stage("namespaces and types")
	if err := b.createNamespaces(ctx, "ops-a", "ops-b", "ops-c", "prefill-a", "prefill-b", "warmup"); err != nil {
		return err
	}
	if err := b.installTypes(ctx, "ops-a"); err != nil {
		return err
	}
	p.stage("warm-up: a few creates per path")
	for ti, t := range []*target{b.A, b.B, b.C} {
		from := 9000000 + ti*100
		if st := fill(ctx, p, t, shapeReport, "warmup", from, from+2*clients, clients, 30*time.Second); st.Errors > 0 {
			note("warm-up of %s: %d errors, first: %s", t.Name, st.Errors, st.FirstError)
		}
	}
	if opts.Prefill > 0 {
		for _, t := range []*target{b.B, b.A} {
			p.stage(fmt.Sprintf("%s: prefill %d report objects", t.Name, opts.Prefill))
			ns := nsFor(t, "prefill-a", "prefill-b")
			if st := fill(ctx, p, t, shapeReport, ns, 0, opts.Prefill, clients, 10*time.Minute); st.Errors > 0 || st.Ops < opts.Prefill {
				note("prefill of %s: %d of %d, %d errors", t.Name, st.Ops, opts.Prefill, st.Errors)
			}
		}
	}

	for _, name := range opts.Targets {
		t := targets[name]
		p.stage(fmt.Sprintf("%s: create, update, get %d report objects", name, opts.Count))
		r.Phases[name] = map[string]crudPhase{}
		hook := func(phase string, run func() opStats) opStats {
			var profiled sync.WaitGroup
			if opts.ProfileSeconds > 0 && phase != "get" {
				for _, srv := range profiledServers(b, name) {
					file := filepath.Join(f.Out, fmt.Sprintf("%s-cpu-%s-%s.pb.gz", srv.label, name, phase))
					profiled.Go(func() {
						path := fmt.Sprintf("/debug/pprof/profile?seconds=%d", opts.ProfileSeconds)
						if err := srv.saveProfile(ctx, path, file); err != nil {
							note("CPU profile of %s during %s %s: %v", srv.label, name, phase, err)
							return
						}
						profileMu.Lock()
						r.Profiles[srv.label+" "+name+" "+phase] = file
						profileMu.Unlock()
					})
				}
			}
			// A nil count before is none yet: the counter appears with the first get.
			leanGets := phase == "get" && name != "A"
			var answersBefore map[string]float64
			if leanGets {
				answersBefore = leanGetAnswers(ctx, b.annex)
			}
			before, procsBefore := sampleCPU(), runProcessesCPU()
			st := run()
			after, procsAfter := sampleCPU(), runProcessesCPU()
			if leanGets {
				if n := leanGetsNote(answersBefore, leanGetAnswers(ctx, b.annex)); n != "" {
					note("%s get: %s", name, n)
				}
			}
			profiled.Wait()
			ph := crudPhase{opStats: st, OthersCPU: othersCPU(before, after), CPUMsPerOp: map[string]float64{}}
			if st.Ops > 0 {
				for proc, ticks := range procsAfter {
					ph.CPUMsPerOp[proc] = (ticks - procsBefore[proc]) * msPerTick / float64(st.Ops)
				}
			}
			r.Phases[name][phase] = ph
			return st
		}
		ns := "ops-" + strings.ToLower(name)
		crudPhases(ctx, p, t, shapeReport, ns, opts.Count, clients, 3*time.Minute, hook)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}

	r.Seconds = time.Since(p.start).Seconds()
	if err := writeJSON(f.Out, "crud.json", r); err != nil {
		return err
	}
	fmt.Fprint(f.Log, crudTable(r))
	p.logf("wrote %s", filepath.Join(f.Out, "crud.json"))
	return nil
}

// labelledServer is a server with the name its profiles are filed under.
type labelledServer struct {
	*server
	label string
}

// profiledServers are the servers a target's requests go through: the
// kube-apiserver for A, annex for B, and both for C (the aggregator
// proxies to annex).
func profiledServers(b *bench, target string) []labelledServer {
	kas, annex := labelledServer{b.kas, "kas"}, labelledServer{b.annex, "annex"}
	switch target {
	case "A":
		return []labelledServer{kas}
	case "B":
		return []labelledServer{annex}
	case "C":
		return []labelledServer{kas, annex}
	}
	return nil
}

// crudTable is the results as a table: one line per target and phase.
func crudTable(r *crudResults) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-3s %-7s %6s %8s %8s %8s  %s\n", "", "phase", "ops", "ops/s", "p50 ms", "p99 ms", "CPU ms per op by process (others' share of the machine)")
	for _, name := range r.Options.Targets {
		for _, phase := range []string{"create", "update", "get"} {
			ph, ok := r.Phases[name][phase]
			if !ok {
				continue
			}
			var procs []string
			for proc, ms := range ph.CPUMsPerOp {
				if ms > 0.005 {
					procs = append(procs, fmt.Sprintf("%s %.2f", proc, ms))
				}
			}
			slices.Sort(procs)
			fmt.Fprintf(&sb, "%-3s %-7s %6d %8.1f %8.1f %8.1f  %s (others %.0f%%)\n", name, phase, ph.Ops, ph.PerSecond,
				ph.Latency.P50, ph.Latency.P99, strings.Join(procs, ", "), 100*ph.OthersCPU)
		}
	}
	return sb.String()
}

// msPerTick is the length of a clock tick of /proc's CPU times: USER_HZ,
// 100 on Linux.
const msPerTick = 10.0

// runProcessesCPU is the CPU time (user and system, in clock ticks) that each
// process this run started has used, by command name (etcd,
// kube-apiserver; "annex" for annex, whatever its binary is called), and
// the driver's own as "driver".
func runProcessesCPU() map[string]float64 {
	// The kernel keeps the first 15 bytes of a command's name.
	annexComm := filepath.Base(os.Getenv(framework.AnnexBinEnv))
	annexComm = annexComm[:min(len(annexComm), 15)]
	stats, self := readProcStats(), os.Getpid()
	out := map[string]float64{"driver": stats[self].cpu}
	for pid, st := range stats {
		if pid == self || !inRun(stats, pid, self) {
			continue
		}
		name := st.name
		if name == annexComm {
			name = "annex"
		}
		out[name] += st.cpu
	}
	return out
}
