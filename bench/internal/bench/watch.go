package bench

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
	on := make([]*target, watchers)
	for i := range on {
		on[i] = t
	}
	samples, err := watchLatencies(ctx, t, on, s, ns, events, rate, 15*time.Second)
	if err != nil {
		return watchStats{Watchers: watchers, Events: events}, err
	}
	out := merge(events, samples...)
	p.logf("%s watch with %d watchers: p50 %.2fms p99 %.2fms over %d events (%d before the create's response, %d missed)",
		t.Name, watchers, out.Latency.P50, out.Latency.P99, out.Latency.N, out.Early, out.Missed)
	return out, nil
}

// watchSamples is what one watch received.
type watchSamples struct {
	latencies     []time.Duration
	early, missed int
}

// merge summarises the samples of several watches of the same events.
func merge(events int, samples ...watchSamples) watchStats {
	out := watchStats{Watchers: len(samples), Events: events}
	var lat []time.Duration
	for _, s := range samples {
		lat = append(lat, s.latencies...)
		out.Early += s.early
		out.Missed += s.missed
	}
	out.Latency = summarise(lat)
	return out
}

// watchLatencies opens one watch of shape s in the empty namespace ns on each
// of watchers (a target may appear more than once), each on a connection of
// its own, creates events objects
// through writer one after another at rate per second, and returns, for each
// watch, the time from each create's response to the ADDED event. It waits
// at most eventWait after the last create for the last events.
func watchLatencies(ctx context.Context, writer *target, watchers []*target, s shape, ns string, events int, rate float64, eventWait time.Duration) ([]watchSamples, error) {
	gvr := writer.gvr(s)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	received := make([][]seen, len(watchers))
	var wg sync.WaitGroup
	// Each watch starts at the resourceVersion of a list of the namespace,
	// as an informer's does. A watch without one asks for the namespace's
	// objects first, which the watch cache finds by going through every
	// object of the type (for each of 200 watchers, seconds of a core,
	// while the creates run): that would measure opening watches, not
	// delivering events.
	resourceVersions := map[*target]string{}
	for _, t := range watchers {
		if _, ok := resourceVersions[t]; ok {
			continue
		}
		list, err := t.Dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{Limit: 1})
		if err != nil {
			return nil, fmt.Errorf("listing %s on %s: %w", ns, t.Name, err)
		}
		resourceVersions[t] = list.GetResourceVersion()
	}
	for i, t := range watchers {
		// Each watch has a connection of its own, as the watches of
		// separate controllers do: on one shared HTTP/2 connection every
		// event of every watch goes through one read loop in the driver,
		// and the figure would be the driver's queue.
		dyn, err := t.Server.ownConnection()
		if err != nil {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("connecting watch %d to %s: %w", i, t.Name, err)
		}
		wi, err := dyn.Resource(gvr).Namespace(ns).Watch(wctx, metav1.ListOptions{ResourceVersion: resourceVersions[t]})
		if err != nil {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("opening watch %d on %s: %w", i, t.Name, err)
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
					received[i] = append(received[i], seen{name: m.GetName(), at: time.Now()})
					if len(received[i]) == events {
						return
					}
				}
			}
		})
	}
	// A watch is registered once its response has started; give the
	// servers a moment anyway before the first create.
	time.Sleep(time.Second)

	res := writer.Dyn.Resource(gvr).Namespace(ns)
	apiVersion := gvr.GroupVersion().String()
	created := make(map[string]time.Time, events)
	interval := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for i := range events {
		time.Sleep(time.Until(next))
		next = next.Add(interval)
		obj := s.object(apiVersion, ns, i)
		if _, err := res.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("creating %s: %w", obj.GetName(), err)
		}
		created[obj.GetName()] = time.Now()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(eventWait):
		cancel()
		<-done
	}

	out := make([]watchSamples, len(watchers))
	for i, r := range received {
		out[i].missed = events - len(r)
		for _, e := range r {
			at, ok := created[e.name]
			if !ok {
				continue
			}
			d := e.at.Sub(at)
			if d < 0 {
				out[i].early++
				d = 0
			}
			out[i].latencies = append(out[i].latencies, d)
		}
	}
	return out, nil
}
