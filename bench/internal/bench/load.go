package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// latencies summarises a set of durations.
type latencies struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50Ms"`
	P99 float64 `json:"p99Ms"`
	Max float64 `json:"maxMs"`
	// samples are kept for the plots, not written to JSON.
	samples []time.Duration
}

func summarise(d []time.Duration) latencies {
	if len(d) == 0 {
		return latencies{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return latencies{N: len(s), P50: ms(quantile(s, 0.50)), P99: ms(quantile(s, 0.99)), Max: ms(s[len(s)-1]), samples: s}
}

// quantile is the nearest-rank quantile q of sorted s: with fewer than 100
// samples p99 is the maximum.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// opStats is the result of a phase of concurrent requests.
type opStats struct {
	Ops        int       `json:"ops"`
	Errors     int       `json:"errors"`
	FirstError string    `json:"firstError,omitempty"`
	Seconds    float64   `json:"seconds"`
	PerSecond  float64   `json:"perSecond"`
	Latency    latencies `json:"latency"`
	// TimedOut says the phase hit its time limit before n operations.
	TimedOut bool `json:"timedOut,omitempty"`
}

// runOps runs op(i) for i in [0, n) on clients concurrent workers, each
// taking the next i when its previous request returns, until n are done or
// limit has passed. It reports progress every few seconds under name.
func runOps(ctx context.Context, p *progress, name string, n, clients int, limit time.Duration, op func(ctx context.Context, i int) error) opStats {
	var (
		next, done atomic.Int64
		mu         sync.Mutex
		lat        = make([]time.Duration, 0, n)
		errs       int
		firstErr   error
	)
	deadline := time.Now().Add(limit)
	stopProgress := p.ticker(name, n, &done)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			local := make([]time.Duration, 0, n/clients+1)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if i >= n {
					break
				}
				t0 := time.Now()
				err := op(ctx, i)
				d := time.Since(t0)
				if err != nil {
					mu.Lock()
					errs++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				local = append(local, d)
				done.Add(1)
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	st := opStats{
		Ops:       len(lat),
		Errors:    errs,
		Seconds:   elapsed.Seconds(),
		PerSecond: float64(len(lat)) / elapsed.Seconds(),
		Latency:   summarise(lat),
		TimedOut:  int(next.Load()) < n,
	}
	if firstErr != nil {
		st.FirstError = firstErr.Error()
	}
	p.logf("%s: %d ops in %.1fs = %.0f/s, p50 %.1fms p99 %.1fms, %d errors%s", name, st.Ops, st.Seconds, st.PerSecond, st.Latency.P50, st.Latency.P99, st.Errors, timedOut(st.TimedOut))
	if firstErr != nil {
		p.logf("%s: first error: %v", name, firstErr)
	}
	return st
}

func timedOut(b bool) string {
	if b {
		return " (stopped at its time limit)"
	}
	return ""
}

// fill creates objects [from, to) of shape s in ns on t and returns the
// stats. It keeps no objects.
func fill(ctx context.Context, p *progress, t *target, s shape, ns string, from, to, clients int, limit time.Duration) opStats {
	gvr := t.gvr(s)
	apiVersion := gvr.GroupVersion().String()
	res := t.Dyn.Resource(gvr).Namespace(ns)
	return runOps(ctx, p, fmt.Sprintf("%s create %s objects %d..%d", t.Name, s.Name, from, to), to-from, clients, limit, func(ctx context.Context, i int) error {
		_, err := res.Create(ctx, s.object(apiVersion, ns, from+i), metav1.CreateOptions{})
		return err
	})
}

// crudStats are the create, update and get phases of one target and shape.
type crudStats struct {
	Create opStats `json:"create"`
	Update opStats `json:"update"`
	Get    opStats `json:"get"`
}

// crud creates n objects of shape s in ns on t, then updates each once, then
// gets each once, each phase with clients workers and a time limit.
func crud(ctx context.Context, p *progress, t *target, s shape, ns string, n, clients int, limit time.Duration) crudStats {
	return crudPhases(ctx, p, t, s, ns, n, clients, limit, nil)
}

// A phaseHook runs one phase of crud ("create", "update" or "get"): it calls
// run, which runs the phase, and returns its stats.
type phaseHook func(phase string, run func() opStats) opStats

// crudPhases is crud, with each phase run through hook when it is not nil.
func crudPhases(ctx context.Context, p *progress, t *target, s shape, ns string, n, clients int, limit time.Duration, hook phaseHook) crudStats {
	if hook == nil {
		hook = func(_ string, run func() opStats) opStats { return run() }
	}
	gvr := t.gvr(s)
	apiVersion := gvr.GroupVersion().String()
	res := t.Dyn.Resource(gvr).Namespace(ns)
	objs := make([]*unstructured.Unstructured, n)
	var out crudStats
	out.Create = hook("create", func() opStats {
		return runOps(ctx, p, fmt.Sprintf("%s create %s", t.Name, s.Name), n, clients, limit, func(ctx context.Context, i int) error {
			obj, err := res.Create(ctx, s.object(apiVersion, ns, i), metav1.CreateOptions{})
			objs[i] = obj
			return err
		})
	})
	created := make([]*unstructured.Unstructured, 0, n)
	for _, o := range objs {
		if o != nil {
			created = append(created, o)
		}
	}
	out.Update = hook("update", func() opStats {
		return runOps(ctx, p, fmt.Sprintf("%s update %s", t.Name, s.Name), len(created), clients, limit, func(ctx context.Context, i int) error {
			obj := created[i]
			s.mutate(obj, 1)
			_, err := res.Update(ctx, obj, metav1.UpdateOptions{})
			return err
		})
	})
	out.Get = hook("get", func() opStats {
		return runOps(ctx, p, fmt.Sprintf("%s get %s", t.Name, s.Name), len(created), clients, limit, func(ctx context.Context, i int) error {
			_, err := res.Get(ctx, created[i].GetName(), metav1.GetOptions{})
			return err
		})
	})
	return out
}
