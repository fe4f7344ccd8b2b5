package bench

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// progress prints what the driver is doing, with the time since it started,
// so that a long run shows where it is.
type progress struct {
	out      io.Writer
	start    time.Time
	every    time.Duration
	mu       sync.Mutex
	stageNum int
}

func (p *progress) logf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// stage announces the next stage of the run.
func (p *progress) stage(name string) {
	p.stageNum++
	p.logf("== stage %d: %s", p.stageNum, name)
}

// ticker prints done/n, the rate and the time left at that rate every
// p.every until the returned function is called.
func (p *progress) ticker(name string, n int, done *atomic.Int64) (stop func()) {
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(p.every)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				d := done.Load()
				rate := float64(d) / time.Since(start).Seconds()
				eta := "unknown"
				if rate > 0 {
					eta = time.Duration(float64(int64(n)-d) / rate * float64(time.Second)).Round(time.Second).String()
				}
				p.logf("  %s: %d/%d (%.0f/s, %s left at this rate)", name, d, n, rate, eta)
			}
		}
	}()
	return func() { close(quit); <-finished }
}
