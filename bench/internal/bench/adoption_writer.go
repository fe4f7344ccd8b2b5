package bench

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
)

// adoptionWriter writes to the adopted type while annex adopts it, as the
// type's controller would, and as the writer of the adoption's integration
// tests does: at a steady rate, one write at a time, it creates an object
// and then updates it (every-1 times) before it creates the next. A write
// the freeze refuses it retries after a pause; it remembers every write the
// server acknowledged.
type adoptionWriter struct {
	res        dynamic.ResourceInterface
	apiVersion string
	rate       float64
	every      int
	retryGap   time.Duration
	// filled objects, objectName(0) to objectName(filled-1), were there
	// before the writer; so were the earlier writer's acknowledged creates,
	// inherited of them, whose names are the first of created.
	filled, inherited int
	// prefix begins the names of the writer's creates; freeze is the
	// refusal it retries.
	prefix, freeze string

	mu    sync.Mutex
	stats writerStats
	// created are the names of the acknowledged creates, in order.
	created []string
	// updated is summary.warn of the last acknowledged update of each
	// object updated; uncertain names the objects whose last write failed
	// otherwise than by a refusal, and may or may not have been applied.
	updated   map[string]int64
	uncertain map[string]bool
}

// writerStats is what the writer did and saw.
type writerStats struct {
	// Writes were acknowledged: Creates and Updates.
	Writes    int     `json:"writes"`
	Creates   int     `json:"creates"`
	Updates   int     `json:"updates"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"perSecond"`
	// Refused counts the attempts the freeze refused (each retried);
	// RefusedSeconds runs from the first refused attempt to the last.
	Refused        int       `json:"refused"`
	FirstRefused   time.Time `json:"firstRefused,omitzero"`
	LastRefused    time.Time `json:"lastRefused,omitzero"`
	RefusedSeconds float64   `json:"refusedSeconds"`
	// LongestWait is the longest a write waited from its first refused
	// attempt to its acknowledgment.
	LongestWait float64 `json:"longestWaitSeconds"`
	// Errors are failed writes other than refusals.
	Errors     int    `json:"errors"`
	FirstError string `json:"firstError,omitempty"`
}

func newAdoptionWriter(res dynamic.ResourceInterface, apiVersion string, pl adoptionPlan, filled int) *adoptionWriter {
	return &adoptionWriter{res: res, apiVersion: apiVersion, rate: pl.WriteRate, every: pl.CreateEvery, retryGap: pl.RetryGap,
		filled: filled, prefix: "written", freeze: adoptFreezeMessage, updated: map[string]int64{}, uncertain: map[string]bool{}}
}

// continued is a writer that goes on after w stopped, with names of its
// own (prefix) and the refusal freeze: its checks cover w's writes too.
func (w *adoptionWriter) continued(prefix, freeze string) *adoptionWriter {
	w.mu.Lock()
	defer w.mu.Unlock()
	next := &adoptionWriter{res: w.res, apiVersion: w.apiVersion, rate: w.rate, every: w.every, retryGap: w.retryGap,
		filled: w.filled, inherited: w.inherited + w.stats.Creates, prefix: prefix, freeze: freeze,
		created: slices.Clone(w.created), updated: maps.Clone(w.updated), uncertain: maps.Clone(w.uncertain)}
	return next
}

// writtenName is the name of the writer's n-th create.
func (w *adoptionWriter) writtenName(n int) string { return fmt.Sprintf("%s-%07d", w.prefix, n) }

// start starts writing; stop stops the writer after the write under way and
// returns what it did.
func (w *adoptionWriter) start() (stop func() writerStats) {
	quit, done := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(time.Duration(float64(time.Second) / w.rate))
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			w.write(i, quit)
		}
	}()
	return func() writerStats {
		close(quit)
		<-done
		w.mu.Lock()
		defer w.mu.Unlock()
		w.stats.Seconds = time.Since(start).Seconds()
		w.stats.PerSecond = float64(w.stats.Writes) / w.stats.Seconds
		if w.stats.Refused > 0 {
			w.stats.RefusedSeconds = w.stats.LastRefused.Sub(w.stats.FirstRefused).Seconds()
		}
		return w.stats
	}
}

