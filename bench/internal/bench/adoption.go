package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	annexv1alpha1 "annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/controllers/adoption"
	"annex.dev/annex/test/integration/framework"
)

// The adoption command (`make bench-adoption`) measures annex taking over a
// CRD of the cluster with its objects, as `kubectl annex adopt` does it, at
// a few object counts. For each count it starts a control plane of its own
// (the cluster's etcd, the kube-apiserver with aggregation, annex in
// aggregated mode), creates a CRD of the report shape in the cluster and
// fills it through the kube-apiserver (not timed), then runs a writer that
// creates and updates objects at a steady rate, adopts the CRD with the
// built kubectl-annex, and checks afterwards that every object and every
// acknowledged write is served through the cluster.

// adoptionPlan is what the adoption command does at each count.
type adoptionPlan struct {
	Mode string `json:"mode"`
	// Counts are the object counts the CRD is filled with, one control
	// plane each, in order.
	Counts []int `json:"counts"`
	// FillClients create the objects at once.
	FillClients int `json:"fillClients"`
	// WriteRate is the writer's writes per second; one write in
	// CreateEvery creates an object, the others update the object it
	// created last (a JSON merge patch of one counter).
	WriteRate   float64 `json:"writeRate"`
	CreateEvery int     `json:"createEvery"`
	// WriterLead is how long the writer runs before the adoption starts,
	// and again after it ended.
	WriterLead time.Duration `json:"writerLead"`
	// RetryGap is the writer's pause before it retries a refused write.
	RetryGap time.Duration `json:"retryGap"`
	// Fill, adoption and verification are bounded by a base plus a time
	// per object each, and all by Budget.
	FillBase     time.Duration `json:"fillBase"`
	FillPer      time.Duration `json:"fillPerObject"`
	AdoptBase    time.Duration `json:"adoptBase"`
	AdoptPer     time.Duration `json:"adoptPerObject"`
	VerifyBase   time.Duration `json:"verifyBase"`
	VerifyPer    time.Duration `json:"verifyPerObject"`
	Budget       time.Duration `json:"budget"`
	MemSamples   int           `json:"memSamples"`
	MemGap       time.Duration `json:"memGap"`
	SampleEvery  time.Duration `json:"sampleEvery"`
	VerifyPage   int           `json:"verifyPage"`
	PluginPolls  time.Duration `json:"-"`
	ClusterFsync bool          `json:"clusterEtcdFsync"`
	// Release gives the type back (kubectl annex release) after the
	// adoption, the writer writing on, and checks the cluster's objects.
	Release bool `json:"release"`
}

// The goal of the issue: writes refused for at most 10 s at 100,000 objects.
const (
	goalFreeze        = 10 * time.Second
	goalFreezeObjects = 100_000
)

func adoptionPlanFor(f Flags, counts []int) adoptionPlan {
	pl := adoptionPlan{Mode: f.mode("adoption", "adoption-quick"), Release: true, FillClients: 16, WriteRate: 20, CreateEvery: 3, WriterLead: 3 * time.Second,
		RetryGap: 100 * time.Millisecond, MemSamples: 3, MemGap: 2 * time.Second, SampleEvery: time.Second, VerifyPage: 500,
		FillBase: 2 * time.Minute, FillPer: 10 * time.Millisecond, AdoptBase: 5 * time.Minute, AdoptPer: 6 * time.Millisecond,
		VerifyBase: 2 * time.Minute, VerifyPer: 2 * time.Millisecond}
	if f.Quick {
		// Proves the harness end to end; the figures mean nothing.
		pl.Counts, pl.MemSamples, pl.MemGap, pl.Budget = []int{200}, 1, 0, 10*time.Minute
	} else {
		// On 2 cores: the fill through the kube-apiserver about 200
		// objects/s, the adoption about as long again; about 25 minutes
		// at 10,000 and 100,000, the bounds leave room for a shared machine.
		pl.Counts, pl.Budget = []int{10_000, 100_000}, 60*time.Minute
	}
	if len(counts) > 0 {
		pl.Counts = counts
	}
	return pl
}

// adoptionResults is what one run of the adoption command measured; it is
// written as adoption.json and rendered into a section of the report.
type adoptionResults struct {
	runInfo
	Plan adoptionPlan  `json:"plan"`
	Runs []adoptionRun `json:"runs"`

	deadline time.Time
}

