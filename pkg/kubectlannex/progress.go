package kubectlannex

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
	"k8s.io/kubectl/pkg/util/term"
)

// Values of --progress.
const (
	progressAuto   = "auto"
	progressAlways = "always"
	progressNever  = "never"
)

func validateProgress(mode string) error {
	switch mode {
	case progressAuto, progressAlways, progressNever:
		return nil
	}
	return fmt.Errorf("invalid --progress %q: one of auto, always, never", mode)
}

// progress shows how far export or import has come on stderr: a bar with
// the count of the total, the rate and the time left, when stderr is a
// terminal (or --progress=always).
type progress struct {
	out   io.Writer
	bar   *progressbar.ProgressBar
	start time.Time
	done  int64
}

// newProgress starts the progress of a job of total objects (-1 when
// unknown).
func newProgress(out io.Writer, mode, description string, total int64) *progress {
	p := &progress{out: out, start: time.Now()}
	show := mode == progressAlways || (mode == progressAuto && (term.TTY{Out: out}).IsTerminalOut())
	if !show || total == 0 {
		return p
	}
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(out),
		progressbar.OptionSetDescription(description),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("objects"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
		// The full bar stays, and the summary follows on its own line.
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(out) }),
	)
	return p
}

// add counts n more objects done.
func (p *progress) add(n int) {
	p.done += int64(n)
	if p.bar != nil {
		_ = p.bar.Add(n)
	}
}

// printf writes a line above the bar.
func (p *progress) printf(format string, args ...any) {
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	fmt.Fprintf(p.out, format, args...)
}

// finish ends the bar: full when the job is complete, where it stopped
// otherwise; the caller prints the summary on the next line.
func (p *progress) finish(complete bool) time.Duration {
	if p.bar != nil {
		if complete {
			_ = p.bar.Finish()
		} else {
			_ = p.bar.Exit()
		}
	}
	return time.Since(p.start)
}

// rate is done objects per second over d, for the summary line.
func rate(done int64, d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fmt.Sprintf(", %.0f objects/s", float64(done)/d.Seconds())
}
