package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// watchStats is the latency from a create's response to its ADDED event,
// over every watcher and every object.
type watchStats struct {
	Watchers int       `json:"watchers"`
	Events   int       `json:"events"`
	Latency  latencies `json:"latency"`
	// Early counts events that arrived before the create's response (their
	// latency counts as 0); Missed counts events never received.
	Early  int `json:"early"`
	Missed int `json:"missed"`
}

type seen struct {
	name string
	at   time.Time
}

// measureWatch opens watchers watches of shape s in the empty namespace ns
// on t, creates events objects one after another at rate per second, and
// measures, for each watcher and object, the time from the create's response
// to the watcher receiving the ADDED event.
func measureWatch(ctx context.Context, p *progress, t *target, s shape, ns string, watchers, events int, rate float64) (watchStats, error) {
	gvr := t.gvr(s)
	res := t.Dyn.Resource(gvr).Namespace(ns)
	out := watchStats{Watchers: watchers, Events: events}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	received := make([][]seen, watchers)
	var wg sync.WaitGroup
	for w := range watchers {
		wi, err := res.Watch(wctx, metav1.ListOptions{})
		if err != nil {
			return out, fmt.Errorf("opening watch %d: %w", w, err)
		}
		wg.Go(func() {
			defer wi.Stop()
			for {
				select {
				case <-wctx.Done():
					return
				case ev, ok := <-wi.ResultChan():
					if !ok {
						return
					}
					if ev.Type != watch.Added {
						continue
					}
					m, err := meta.Accessor(ev.Object)
					if err != nil {
						continue
					}
					received[w] = append(received[w], seen{name: m.GetName(), at: time.Now()})
					if len(received[w]) == events {
						return
					}
				}
			}
		})
	}
	// The watches are registered when their responses start; give the
	// server a moment anyway before the first create.
	time.Sleep(time.Second)

	apiVersion := gvr.GroupVersion().String()
	created := make(map[string]time.Time, events)
	interval := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for i := range events {
		time.Sleep(time.Until(next))
		next = next.Add(interval)
		obj := s.object(apiVersion, ns, i)
		if _, err := res.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return out, fmt.Errorf("creating %s: %w", obj.GetName(), err)
		}
		created[obj.GetName()] = time.Now()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cancel()
		<-done
	}

	var lat []time.Duration
	for _, r := range received {
		out.Missed += events - len(r)
		for _, e := range r {
			at, ok := created[e.name]
			if !ok {
				continue
			}
			d := e.at.Sub(at)
			if d < 0 {
				out.Early++
				d = 0
			}
			lat = append(lat, d)
		}
	}
	out.Latency = summarise(lat)
	p.logf("%s watch with %d watchers: p50 %.2fms p99 %.2fms over %d events (%d before the create's response, %d missed)",
		t.Name, watchers, out.Latency.P50, out.Latency.P99, out.Latency.N, out.Early, out.Missed)
	return out, nil
}
