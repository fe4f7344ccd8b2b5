package bench

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// secs writes a duration in seconds, "–" for none.
func secs(s float64) string {
	if s <= 0 {
		return "–"
	}
	return num(s) + " s"
}

// adoptionSummary is a table of the main figures, one row per count,
// printed at the end of a run.
func adoptionSummary(r *adoptionResults) string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	w("| objects | total | copy | freeze | refused writes retried | other errors | verified | annex RSS after | release: writes refused | release: write-back | error |\n")
	w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, a := range r.Runs {
		relFreeze, relRate := "–", "–"
		if rel := a.Release; rel != nil {
			relFreeze, relRate = secs(rel.FreezeSeconds), num(rel.WriteBackRate)+"/s"
		}
		w("| %s | %s | %s/s | %s | %d | %d | %s of %s | %s | %s | %s | %s |\n", thousands(a.Objects), secs(a.TotalSeconds), num(a.CopyRate),
			secs(a.FreezeSeconds), a.Writer.Refused, a.Writer.Errors, thousands(a.Verify.Served), thousands(a.Verify.Expected),
			mib(a.After.RSS), relFreeze, relRate, orNone(a.Error))
	}
	return sb.String()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}

// freezeVerdict is the verdict against the goal, from the run at the
// goal's count.
func freezeVerdict(r *adoptionResults) string {
	for _, a := range r.Runs {
		if a.Count != goalFreezeObjects {
			continue
		}
		if a.FreezeSeconds == 0 {
			return fmt.Sprintf("not measured: the run at %s objects did not end in an adoption (%s)", thousands(goalFreezeObjects), orNone(a.Error))
		}
		at := thousands(a.Objects)
		if a.Objects != goalFreezeObjects {
			at += " (the fill stopped short of 100,000)"
		}
		return fmt.Sprintf("writes refused for %s at %s objects: %s", secs(a.FreezeSeconds), at,
			verdict(a.FreezeSeconds <= goalFreeze.Seconds(), "met", "not met"))
	}
	return fmt.Sprintf("not measured: no run at %s objects", thousands(goalFreezeObjects))
}

