//go:build integration

package etcdfault

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// event is one event of a watch as it arrived.
type event struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
	at     time.Time
}

// meta returns the name and resourceVersion of the event's object.
func (e event) meta() (name, rv string) {
	var o struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	_ = json.Unmarshal(e.Object, &o)
	return o.Metadata.Name, o.Metadata.ResourceVersion
}

// watcher is one watch of records, read as a client reads it: event by
// event, until annex ends it.
type watcher struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	code   int
	events []event
	// end says how the watch ended, once done is closed.
	end   string
	endAt time.Time
}

// watchRecords opens a watch of records from resourceVersion rv, with
// bookmarks, as a reflector opens one.
func (a *annex) watchRecords(rv string) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		finish := func(how string) {
			w.mu.Lock()
			w.end, w.endAt = how, time.Now()
			w.mu.Unlock()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			a.base+recordsPath+"?watch=1&allowWatchBookmarks=true&resourceVersion="+rv, nil)
		if err != nil {
			finish(err.Error())
			return
		}
		req.Header.Set("Accept", "application/json")
		resp, err := a.client.Do(req)
		if err != nil {
			finish("no response: " + err.Error())
			return
		}
		defer resp.Body.Close()
		w.mu.Lock()
		w.code = resp.StatusCode
		w.mu.Unlock()
		if resp.StatusCode != http.StatusOK {
			finish(fmt.Sprintf("status %d", resp.StatusCode))
			return
		}
		dec := json.NewDecoder(resp.Body)
		for {
			var e event
			if err := dec.Decode(&e); err != nil {
				if ctx.Err() != nil {
					finish("closed by the test")
				} else {
					finish("stream ended: " + err.Error())
				}
				return
			}
			e.at = time.Now()
			w.mu.Lock()
			w.events = append(w.events, e)
			w.mu.Unlock()
		}
	}()
	return w
}

// stop closes the watch and waits for its reader.
func (w *watcher) stop() {
	w.cancel()
	<-w.done
}

// ended says whether annex ended the watch, and how.
func (w *watcher) ended() (bool, string, time.Time) {
	select {
	case <-w.done:
		w.mu.Lock()
		defer w.mu.Unlock()
		return true, w.end, w.endAt
	default:
		return false, "", time.Time{}
	}
}

// snapshot returns the events so far.
func (w *watcher) snapshot() []event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]event(nil), w.events...)
}

// waitFor waits until the watch has delivered an ADDED event for every name,
// or it ends, or the timeout passes; it returns the names still missing.
func (w *watcher) waitFor(names []string, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		seen := map[string]bool{}
		for _, e := range w.snapshot() {
			if e.Type == "ADDED" {
				name, _ := e.meta()
				seen[name] = true
			}
		}
		var missing []string
		for _, n := range names {
			if !seen[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing
		}
		if ended, _, _ := w.ended(); ended {
			return missing
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lastRV is the resourceVersion of the last event, the point a client
// resumes from.
func lastRV(events []event) string {
	for i := len(events) - 1; i >= 0; i-- {
		if _, rv := events[i].meta(); rv != "" && events[i].Type != "ERROR" {
			return rv
		}
	}
	return ""
}

// watchError returns the Status of the first ERROR event, if any.
func watchError(events []event) *metav1.Status {
	for _, e := range events {
		if e.Type == "ERROR" {
			var s metav1.Status
			if err := json.Unmarshal(e.Object, &s); err == nil {
				return &s
			}
		}
	}
	return nil
}