// write makes the i-th write: a create every w.every writes, else an update
// of the object created last. It retries refused attempts until one is
// not refused, or quit is closed (a refused write is not applied).
func (w *adoptionWriter) write(i int, quit <-chan struct{}) {
	create, name := i%w.every == 0, w.writtenName(i/w.every)
	// The value of the update: i is larger than any before it.
	patch := fmt.Appendf(nil, `{"summary":{"warn":%d}}`, i)
	var firstRefused time.Time
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var err error
		if create {
			obj := shapeReport.object(w.apiVersion, adoptNamespace, w.filled+i/w.every)
			obj.SetName(name)
			_, err = w.res.Create(ctx, obj, metav1.CreateOptions{})
		} else {
			_, err = w.res.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		}
		cancel()
		now := time.Now()
		w.mu.Lock()
		switch {
		case err == nil:
			w.stats.Writes++
			if create {
				w.stats.Creates++
				w.created = append(w.created, name)
			} else {
				w.stats.Updates++
				w.updated[name] = int64(i)
			}
			delete(w.uncertain, name)
			if !firstRefused.IsZero() {
				w.stats.LongestWait = max(w.stats.LongestWait, now.Sub(firstRefused).Seconds())
			}
		case strings.Contains(err.Error(), w.freeze):
			w.stats.Refused++
			if w.stats.FirstRefused.IsZero() {
				w.stats.FirstRefused = now
			}
			w.stats.LastRefused = now
			if firstRefused.IsZero() {
				firstRefused = now
			}
			w.mu.Unlock()
			select {
			case <-quit:
				return
			case <-time.After(w.retryGap):
			}
			continue
		default:
			w.stats.Errors++
			if w.stats.FirstError == "" {
				w.stats.FirstError = fmt.Sprintf("%s %s at %s: %v", map[bool]string{true: "create", false: "update"}[create], name,
					now.UTC().Format("15:04:05.000"), err)
			}
			w.uncertain[name] = true
			if create {
				// Perhaps created: the checks accept it either way.
				w.created = append(w.created, name)
			}
		}
		w.mu.Unlock()
		return
	}
}

// verifyStats is what the checks after the adoption found.
type verifyStats struct {
	// Served objects were listed through the cluster; Expected is the count
	// before the writer plus its acknowledged creates.
	Served   int `json:"served"`
	Expected int `json:"expected"`
	// Missing objects were there before, or acknowledged, and are not
	// served; Unexpected are served and neither; LostUpdates are served
	// without their last acknowledged update. Uncertain objects, whose last
	// write failed otherwise than by a refusal, are not checked.
	Missing     int     `json:"missing"`
	Unexpected  int     `json:"unexpected"`
	LostUpdates int     `json:"lostUpdates"`
	Uncertain   int     `json:"uncertain"`
	Seconds     float64 `json:"seconds"`
	First       string  `json:"first,omitempty"`
}

func (v verifyStats) ok() bool {
	return v.Served == v.Expected && v.Missing == 0 && v.Unexpected == 0 && v.LostUpdates == 0 && v.Uncertain == 0
}

// verify lists every object of shape s in ns through t, page by page, and
// checks it against what existed before the writer and what the writer
// had acknowledged.
func (w *adoptionWriter) verify(ctx context.Context, t *target, s shape, ns string, page int, limit time.Duration) (verifyStats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	served := map[string]int64{}
	opts := metav1.ListOptions{Limit: int64(page)}
	for {
		var list *unstructured.UnstructuredList
		// A page that fails (the server busy) is asked for again.
		err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: time.Second, Factor: 2, Steps: 4}, func(ctx context.Context) (bool, error) {
			var err error
			list, err = t.Dyn.Resource(t.gvr(s)).Namespace(ns).List(ctx, opts)
			return err == nil, nil
		})
		if err != nil {
			return verifyStats{}, fmt.Errorf("listing through the cluster after %d objects: %w", len(served), err)
		}
		for _, item := range list.Items {
			warn, _, _ := unstructured.NestedInt64(item.Object, "summary", "warn")
			served[item.GetName()] = warn
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			break
		}
	}
	v := verifyStats{Served: len(served), Expected: w.filled + w.inherited + w.stats.Creates, Uncertain: len(w.uncertain)}
	first := func(format string, args ...any) {
		if v.First == "" {
			v.First = fmt.Sprintf(format, args...)
		}
	}
	expected := make(map[string]bool, w.filled+len(w.created))
	for k := range w.filled {
		expected[objectName(k)] = true
	}
	for _, n := range w.created {
		expected[n] = true
	}
	for n := range expected {
		if _, ok := served[n]; !ok && !w.uncertain[n] {
			v.Missing++
			first("%s is not served", n)
		}
	}
	for n := range served {
		if !expected[n] {
			v.Unexpected++
			first("%s is served, and was neither there before nor created by the writer", n)
		}
	}
	for n, want := range w.updated {
		if got, ok := served[n]; ok && got != want && !w.uncertain[n] {
			v.LostUpdates++
			first("%s has summary.warn %d, want %d, its last acknowledged update", n, got, want)
		}
	}
	v.Seconds = time.Since(start).Seconds()
	return v, nil
}
