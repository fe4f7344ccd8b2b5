package bench

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// annex's log line at the end of an adoption, as klog writes it.
const adoptedLine = `I1202 08:35:19.299682   24831 controller.go:681] "Adopted a CustomResourceDefinition" logger="controllers" ` +
	`controller="adoption" name="benchreports.adopt.bench.example.com" crd="benchreports.adopt.bench.example.com" objects=320 ` +
	`freeze="2.274s" steps="copied 320 objects in 2.198s, caught up in 338ms, created the freeze in 49ms, the cluster refused writes in 609ms, ` +
	`settled in 2s, copied the last changes in 183ms, switched the APIServices in 33ms, stopped serving the CRD in 38ms, deleted the freeze in 19ms"`

func TestAdoptedLogLine(t *testing.T) {
	log := filepath.Join(t.TempDir(), "annex.log")
	other := strings.ReplaceAll(adoptedLine, "benchreports.adopt", "other.adopt")
	if err := os.WriteFile(log, []byte("I1202 started\n"+adoptedLine+"\n"+other+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	line, err := annexLogLine(log, "Adopted a CustomResourceDefinition", adoptCRDName)
	if err != nil || line != adoptedLine {
		t.Fatalf("got %q, %v; want the line of %s", line, err, adoptCRDName)
	}
	if got := logValue(line, "freeze"); got != "2.274s" {
		t.Errorf("freeze=%q, want 2.274s", got)
	}
	if got := logValue(line, "objects"); got != "320" {
		t.Errorf("objects=%q, want 320", got)
	}
	steps := logValue(line, "steps")
	if !strings.HasPrefix(steps, "copied 320 objects in 2.198s, caught up") || !strings.HasSuffix(steps, "deleted the freeze in 19ms") {
		t.Errorf("steps=%q", steps)
	}
	if got := logValue(line, "missing"); got != "" {
		t.Errorf("a missing key: %q", got)
	}
	if _, err := annexLogLine(log, "Adopted a CustomResourceDefinition", "nothing.example.com"); err == nil {
		t.Error("a CRD the log does not name: no error")
	}
}

func TestCopyStep(t *testing.T) {
	for steps, want := range map[string]time.Duration{
		"copied 320 objects in 2.198s, caught up in 338ms, copied the last changes in 183ms": 2198 * time.Millisecond,
		"copied 3017 objects of widgets.example.com in 6.347s, caught up in 382ms":           6347 * time.Millisecond,
		"caught up in 338ms, copied the last changes in 183ms":                               0,
	} {
		got, ok := copyStep(steps)
		if got != want || ok != (want != 0) {
			t.Errorf("copyStep(%q) = %s, %v; want %s", steps, got, ok, want)
		}
	}
	// The release's step.
	steps := "the cluster refused writes in 120ms, settled in 2s, served version annexrelease in 1.1s, " +
		"wrote 10010 objects of benchreports.adopt.bench.example.com back in 41.5s, served the CRDs again in 30ms"
	if got, ok := stepDuration(steps, "wrote"); !ok || got != 41500*time.Millisecond {
		t.Errorf("stepDuration(%q, wrote) = %s, %v; want 41.5s", steps, got, ok)
	}
}

func TestParseCounts(t *testing.T) {
	got, err := parseCounts("10000, 100_000")
	if err != nil || !slices.Equal(got, []int{10000, 100000}) {
		t.Errorf("got %v, %v", got, err)
	}
	if got, err := parseCounts(""); err != nil || got != nil {
		t.Errorf("empty: got %v, %v", got, err)
	}
	for _, bad := range []string{"0", "ten", "5,-1"} {
		if _, err := parseCounts(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if n, err := parseCount("2_000"); n != 2000 || err != nil {
		t.Errorf("one count: got %d, %v", n, err)
	}
	if n, err := parseCount(""); n != 0 || err != nil {
		t.Errorf("no count: got %d, %v", n, err)
	}
	if _, err := parseCount("1,2"); err == nil {
		t.Errorf("two counts where one is taken: no error")
	}
}

// The section replaces the old one in place, names the goal's verdict, and
// shows a count that was not measured whole with its error.
func TestAdoptionSection(t *testing.T) {
	doc := oldReport(t, adoptionSec)
	pl := adoptionPlanFor(Flags{}, nil)
	r := &adoptionResults{runInfo: runInfo{Mode: "adoption", Command: "make bench-adoption"}, Plan: pl, Runs: []adoptionRun{
		{Count: 10000, Objects: 10000, TotalSeconds: 40, CopySeconds: 20, CopyRate: 500, FreezeSeconds: 3.1,
			Steps: "copied 10000 objects in 20s, caught up in 1s", Verify: verifyStats{Served: 10100, Expected: 10100}},
		{Count: 100000, Objects: 100000, TotalSeconds: 400, FreezeSeconds: 12.5, Release: &releaseRun{Objects: 100033, Recreated: 33,
			FreezeSeconds: 95.2, WriteBackSeconds: 90, WriteBackRate: 1111, Steps: "wrote 100033 objects of x back in 1m30s"}},
	}}
	if err := adoptionSec.write(doc, adoptionSection(r)); err != nil {
		t.Fatal(err)
	}
	got := replacedReport(t, doc, adoptionSec)
	for _, want := range []string{"### 10,000 objects", "### 100,000 objects", "writes refused for 12.5 s at 100,000 objects: **not met**",
		"- copied 10000 objects in 20s", "**500 objects/s**", "| release: writes refused (releaseFrozenTime → releasedTime) | **95.2 s** |",
		"100,033 objects (33 recreated with a new uid) in 90.0 s: **1111 objects/s**", "- wrote 100033 objects of x back in 1m30s"} {
		if !strings.Contains(got, want) {
			t.Errorf("the section lacks %q:\n%s", want, got)
		}
	}
	r.Runs[1] = adoptionRun{Count: 100000, outcome: outcome{Error: "the adoption did not end"}}
	if v := freezeVerdict(r); !strings.Contains(v, "not measured") {
		t.Errorf("verdict of a run that failed: %q", v)
	}
}