// adoptionRun is what was measured at one object count.
type adoptionRun struct {
	// Count is the count asked for; Objects the cluster's count of the
	// type when the writer started (the fill's acknowledged creates).
	Count   int     `json:"count"`
	Objects int     `json:"objects"`
	Fill    opStats `json:"fill"`
	// Status is status.adoption once the adoption ended.
	Status annexv1alpha1.AdoptionStatus `json:"status"`
	// TotalSeconds runs from startTime to adoptedTime; CopySeconds is the
	// step "copied N objects" of annex's log, and CopyRate the objects it
	// copied per second.
	TotalSeconds float64 `json:"totalSeconds"`
	CopySeconds  float64 `json:"copySeconds"`
	CopyRate     float64 `json:"copyRate"`
	// FreezeSeconds is status.adoption.freeze.
	FreezeSeconds float64 `json:"freezeSeconds"`
	// LogLine is annex's line "Adopted a CustomResourceDefinition"; Steps
	// and LogFreeze its steps= and freeze=.
	LogLine   string `json:"logLine"`
	Steps     string `json:"steps"`
	LogFreeze string `json:"logFreeze"`
	// Phases are the phases (and reasons of a wait) seen while the
	// adoption ran, with the time since it was started.
	Phases []string `json:"phases"`
	// Plugin is how kubectl annex adopt went.
	Plugin pluginRun   `json:"plugin"`
	Writer writerStats `json:"writer"`
	Verify verifyStats `json:"verify"`
	// Before is annex's memory before the adoption, After once it ended
	// and the objects were verified; PeakRSS the highest RSS sampled
	// while the adoption ran.
	Before  memory  `json:"before"`
	After   memory  `json:"after"`
	PeakRSS float64 `json:"peakRSSBytes"`
	// OthersCPU is the share of the machine's CPU that processes outside
	// this run used while the adoption ran; Load the 1-minute load
	// average when it started.
	OthersCPU float64 `json:"othersCPUDuringAdoption"`
	Load      float64 `json:"load1m"`
	// Release is the release that followed, when the plan has one.
	Release *releaseRun `json:"release,omitempty"`
	outcome
}

// releaseRun is what was measured of the release that follows an adoption.
type releaseRun struct {
	Plugin pluginRun `json:"plugin"`
	// LogLine is annex's line "Released a CustomResourceDefinition"; the
	// others are its values: objects written back, of them recreated with
	// a new uid, writes refused (the whole release), and its steps.
	LogLine       string  `json:"logLine"`
	Objects       int     `json:"objects"`
	Recreated     int     `json:"recreated"`
	FreezeSeconds float64 `json:"freezeSeconds"`
	Steps         string  `json:"steps"`
	// WriteBackRate is the objects written back a second, from the step
	// "wrote N objects of CRD back".
	WriteBackSeconds float64     `json:"writeBackSeconds"`
	WriteBackRate    float64     `json:"writeBackRate"`
	Writer           writerStats `json:"writer"`
	Verify           verifyStats `json:"verify"`
	PeakRSS          float64     `json:"peakRSSBytes"`
}

type pluginRun struct {
	Args     []string `json:"args"`
	Seconds  float64  `json:"seconds"`
	ExitCode int      `json:"exitCode"`
	Stdout   string   `json:"stdout"`
	Stderr   string   `json:"stderr"`
}

// The adopted CRD's group: its own, the only CRD of the group (annex adopts
// whole groups), apart from the other commands' groups.
const adoptGroup = "adopt.bench.example.com"

// adoptNamespace holds the adopted type's objects.
const adoptNamespace = "adopt"

// adoptCRDName is the name of the adopted CRD, and of its HostedResource.
var adoptCRDName = shapeReport.Plural + "." + adoptGroup