// adoptionSection renders the section, markers included.
func adoptionSection(r *adoptionResults) string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	pl := r.Plan
	adoptionSec.head(w, "Adoption: a CRD of the cluster taken over with its objects", r.Mode)
	w("The kube-apiserver with its aggregation layer and annex in aggregated mode, as in section 1, one control\n")
	w("plane per object count. A CRD of the report shape (section 1, about %d bytes of JSON an object) is created\n", jsonSize(shapeReport))
	w("in the cluster and filled through the kube-apiserver by %d clients (not timed). A writer then writes to it\n", pl.FillClients)
	w("at %.0f writes/s, one at a time, as the writer of the adoption's integration tests does: it creates an object,\n", pl.WriteRate)
	w("updates it %d times (a JSON merge patch of one counter), creates the next, and so on: about %.0f objects\n", pl.CreateEvery-1, pl.WriteRate/float64(pl.CreateEvery))
	w("change a second. `kubectl annex adopt %s --yes`, the plugin built by `make build`,\n", adoptCRDName)
	w("adopts the CRD while it writes. The goal of the issue: writes refused for at most 10 s at 100,000 objects.\n")
	if pl.Release {
		w("Once the adoption is checked, `kubectl annex release %s --yes` gives the type back while a writer\n", adoptCRDName)
		w("writes on (objects of its own, the same rate), and every object is checked again through the cluster, which\n")
		w("serves the type from its own etcd by then. A release writes the objects back with writes accepted, then\n")
		w("refuses writes only while it writes back the last changes.\n")
	}
	w("\n")
	adoptionSec.reproduce(w, r.runInfo)
	w("**Against the goal**: %s.\n\n", freezeVerdict(r))
	w("%s\n", adoptionSummary(r))

	for _, a := range r.Runs {
		w("### %s objects\n\n", thousands(a.Count))
		if a.Error != "" {
			w("**Not measured whole**: %s\n\n", orNone(a.Error))
		}
		w("| figure | value |\n|---|---|\n")
		w("| objects in the cluster when the writer started | %s (filled in %s, %s/s) |\n", thousands(a.Objects), secs(a.Fill.Seconds), num(a.Fill.PerSecond))
		w("| total time (status.adoption startTime → adoptedTime) | %s |\n", secs(a.TotalSeconds))
		w("| copy (annex's step \"copied N objects\") | %s objects in %s: **%s objects/s** |\n", thousands(int(a.Status.Copied)), secs(a.CopySeconds), num(a.CopyRate))
		w("| writes refused (status.adoption.freeze) | **%s** |\n", secs(a.FreezeSeconds))
		w("| writes refused, as the writer saw them | first to last refused attempt %s; the longest a write waited %s |\n",
			secs(a.Writer.RefusedSeconds), secs(a.Writer.LongestWait))
		w("| writer | %d writes acknowledged (%d creates, %d updates) in %s, %s/s; %d refused attempts retried; **%d other errors**%s |\n",
			a.Writer.Writes, a.Writer.Creates, a.Writer.Updates, secs(a.Writer.Seconds), num(a.Writer.PerSecond), a.Writer.Refused, a.Writer.Errors,
			firstErr(a.Writer.FirstError))
		w("| verified afterwards, through the cluster | %s served, %s expected (%s before + %d acknowledged creates); %d missing, %d unexpected, %d updates lost |\n",
			thousands(a.Verify.Served), thousands(a.Verify.Expected), thousands(a.Objects), a.Writer.Creates, a.Verify.Missing, a.Verify.Unexpected, a.Verify.LostUpdates)
		w("| annex's RSS: before → after (highest sampled during) | %s → %s (%s) |\n", mib(a.Before.RSS), mib(a.After.RSS), mib(a.PeakRSS))
		w("| annex's live heap: before → after | %s → %s |\n", mib(a.Before.HeapLive), mib(a.After.HeapLive))
		w("| status.adoption times | start %s, frozen %s, switched %s, adopted %s |\n", clock(a.Status.StartTime), clock(a.Status.FrozenTime),
			clock(a.Status.SwitchedTime), clock(a.Status.AdoptedTime))
		w("| phases seen (polled every %s) | %s |\n", pl.SampleEvery, strings.Join(a.Phases, "; "))
		w("| kubectl annex adopt | exit %d after %s: `%s` |\n", a.Plugin.ExitCode, secs(a.Plugin.Seconds), strings.TrimSpace(a.Plugin.Stdout))
		w("| machine while it ran | load average %.2f at the start; processes outside this run used %s of the CPU |\n", a.Load, percent(a.OthersCPU))
		w("\n")
		if a.Steps != "" {
			w("annex's steps (`steps=` of its log line \"Adopted a CustomResourceDefinition\", freeze=%s):\n\n", a.LogFreeze)
			for step := range strings.SplitSeq(a.Steps, ", ") {
				w("- %s\n", step)
			}
			w("\n")
		}
		if rel := a.Release; rel != nil {
			writeRelease(w, rel)
		}
		for _, n := range a.Notes {
			w("- Note: %s\n", n)
		}
		if len(a.Notes) > 0 {
			w("\n")
		}
	}

	w("How it was measured:\n\n")
	w("- **Total time** runs from status.adoption.startTime to adoptedTime, as annex wrote them (to the second:\n")
	w("  the API writes times without fractions). **Copy** is the\n")
	w("  step \"copied N objects\" of annex's log line: from the start of the reconcile that copied to the end of\n")
	w("  the first copy (pages of 500 listed from the cluster and written into annex's store); the catch-up\n")
	w("  passes that follow are the step \"caught up\". **Writes refused** is status.adoption.freeze, from the\n")
	w("  moment annex saw the cluster refuse a write to the moment it deleted the freeze; the writer's own\n")
	w("  figure, from its first refused attempt to its last (it retries every %s), is beside it.\n", pl.RetryGap)
	w("- **Errors**: any failed write of the writer other than the refusal naming the adoption\n")
	w("  (`adoption.FreezeMessage`), which it retries; they must be 0. **Verified**: every object is listed\n")
	w("  through the kube-apiserver after the adoption, %d a page: their count must be the count before the\n", pl.VerifyPage)
	w("  writer started plus its acknowledged creates, and each object the writer updated must carry its last\n")
	w("  acknowledged update.\n")
	w("- **Memory**: annex's process_resident_memory_bytes and go_gc_heap_live_bytes after a forced GC (the\n")
	w("  least of %d reads), before the writer started and after the checks; the highest RSS is the largest of\n", pl.MemSamples)
	w("  its reads every %s while the adoption ran.\n", pl.SampleEvery)
	w("- **Bounds**: each count has a control plane of its own; its fill stops after %s plus %s an object, its\n", pl.FillBase, pl.FillPer)
	w("  adoption after %s plus %s an object (the plugin's --timeout), the checks after %s plus %s an object,\n", pl.AdoptBase, pl.AdoptPer, pl.VerifyBase, pl.VerifyPer)
	w("  and the whole run after %s.\n", pl.Budget)
	w("- The cluster's etcd runs with fsync: %v (annex's embedded etcd always syncs).\n", pl.ClusterFsync)
	w("- Machine: %s, shared with other work. Load average (1, 5, 15 min)\n", r.Machine.describe())
	w("  before the run %s, after it %s.\n", r.LoadBefore, r.LoadAfter)
	w("- Versions: %s.\n", versionList(r.Versions))
	w("- Started %s UTC; the run took %.0f s. The raw results (`adoption.json`) and annex's and the\n", r.Started.Format("2006-01-02 15:04"), r.Seconds)
	w("  kube-apiserver's logs of each count are in the output directory (`bench/out/adoption/` for\n")
	w("  `make bench-adoption`).\n")
	w("%s", adoptionSec.end())
	return sb.String()
}

