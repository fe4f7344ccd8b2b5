package bench

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"annex.dev/annex/test/integration/framework"
)

// runInfo is what every run records about itself, first in its JSON.
type runInfo struct {
	Mode     string            `json:"mode"`
	Command  string            `json:"command"`
	Started  time.Time         `json:"started"`
	Seconds  float64           `json:"seconds"`
	Machine  machine           `json:"machine"`
	Versions map[string]string `json:"versions"`
	// LoadBefore and LoadAfter are the machine's load averages
	// (/proc/loadavg: 1, 5, 15 minutes) when the run started and ended;
	// the runs that write a section of their own read them.
	LoadBefore string `json:"loadBefore,omitempty"`
	LoadAfter  string `json:"loadAfter,omitempty"`
}

func newRunInfo(f Flags, mode string, versions map[string]string) runInfo {
	return runInfo{Mode: mode, Command: f.Command, Started: time.Now().UTC(), Machine: describeMachine(), Versions: versions}
}

// versionList writes the versions as "name version; name version", by name.
func versionList(versions map[string]string) string {
	var vs []string
	for _, k := range slices.Sorted(maps.Keys(versions)) {
		vs = append(vs, k+" "+versions[k])
	}
	return strings.Join(vs, "; ")
}

// describe writes the machine as the sections name it.
func (m machine) describe() string {
	return fmt.Sprintf("%d CPUs (%s), memory %s, kernel %s, %s", m.CPUs, m.CPUModel, m.MemTotal, m.Kernel, m.Go)
}

// newProgress reports every `every`, each second in a quick run.
func newProgress(f Flags, every time.Duration) *progress {
	if f.Quick {
		every = time.Second
	}
	return &progress{out: f.Log, start: time.Now(), every: every}
}

// session is a run of a command that writes a section: annex's binary
// checked, the output directories made, a temporary directory for the
// stores' data (removed by close; the logs stay in Out), the progress
// started.
type session struct {
	Flags
	sec  section
	p    *progress
	bin  string
	work string
}

func startSession(f Flags, sec section, every time.Duration) (*session, error) {
	s := &session{Flags: f, sec: sec, bin: os.Getenv(framework.AnnexBinEnv)}
	if s.bin == "" {
		return nil, fmt.Errorf("%s must name the annex-apiserver binary (make bench-%s sets it)", framework.AnnexBinEnv, sec.name)
	}
	if err := checkBinary(s.bin); err != nil {
		return nil, fmt.Errorf("%w (make build builds it)", err)
	}
	for _, d := range []string{f.Out, filepath.Dir(f.Doc)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	work, err := os.MkdirTemp("", "annex-bench-"+sec.name+"-")
	if err != nil {
		return nil, err
	}
	s.work = work
	s.p = newProgress(f, every)
	return s, nil
}

func (s *session) close() { _ = os.RemoveAll(s.work) }

// info starts the run's record; versions are those known at the start.
func (s *session) info(versions map[string]string) runInfo {
	info := newRunInfo(s.Flags, s.mode(s.sec.name, s.sec.name+"-quick"), versions)
	info.LoadBefore = loadAverages()
	return info
}

// each measures n things in turn, label(i) naming the i-th: measure(i)
// returns what went wrong with it, "" if nothing. It returns the failures
// as "label: error", and stops early when ctx ends.
func (s *session) each(ctx context.Context, n int, label func(i int) string, measure func(i int) string) ([]string, error) {
	var failed []string
	for i := range n {
		if msg := measure(i); msg != "" {
			failed = append(failed, label(i)+": "+msg)
			s.p.logf("%s failed: %s", label(i), msg)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return failed, nil
}

// finish ends the run: it completes info, writes r as <name>.json into Out
// and the section (text()) into Doc, then prints table(). When something
// failed it returns an error that lists what: after the section if partial
// (the section says what was measured), instead of it otherwise (Doc is
// left as it was).
func (s *session) finish(info *runInfo, r any, failed []string, partial bool, text, table func() string) error {
	info.LoadAfter = loadAverages()
	info.Seconds = time.Since(s.p.start).Seconds()
	file := s.sec.name + ".json"
	if err := writeJSON(s.Out, file, r); err != nil {
		return err
	}
	if len(failed) > 0 && !partial {
		return fmt.Errorf("not everything was measured, %s is left as it was:\n  %s", s.Doc, strings.Join(failed, "\n  "))
	}
	if err := s.sec.write(s.Doc, text()); err != nil {
		return err
	}
	s.p.logf("wrote %s and the section %q of %s in %.0f s; load average after the run: %s",
		filepath.Join(s.Out, file), s.sec.title, s.Doc, info.Seconds, info.LoadAfter)
	fmt.Fprintln(s.Log)
	fmt.Fprint(s.Log, table())
	if len(failed) > 0 {
		return fmt.Errorf("not everything was measured whole (the section says what was):\n  %s", strings.Join(failed, "\n  "))
	}
	return nil
}

// outcome ends the record of one thing a run measures (a store, an object
// count): what went wrong, notes, and how long it took.
type outcome struct {
	Notes   []string `json:"notes,omitempty"`
	Seconds float64  `json:"seconds"`
	Error   string   `json:"error,omitempty"`
}

// stopping stops what stop stops, for a defer: an error is the outcome's
// if it has none, after what went wrong with it ("stopping the store"),
// if anything.
func (o *outcome) stopping(stop func() error, what string) {
	err := stop()
	if err == nil || o.Error != "" {
		return
	}
	if what != "" {
		o.Error = what + ": " + err.Error()
		return
	}
	o.Error = err.Error()
}

// measuring starts measuring res, whose outcome is o and whose name in the
// log is who. fail records the first error and returns res; note records a
// note and logs it; done, deferred, records the time taken.
func measuring[T any](res *T, o *outcome, p *progress, who string) (fail func(string, ...any) T, note func(string, ...any), done func()) {
	start := time.Now()
	fail = func(format string, args ...any) T {
		if o.Error == "" {
			o.Error = fmt.Sprintf(format, args...)
		}
		return *res
	}
	note = func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		o.Notes = append(o.Notes, msg)
		p.logf("%s: note: %s", who, msg)
	}
	return fail, note, func() { o.Seconds = time.Since(start).Seconds() }
}