// RunAdoption measures the adoption at each count in turn, writes
// adoption.json and the logs into the output directory and the section
// "Adoption" of the report with what was measured; it fails if a count was
// not measured whole.
func RunAdoption(ctx context.Context, f Flags, opts *AdoptionOptions) error {
	s, err := startSession(f, adoptionSec, 10*time.Second)
	if err != nil {
		return err
	}
	defer s.close()
	plugin := filepath.Join(filepath.Dir(s.bin), "kubectl-annex")
	if err := checkBinary(plugin); err != nil {
		return fmt.Errorf("%w (make build builds annex-apiserver and kubectl-annex side by side)", err)
	}
	pl := adoptionPlanFor(f, opts.Counts)
	pl.ClusterFsync = opts.ClusterEtcdFsync
	r := &adoptionResults{runInfo: s.info(map[string]string{}), Plan: pl, deadline: time.Now().Add(pl.Budget)}
	s.p.logf("bench: %s mode, a CRD of the report shape adopted at %v objects with a writer at %.0f/s, budget %s; logs in %s, report %s",
		r.Mode, pl.Counts, pl.WriteRate, pl.Budget, f.Out, f.Doc)
	s.p.logf("load average before the run: %s", r.LoadBefore)

	label := func(i int) string { return thousands(pl.Counts[i]) + " objects" }
	failed, err := s.each(ctx, len(pl.Counts), label, func(i int) string {
		n := pl.Counts[i]
		res := r.runCount(ctx, s.p, n, plugin, filepath.Join(f.Out, "logs", strconv.Itoa(n)))
		r.Runs = append(r.Runs, res)
		return res.Error
	})
	if err != nil {
		return err
	}
	return s.finish(&r.runInfo, r, failed, true, func() string { return adoptionSection(r) }, func() string { return adoptionSummary(r) })
}

// limit is base plus per for each of n objects, shortened so that a phase
// never runs past the run's budget.
func (r *adoptionResults) limit(base, per time.Duration, n int) time.Duration {
	return max(min(base+time.Duration(n)*per, time.Until(r.deadline)), time.Second)
}