// writeRelease writes what was measured of the release that followed an
// adoption.
func writeRelease(w func(string, ...any), rel *releaseRun) {
	w("Then `kubectl annex release %s --yes` gave the type back, the writer writing on:\n\n", adoptCRDName)
	w("| figure | value |\n|---|---|\n")
	w("| release: writes refused (releaseFrozenTime → releasedTime) | **%s** |\n", secs(rel.FreezeSeconds))
	w("| release: write-back (annex's step \"wrote N objects back\") | %s objects (%d recreated with a new uid) in %s: **%s objects/s** |\n",
		thousands(rel.Objects), rel.Recreated, secs(rel.WriteBackSeconds), num(rel.WriteBackRate))
	w("| release: writer | %d writes acknowledged (%d creates, %d updates) in %s; %d refused attempts retried (first to last %s, the longest wait %s); **%d other errors**%s |\n",
		rel.Writer.Writes, rel.Writer.Creates, rel.Writer.Updates, secs(rel.Writer.Seconds), rel.Writer.Refused, secs(rel.Writer.RefusedSeconds),
		secs(rel.Writer.LongestWait), rel.Writer.Errors, firstErr(rel.Writer.FirstError))
	w("| release: verified afterwards, through the cluster (its own etcd) | %s served, %s expected; %d missing, %d unexpected, %d updates lost |\n",
		thousands(rel.Verify.Served), thousands(rel.Verify.Expected), rel.Verify.Missing, rel.Verify.Unexpected, rel.Verify.LostUpdates)
	w("| release: annex's highest RSS sampled | %s |\n", mib(rel.PeakRSS))
	first, _, _ := strings.Cut(strings.TrimSpace(rel.Plugin.Stdout), "\n")
	w("| kubectl annex release (its first line) | exit %d after %s: `%s` |\n\n", rel.Plugin.ExitCode, secs(rel.Plugin.Seconds), first)
	if rel.Steps != "" {
		w("annex's steps (`steps=` of its log line \"Released a CustomResourceDefinition\"):\n\n")
		for step := range strings.SplitSeq(rel.Steps, ", ") {
			w("- %s\n", step)
		}
		w("\n")
	}
}

func firstErr(s string) string {
	if s == "" {
		return ""
	}
	return " (the first: " + orNone(s) + ")"
}

func clock(t *metav1.Time) string {
	if t == nil || t.IsZero() {
		return "–"
	}
	return t.UTC().Format("15:04:05")
}