// runCount measures the adoption of a CRD of n objects in a control plane
// of its own.
func (r *adoptionResults) runCount(ctx context.Context, p *progress, n int, plugin, logDir string) (res adoptionRun) {
	res.Count = n
	fail, note, done := measuring(&res, &res.outcome, p, thousands(n)+" objects")
	defer done()
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fail("%v", err)
	}
	pl := r.Plan
	what := thousands(n) + " objects"

	p.stage(what + ": start the cluster's etcd, the kube-apiserver and annex")
	b, stop, err := startAggregated(ctx, p, logDir, pl.ClusterFsync, true)
	if err != nil {
		return fail("starting the control plane: %v", err)
	}
	defer func() {
		// The logs stay in logDir whatever happens.
		for src, dst := range map[string]string{b.env.AnnexLog: "annex.log", b.env.APIServerLog: "kube-apiserver.log"} {
			if err := copyFile(src, filepath.Join(logDir, dst)); err != nil {
				note("keeping %s: %v", dst, err)
			}
		}
		if err := stop(res.Error != ""); err != nil {
			fail("stopping the control plane: %v", err)
		}
	}()
	if len(r.Versions) == 0 {
		r.Versions = b.versions(ctx)
	}

	p.stage(what + ": create the CRD in the cluster and fill it through the kube-apiserver")
	t := &target{Name: "adopted", Server: b.kas, Dyn: b.adminDyn, group: adoptGroup}
	if err := createAdoptedCRD(ctx, b, t); err != nil {
		return fail("%v", err)
	}
	gvr := t.gvr(shapeReport)
	res.Fill = fill(ctx, p, t, shapeReport, adoptNamespace, 0, n, pl.FillClients, r.limit(pl.FillBase, pl.FillPer, n))
	if ctx.Err() != nil {
		return fail("%v", ctx.Err())
	}
	if res.Fill.Errors > 0 {
		return fail("the fill: %d errors, the first: %s", res.Fill.Errors, res.Fill.FirstError)
	}
	if res.Fill.TimedOut {
		note("the fill stopped at its time limit after %d of %d objects: the adoption is measured with those", res.Fill.Ops, n)
	}
	res.Objects, err = countObjects(ctx, t)
	if err != nil {
		return fail("counting the objects in the cluster: %v", err)
	}
	if res.Objects != res.Fill.Ops {
		return fail("the cluster holds %d objects after %d acknowledged creates", res.Objects, res.Fill.Ops)
	}
	p.logf("%s: the cluster holds %d objects", what, res.Objects)
	if res.Before, err = b.annex.memory(ctx, pl.MemSamples, pl.MemGap); err != nil {
		return fail("reading annex's memory: %v", err)
	}

	p.stage(fmt.Sprintf("%s: adopt the CRD with kubectl annex adopt, a writer at %.0f writes/s meanwhile", what, pl.WriteRate))
	w := newAdoptionWriter(b.adminDyn.Resource(gvr).Namespace(adoptNamespace), gvr.GroupVersion().String(), pl, res.Objects)
	stopWriter := w.start()
	writerStopped := false
	defer func() {
		if !writerStopped {
			stopWriter()
		}
	}()
	time.Sleep(pl.WriterLead)
	adoptLimit := r.limit(pl.AdoptBase, pl.AdoptPer, n)
	res.Load = load1()
	cpuBefore := sampleCPU()
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan adoptionSamples, 1)
	go func() { sampled <- sampleAdoption(sampling, p, b, pl.SampleEvery) }()
	res.Plugin = runPlugin(ctx, plugin, b.env.KubeconfigFile, "adopt", adoptLimit)
	stopSampling()
	s := <-sampled
	res.OthersCPU = othersCPU(cpuBefore, sampleCPU())
	res.Phases, res.PeakRSS = s.phases, s.peakRSS
	p.logf("%s: kubectl annex adopt exited %d after %.1f s: %s%s", what, res.Plugin.ExitCode, res.Plugin.Seconds,
		strings.TrimSpace(res.Plugin.Stdout), indentStderr(res.Plugin.Stderr))
	status, err := readAdoptionStatus(ctx, b)
	if err != nil {
		return fail("reading status.adoption: %v", err)
	}
	res.Status = status
	if res.Plugin.ExitCode != 0 || status.Phase != annexv1alpha1.AdoptionAdopted {
		return fail("the adoption did not end within %s: kubectl annex adopt exited %d, phase %s (%s: %s)",
			adoptLimit.Round(time.Second), res.Plugin.ExitCode, status.Phase, status.Reason, status.Message)
	}
	if status.StartTime != nil && status.AdoptedTime != nil {
		res.TotalSeconds = status.AdoptedTime.Sub(status.StartTime.Time).Seconds()
	} else {
		note("status.adoption has no startTime or no adoptedTime")
	}
	if status.Freeze != nil {
		res.FreezeSeconds = status.Freeze.Seconds()
	} else {
		note("status.adoption has no freeze")
	}
	res.LogLine, err = annexLogLine(b.env.AnnexLog, "Adopted a CustomResourceDefinition", adoptCRDName)
	if err != nil {
		note("annex's log: %v", err)
	} else {
		res.Steps, res.LogFreeze = logValue(res.LogLine, "steps"), logValue(res.LogLine, "freeze")
		if d, ok := copyStep(res.Steps); ok && d > 0 {
			res.CopySeconds = d.Seconds()
			res.CopyRate = float64(status.Copied) / res.CopySeconds
		} else {
			note("no step \"copied N objects\" in annex's steps %q", res.Steps)
		}
	}
	p.logf("%s: adopted in %.1f s (startTime to adoptedTime), %d objects copied in %.1f s (%.0f/s), writes refused for %s; steps: %s",
		what, res.TotalSeconds, status.Copied, res.CopySeconds, res.CopyRate, secs(res.FreezeSeconds), res.Steps)

	// Writes go on a moment longer, to annex, before the checks.
	time.Sleep(pl.WriterLead)
	res.Writer = stopWriter()
	writerStopped = true
	p.logf("%s: the writer made %d writes (%d creates, %d updates, %.1f/s), retried %d refused ones (refusals seen over %.1f s), %d other errors",
		what, res.Writer.Writes, res.Writer.Creates, res.Writer.Updates, res.Writer.PerSecond, res.Writer.Refused, res.Writer.RefusedSeconds, res.Writer.Errors)

	p.stage(what + ": verify every object and every acknowledged write through the cluster")
	res.Verify, err = w.verify(ctx, t, shapeReport, adoptNamespace, pl.VerifyPage, r.limit(pl.VerifyBase, pl.VerifyPer, n))
	if err != nil {
		return fail("verifying: %v", err)
	}
	p.logf("%s: the cluster serves %d objects, %d expected (%d before + %d acknowledged creates); %d missing, %d with a lost update",
		what, res.Verify.Served, res.Verify.Expected, res.Objects, res.Writer.Creates, res.Verify.Missing, res.Verify.LostUpdates)

	if res.After, err = b.annex.memory(ctx, pl.MemSamples, pl.MemGap); err != nil {
		return fail("reading annex's memory: %v", err)
	}
	p.logf("%s: annex's RSS %s before the adoption, %s after (peak sampled %s); live heap %s → %s", what,
		mib(res.Before.RSS), mib(res.After.RSS), mib(res.PeakRSS), mib(res.Before.HeapLive), mib(res.After.HeapLive))
	switch {
	case res.Writer.Errors > 0:
		return fail("the writer saw %d errors other than the freeze's refusals, the first: %s", res.Writer.Errors, res.Writer.FirstError)
	case !res.Verify.ok():
		return fail("the cluster serves %d objects, %d expected; %d missing, %d with a lost update (first: %s)",
			res.Verify.Served, res.Verify.Expected, res.Verify.Missing, res.Verify.LostUpdates, res.Verify.First)
	}
	if pl.Release {
		rel, err := r.release(ctx, p, b, t, w, plugin, what, n)
		res.Release = rel
		if err != nil {
			return fail("the release: %v", err)
		}
	}
	p.stage(what + ": stop")
	return res
}

// release gives the adopted type back with kubectl annex release while a
// writer goes on from w, then checks every object and acknowledged write
// through the cluster, which serves the type from its own etcd again.
func (r *adoptionResults) release(ctx context.Context, p *progress, b *bench, t *target, w *adoptionWriter, plugin, what string, n int) (*releaseRun, error) {
	pl := r.Plan
	rel := &releaseRun{}
	p.stage(fmt.Sprintf("%s: release the CRD with kubectl annex release, a writer at %.0f writes/s meanwhile", what, pl.WriteRate))
	w2 := w.continued("released", adoption.ReleaseFreezeMessage(adoptGroup))
	stopWriter := w2.start()
	time.Sleep(pl.WriterLead)
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan adoptionSamples, 1)
	go func() { sampled <- sampleAdoption(sampling, p, b, pl.SampleEvery) }()
	rel.Plugin = runPlugin(ctx, plugin, b.env.KubeconfigFile, "release", r.limit(pl.AdoptBase, pl.AdoptPer, n))
	stopSampling()
	rel.PeakRSS = (<-sampled).peakRSS
	p.logf("%s: kubectl annex release exited %d after %.1f s: %s%s", what, rel.Plugin.ExitCode, rel.Plugin.Seconds,
		strings.TrimSpace(rel.Plugin.Stdout), indentStderr(rel.Plugin.Stderr))
	time.Sleep(pl.WriterLead)
	rel.Writer = stopWriter()
	if rel.Plugin.ExitCode != 0 {
		return rel, fmt.Errorf("kubectl annex release exited %d: %s", rel.Plugin.ExitCode, strings.TrimSpace(rel.Plugin.Stderr))
	}
	line, err := annexLogLine(b.env.AnnexLog, "Released a CustomResourceDefinition", adoptCRDName)
	if err != nil {
		return rel, err
	}
	rel.LogLine, rel.Steps = line, logValue(line, "steps")
	rel.Objects, _ = strconv.Atoi(logValue(line, "objects"))
	rel.Recreated, _ = strconv.Atoi(logValue(line, "recreated"))
	if d, err := time.ParseDuration(logValue(line, "freeze")); err == nil {
		rel.FreezeSeconds = d.Seconds()
	}
	if d, ok := stepDuration(rel.Steps, "wrote"); ok && d > 0 {
		rel.WriteBackSeconds = d.Seconds()
		rel.WriteBackRate = float64(rel.Objects) / rel.WriteBackSeconds
	}
	p.logf("%s: released: %d objects written back (%d recreated) in %s (%.0f/s), writes refused for %s; the writer: %d writes, %d refused attempts retried, %d other errors",
		what, rel.Objects, rel.Recreated, secs(rel.WriteBackSeconds), rel.WriteBackRate, secs(rel.FreezeSeconds), rel.Writer.Writes, rel.Writer.Refused, rel.Writer.Errors)
	p.stage(what + ": verify every object and every acknowledged write through the cluster, which serves them again")
	rel.Verify, err = w2.verify(ctx, t, shapeReport, adoptNamespace, pl.VerifyPage, r.limit(pl.VerifyBase, pl.VerifyPer, n))
	if err != nil {
		return rel, fmt.Errorf("verifying: %w", err)
	}
	p.logf("%s: after the release the cluster serves %d objects, %d expected; %d missing, %d with a lost update",
		what, rel.Verify.Served, rel.Verify.Expected, rel.Verify.Missing, rel.Verify.LostUpdates)
	switch {
	case rel.Writer.Errors > 0:
		return rel, fmt.Errorf("the writer saw %d errors other than the release's refusals, the first: %s", rel.Writer.Errors, rel.Writer.FirstError)
	case !rel.Verify.ok():
		return rel, fmt.Errorf("the cluster serves %d objects, %d expected; %d missing, %d with a lost update (first: %s)",
			rel.Verify.Served, rel.Verify.Expected, rel.Verify.Missing, rel.Verify.LostUpdates, rel.Verify.First)
	}
	return rel, nil
}

// createAdoptedCRD creates the namespace and the CRD to adopt, and waits
// until the cluster serves it.
func createAdoptedCRD(ctx context.Context, b *bench, t *target) error {
	if err := b.createNamespaces(ctx, adoptNamespace); err != nil {
		return err
	}
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: adoptCRDName},
		Spec:       shapeReport.crdSpec(adoptGroup),
	}
	if _, err := b.crdClient.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating CRD %s: %w", crd.Name, err)
	}
	gvr := t.gvr(shapeReport)
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		_, lastErr = t.Dyn.Resource(gvr).Namespace(adoptNamespace).List(ctx, metav1.ListOptions{Limit: 1})
		return lastErr == nil, nil
	})
	if err != nil {
		return fmt.Errorf("the cluster does not serve %s: %w; last error: %v", gvr, err, lastErr)
	}
	return nil
}

// countObjects counts the type's objects in the adopted namespace: a list
// of one and the remaining count, or, if the server gives none, every page.
func countObjects(ctx context.Context, t *target) (int, error) {
	res := t.Dyn.Resource(t.gvr(shapeReport)).Namespace(adoptNamespace)
	list, err := res.List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return 0, err
	}
	if rest := list.GetRemainingItemCount(); rest != nil || list.GetContinue() == "" {
		return len(list.Items) + int(ptr.Deref(rest, 0)), nil
	}
	n := 0
	opts := metav1.ListOptions{Limit: 1000}
	for {
		page, err := res.List(ctx, opts)
		if err != nil {
			return 0, err
		}
		n += len(page.Items)
		if opts.Continue = page.GetContinue(); opts.Continue == "" {
			return n, nil
		}
	}
}

// runPlugin runs kubectl-annex verb (adopt, release) on the adopted CRD, as
// a user would, and waits for it.
func runPlugin(ctx context.Context, plugin, kubeconfig, verb string, limit time.Duration) pluginRun {
	run := pluginRun{Args: []string{verb, adoptCRDName, "--yes", "--progress=never", "--timeout=" + limit.Round(time.Second).String()}}
	// The plugin gives up on its own at its --timeout; the context is a
	// last resort.
	ctx, cancel := context.WithTimeout(ctx, limit+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, plugin, append(slices.Clone(run.Args), "--kubeconfig="+kubeconfig)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	run.Seconds = time.Since(start).Seconds()
	run.Stdout, run.Stderr = stdout.String(), stderr.String()
	if err != nil {
		run.ExitCode = -1
		if exitErr, ok := err.(*exec.ExitError); ok {
			run.ExitCode = exitErr.ExitCode()
		} else {
			run.Stderr += "\n" + err.Error()
		}
	}
	return run
}

func indentStderr(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return "\n    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// readAdoptionStatus reads status.adoption of the HostedResource through
// the kube-apiserver.
func readAdoptionStatus(ctx context.Context, b *bench) (annexv1alpha1.AdoptionStatus, error) {
	hr, err := b.adminDyn.Resource(framework.HostedResources).Get(ctx, adoptCRDName, metav1.GetOptions{})
	if err != nil {
		return annexv1alpha1.AdoptionStatus{}, err
	}
	return statusOf(hr)
}

func statusOf(hr *unstructured.Unstructured) (annexv1alpha1.AdoptionStatus, error) {
	m, _, _ := unstructured.NestedMap(hr.Object, "status", "adoption")
	var s annexv1alpha1.AdoptionStatus
	if m == nil {
		return s, nil
	}
	err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &s)
	return s, err
}

// adoptionSamples is what was seen while the adoption ran.
type adoptionSamples struct {
	phases  []string
	peakRSS float64
}

// sampleAdoption reads the adoption's phase and annex's RSS every `every`
// until ctx ends, and notes each new phase (with the reason of a wait) and
// the progress of the copy.
func sampleAdoption(ctx context.Context, p *progress, b *bench, every time.Duration) adoptionSamples {
	var out adoptionSamples
	start, last, lastLog := time.Now(), "", time.Now()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if body, err := b.annex.get(ctx, "/metrics"); err == nil {
			if v := parseMetrics(body, "process_resident_memory_bytes")["process_resident_memory_bytes"]; !math.IsNaN(v) {
				out.peakRSS = max(out.peakRSS, v)
			}
		}
		if hr, err := b.adminDyn.Resource(framework.HostedResources).Get(ctx, adoptCRDName, metav1.GetOptions{}); err == nil {
			if s, err := statusOf(hr); err == nil && s.Phase != "" {
				seen := string(s.Phase)
				if s.Reason != "" {
					seen += " (" + s.Reason + ")"
				}
				if seen != last {
					last = seen
					out.phases = append(out.phases, fmt.Sprintf("%s at %.1f s", seen, time.Since(start).Seconds()))
					p.logf("  adoption: %s: %s", seen, s.Message)
				}
				if time.Since(lastLog) >= p.every && s.Phase == annexv1alpha1.AdoptionCopying {
					lastLog = time.Now()
					p.logf("  adoption: %d of %d copied", s.Copied, s.Total)
				}
			}
		}
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
	}
}

// annexLogLine is the last line of annex's log that says msg of crd.
func annexLogLine(logFile, msg, crd string) (string, error) {
	data, err := os.ReadFile(logFile)
	if err != nil {
		return "", err
	}
	found := ""
	for line := range strings.Lines(string(data)) {
		if strings.Contains(line, msg) && strings.Contains(line, crd) {
			found = strings.TrimSpace(line)
		}
	}
	if found == "" {
		return "", fmt.Errorf("no line %q of %s in %s", msg, crd, logFile)
	}
	return found, nil
}

// logValue is the value of key in a structured log line (key="quoted" or
// key=bare), "" if absent.
func logValue(line, key string) string {
	re := regexp.MustCompile(`(?:^|\s)` + regexp.QuoteMeta(key) + `=("(?:[^"\\]|\\.)*"|\S*)`)
	m := re.FindStringSubmatch(line)
	if m == nil {
		return ""
	}
	if strings.HasPrefix(m[1], `"`) {
		if s, err := strconv.Unquote(m[1]); err == nil {
			return s
		}
	}
	return m[1]
}

// copyStep is the duration of the first copy in annex's steps, "what in D"
// joined by ", ": the step "copied N objects[ of ...] in D".
func copyStep(steps string) (time.Duration, bool) { return stepDuration(steps, "copied") }

// stepDuration is the duration of the first step "verb N objects[ ...] in D"
// of annex's steps.
func stepDuration(steps, verb string) (time.Duration, bool) {
	for step := range strings.SplitSeq(steps, ", ") {
		i := strings.LastIndex(step, " in ")
		f := strings.Fields(step)
		if i < 0 || len(f) < 3 || f[0] != verb || f[2] != "objects" {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		d, err := time.ParseDuration(step[i+len(" in "):])
		return d, err == nil
	}
	return 0, false
}

// copyFile copies src to dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// The freeze's refusal, as the cluster words it for the adopted CRD.
var adoptFreezeMessage = adoption.FreezeMessage(adoptGroup)
