package history

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Report is what Check found.
type Report struct {
	// Operations is how many operations the history holds (reads and
	// writes of the clients, the watchers' lists, the final list).
	Operations int
	// Writes by result: acknowledged, of unknown outcome, refused by the
	// model's rules (AlreadyExists, Conflict, NotFound), refused before
	// anything was done.
	AckedWrites, UnknownWrites, RejectedWrites, RefusedWrites int
	// Reads that returned a state (gets, lists).
	Reads int
	// Causes counts the writes of unknown outcome and the refused ones
	// by what the client saw.
	Causes map[string]int

	// Linearizable is porcupine's verdict on the whole history.
	Linearizable porcupine.CheckResult

	// The violations, counted by kind. A stale read returned a state
	// older than a write acknowledged before the read started. A lost
	// write is an acknowledged write missing from the final state.
	StaleReads, LostWrites int
	// RVsBackwards: acknowledged writes whose resourceVersion is not above
	// that of a write (of any object) acknowledged before they started.
	RVsBackwards int
	// BadLists: lists that are not a snapshot at their resourceVersion (an
	// item newer than the list, or older than an acknowledged write at or
	// below the list's resourceVersion).
	BadLists int

	// Watches: events received (bookmarks included), chains (a list and
	// the watches resumed from it), chains ended by a 410 Gone.
	WatchEvents, Bookmarks, Chains, ChainsGone int
	// SilentGaps: acknowledged writes inside a chain's window that the
	// chain did not deliver. OutOfOrder: events whose resourceVersion is
	// not above the previous one. BookmarksBack: bookmarks below what was
	// already delivered. Phantoms: events of writes that never happened
	// (or at another resourceVersion). BadTransitions: an ADDED for an
	// object present, a MODIFIED or DELETED for one absent.
	SilentGaps, OutOfOrder, BookmarksBack, Phantoms, BadTransitions int
	// Resumes: watches started after the run from a resourceVersion a
	// chain saw; answered 410, differing from the chain, failed.
	Resumes, ResumesGone, ResumeMismatches, ResumeErrors int

	// Violations describes the first violations found.
	Violations []string
	// Files are the visualization and the history written on failure.
	Files []string
}

// OK says whether the history is linearizable and no watch property was
// violated.
func (r *Report) OK() bool {
	return r.Linearizable == porcupine.Ok && r.StaleReads == 0 && r.LostWrites == 0 && r.BadLists == 0 && r.RVsBackwards == 0 &&
		r.SilentGaps == 0 && r.OutOfOrder == 0 && r.BookmarksBack == 0 && r.Phantoms == 0 &&
		r.BadTransitions == 0 && r.ResumeMismatches == 0 && r.ResumeErrors == 0
}

// String summarizes the report in a few lines.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "operations %d (writes: %d acknowledged, %d of unknown outcome, %d rejected, %d refused; %d reads)\n",
		r.Operations, r.AckedWrites, r.UnknownWrites, r.RejectedWrites, r.RefusedWrites, r.Reads)
	if len(r.Causes) > 0 {
		keys := make([]string, 0, len(r.Causes))
		for k := range r.Causes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "  %d %s\n", r.Causes[k], k)
		}
	}
	fmt.Fprintf(&b, "linearizable: %s; stale reads: %d; acknowledged writes lost: %d; lists not a snapshot: %d; resourceVersions backwards: %d\n",
		r.Linearizable, r.StaleReads, r.LostWrites, r.BadLists, r.RVsBackwards)
	fmt.Fprintf(&b, "watch: %d events (%d bookmarks) in %d chains (%d ended by 410); silent gaps: %d; out of order: %d; bookmarks back: %d; phantoms: %d; bad transitions: %d\n",
		r.WatchEvents, r.Bookmarks, r.Chains, r.ChainsGone, r.SilentGaps, r.OutOfOrder, r.BookmarksBack, r.Phantoms, r.BadTransitions)
	fmt.Fprintf(&b, "resumed watches: %d (%d answered 410); different suffix: %d; failed: %d",
		r.Resumes, r.ResumesGone, r.ResumeMismatches, r.ResumeErrors)
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "\n  %s", v)
	}
	for _, f := range r.Files {
		fmt.Fprintf(&b, "\nwritten: %s", f)
	}
	return b.String()
}

const maxViolations = 20

// causes are the fragments of error messages that name what a client saw.
var causes = []string{
	"connection refused", "connection reset by peer", "broken pipe", "EOF", "context deadline exceeded",
	"Client.Timeout", "TLS handshake", "GOAWAY", "service unavailable", "the server is currently unable to handle the request",
	"etcdserver", "Internal error", "Too many requests", "timeout",
}

func (r *Report) cause(o *Op) {
	if r.Causes == nil {
		r.Causes = map[string]int{}
	}
	c := "other: " + o.Err
	for _, frag := range causes {
		if strings.Contains(o.Err, frag) {
			c = frag
			break
		}
	}
	r.Causes[fmt.Sprintf("%s: %s", o.Result, c)]++
}

func (r *Report) violation(format string, args ...any) {
	if len(r.Violations) < maxViolations {
		r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
	}
}

// Check checks a history. Porcupine gets up to timeout (a verdict of
// Unknown fails the check). When the check fails and dir is not empty, it
// writes there porcupine's visualization (history.html) and the history
// (history.json), and names them in the report.
func Check(h *History, dir string, timeout time.Duration) *Report {
	r := &Report{}
	for i := range h.Ops {
		o := &h.Ops[i]
		r.Operations++
		switch {
		case o.IsWrite() && o.Result == OK:
			r.AckedWrites++
		case o.IsWrite() && o.Result == Unknown:
			r.UnknownWrites++
			r.cause(o)
		case o.IsWrite() && o.Result == Refused:
			r.RefusedWrites++
			r.cause(o)
		case o.IsWrite():
			r.RejectedWrites++
		case o.Result == OK || o.Result == NotFound:
			r.Reads++
		}
	}
	if h.Final != nil {
		r.Operations++
		r.Reads++
	}

	m := newModel(h)
	result, info := porcupine.CheckOperationsVerbose(m, operations(h), timeout)
	r.Linearizable = result
	if result != porcupine.Ok {
		r.violation("the history is not linearizable (porcupine: %s)", result)
	}
	var notes []porcupine.Annotation
	note := func(at int64, tag, format string, args ...any) {
		notes = append(notes, porcupine.Annotation{Tag: tag, Start: at, Description: fmt.Sprintf(format, args...), BackgroundColor: "#f7c6c6"})
	}
	checkReads(h, r, note)
	checkOrder(h, r, note)
	checkWatches(h, r, note)

	if !r.OK() && dir != "" {
		for _, mk := range h.Marks {
			notes = append(notes, porcupine.Annotation{Tag: "faults", Start: mk.At, Description: mk.Description})
		}
		info.AddAnnotations(notes)
		if err := os.MkdirAll(dir, 0o755); err == nil {
			html := filepath.Join(dir, "history.html")
			if err := porcupine.VisualizePath(m, info, html); err == nil {
				r.Files = append(r.Files, html)
			} else {
				r.violation("writing the visualization: %v", err)
			}
			if data, err := json.MarshalIndent(h, "", " "); err == nil {
				file := filepath.Join(dir, "history.json")
				if err := os.WriteFile(file, data, 0o644); err == nil {
					r.Files = append(r.Files, file)
				}
			}
		}
	}
	return r
}

// writesByName returns each name's acknowledged writes, by resourceVersion.
func writesByName(h *History) map[string][]*Op {
	out := map[string][]*Op{}
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.IsWrite() && o.Result == OK {
			out[o.Name] = append(out[o.Name], o)
		}
	}
	for _, ws := range out {
		sort.Slice(ws, func(i, j int) bool { return ws[i].RV < ws[j].RV })
	}
	return out
}

// checkReads counts stale reads (a state older than a write acknowledged
// before the read started) and lost writes (acknowledged, and missing from
// the final state).
//
// A delete of a custom resource answers with no resourceVersion, so the
// order of deletes comes from time: a delete acknowledged before an
// operation started comes before it.
func checkReads(h *History, r *Report, note func(at int64, tag, format string, args ...any)) {
	acked := writesByName(h)
	byValue := map[string]*Op{}
	deletes := map[string][]*Op{} // acknowledged or of unknown outcome
	for i := range h.Ops {
		o := &h.Ops[i]
		switch {
		case (o.Kind == Create || o.Kind == Update) && o.Result == OK:
			byValue[o.Value] = o
		case o.Kind == Delete && (o.Result == OK || o.Result == Unknown):
			deletes[o.Name] = append(deletes[o.Name], o)
		}
	}
	// newest is the acknowledged create or update of name with the highest
	// resourceVersion among those that returned before t.
	newest := func(name string, t int64) *Op {
		var last *Op
		for _, w := range acked[name] {
			if w.Kind != Delete && w.Return < t && (last == nil || w.RV > last.RV) {
				last = w
			}
		}
		return last
	}
	// staleness says why a read of name during [call, ret] that found obj
	// (or nothing) is stale, or "".
	staleness := func(name string, found bool, obj Object, call, ret int64) string {
		last := newest(name, call)
		if found {
			if last != nil && obj.RV < last.RV {
				return fmt.Sprintf("after %s", last)
			}
			// The version read was deleted before the read started.
			if w := byValue[obj.Value]; w != nil {
				for _, d := range deletes[name] {
					if d.Result == OK && d.Call > w.Return && d.Return < call {
						return fmt.Sprintf("after %s", d)
					}
				}
			}
			return ""
		}
		if last == nil {
			return ""
		}
		// Absent: only a delete that may come after last explains it.
		for _, d := range deletes[name] {
			if d.Return > last.Call && d.Call < ret {
				return ""
			}
		}
		return fmt.Sprintf("after %s", last)
	}
	for i := range h.Ops {
		o := &h.Ops[i]
		type read struct {
			name  string
			found bool
			obj   Object
		}
		var reads []read
		switch {
		case o.Kind == Get && o.Result == OK:
			reads = []read{{o.Name, true, *o.Got}}
		case o.Kind == Get && o.Result == NotFound:
			reads = []read{{name: o.Name}}
		case o.Kind == List && o.Result == OK:
			for _, n := range h.Names {
				obj, ok := o.Items[n]
				reads = append(reads, read{n, ok, obj})
			}
		}
		if o.Kind == List && o.Result == OK {
			if why := notSnapshot(o, acked); why != "" {
				r.BadLists++
				r.violation("%s is not a snapshot at resourceVersion %d: %s", o, o.RV, why)
				note(o.Call, "lists", "not a snapshot: %s", why)
			}
		}
		for _, rd := range reads {
			why := staleness(rd.name, rd.found, rd.obj, o.Call, o.Return)
			if why == "" {
				continue
			}
			r.StaleReads++
			got := "absent"
			if rd.found {
				got = fmt.Sprintf("%s@%d", rd.obj.Value, rd.obj.RV)
			}
			r.violation("stale read of %s: %s returned %s %s", rd.name, o, got, why)
			note(o.Call, "stale reads", "%s: %s %s", rd.name, got, why)
		}
	}
	if h.Final == nil {
		return
	}
	// The final list, taken after every client stopped, must hold every
	// acknowledged write that nothing later replaced.
	for _, name := range h.Names {
		final, found := h.Final.Items[name]
		var lost []*Op
		if found {
			for _, w := range acked[name] {
				if w.Kind != Delete && w.RV > final.RV {
					lost = append(lost, w)
				}
			}
			if w := byValue[final.Value]; w != nil {
				for _, d := range deletes[name] {
					if d.Result == OK && d.Call > w.Return {
						lost = append(lost, d)
					}
				}
			}
		} else if last := newest(name, Pending); last != nil {
			lost = append(lost, last)
			for _, d := range deletes[name] {
				if d.Return > last.Call {
					lost = nil
				}
			}
		}
		for _, w := range lost {
			r.LostWrites++
			r.violation("acknowledged write lost: %s; the final state of %s is %v (found: %t)", w, name, final, found)
			note(w.Return, "lost writes", "%s %s rv=%d", w.Kind, name, w.RV)
		}
	}
}

// checkOrder checks that resourceVersions follow real time across
// objects: a write acknowledged before another started has a lower one.
func checkOrder(h *History, r *Report, note func(at int64, tag, format string, args ...any)) {
	var writes []*Op
	for i := range h.Ops {
		if o := &h.Ops[i]; o.IsWrite() && o.Result == OK && o.RV != 0 {
			writes = append(writes, o)
		}
	}
	byReturn := append([]*Op(nil), writes...)
	sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
	sort.Slice(writes, func(i, j int) bool { return writes[i].Call < writes[j].Call })
	var before *Op // the highest resourceVersion acknowledged so far
	k := 0
	for _, w := range writes {
		for ; k < len(byReturn) && byReturn[k].Return < w.Call; k++ {
			if before == nil || byReturn[k].RV > before.RV {
				before = byReturn[k]
			}
		}
		if before != nil && w.RV <= before.RV {
			r.RVsBackwards++
			r.violation("%s got a resourceVersion not above that of %s, acknowledged before it started", w, before)
			note(w.Return, "resourceVersions", "%s %s rv=%d after rv=%d", w.Kind, w.Name, w.RV, before.RV)
		}
	}
}

// notSnapshot says why a list is not the state at its resourceVersion, or
// "".
func notSnapshot(l *Op, acked map[string][]*Op) string {
	for name, obj := range l.Items {
		if obj.RV > l.RV {
			return fmt.Sprintf("%s is at %d", name, obj.RV)
		}
		for _, w := range acked[name] {
			if w.Kind != Delete && w.RV <= l.RV && obj.RV < w.RV {
				return fmt.Sprintf("%s is at %d, below %s", name, obj.RV, w)
			}
		}
	}
	return ""
}

// checkWatches checks each chain's order, transitions and completeness
// against the acknowledged writes, and the resumed watches against the
// chains.
func checkWatches(h *History, r *Report, note func(at int64, tag, format string, args ...any)) {
	acked := writesByName(h)
	var allAcked []*Op
	for _, ws := range acked {
		allAcked = append(allAcked, ws...)
	}
	byValue := map[string]*Op{}
	deletes := map[string][]*Op{}
	for i := range h.Ops {
		o := &h.Ops[i]
		switch o.Kind {
		case Create, Update:
			byValue[o.Value] = o
		case Delete:
			deletes[o.Name] = append(deletes[o.Name], o)
		}
	}
	eventOf := map[Kind]EventType{Create: Added, Update: Modified, Delete: Deleted}

	r.Chains = len(h.Chains)
	for ci := range h.Chains {
		c := &h.Chains[ci]
		if n := len(c.Segments); n > 0 && c.Segments[n-1].Ended == "gone" {
			r.ChainsGone++
		}
		events := c.Events()
		r.WatchEvents += len(events)
		state := map[string]Object{}
		for k, v := range c.Initial {
			state[k] = v
		}
		last := c.StartRV
		byRV := map[uint64]Event{}
		for _, e := range events {
			if e.Type == Bookmark {
				r.Bookmarks++
				if e.RV < last {
					r.BookmarksBack++
					r.violation("watcher %d chain %d: bookmark at %d after %d", c.Watcher, ci, e.RV, last)
					note(e.At, "watch", "bookmark back: %d after %d", e.RV, last)
				}
				last = max(last, e.RV)
				continue
			}
			if e.RV <= last {
				r.OutOfOrder++
				r.violation("watcher %d chain %d: %s after resourceVersion %d", c.Watcher, ci, e, last)
				note(e.At, "watch", "out of order: %s after %d", e, last)
			}
			last = max(last, e.RV)
			byRV[e.RV] = e

			cur, present := state[e.Name]
			switch {
			case e.Type == Added && present, e.Type != Added && !present:
				r.BadTransitions++
				r.violation("watcher %d chain %d: %s while the object was %v (present: %t)", c.Watcher, ci, e, cur, present)
				note(e.At, "watch", "bad transition: %s", e)
			case e.Type == Deleted && cur.Value != e.Value:
				r.BadTransitions++
				r.violation("watcher %d chain %d: %s, but the object held %s", c.Watcher, ci, e, cur.Value)
				note(e.At, "watch", "bad transition: %s", e)
			}
			if e.Type == Deleted {
				delete(state, e.Name)
			} else {
				state[e.Name] = Object{Value: e.Value, RV: e.RV}
			}

			phantom := ""
			switch e.Type {
			case Added, Modified:
				w := byValue[e.Value]
				switch {
				case w == nil:
					phantom = "no write wrote this value"
				case w.Name != e.Name || eventOf[w.Kind] != e.Type:
					phantom = fmt.Sprintf("the value was written by %s", w)
				case w.Result == OK && w.RV != e.RV:
					phantom = fmt.Sprintf("the write got resourceVersion %d", w.RV)
				case w.Result != OK && w.Result != Unknown:
					phantom = fmt.Sprintf("the write failed: %s", w)
				}
			case Deleted:
				phantom = "no delete of the object can have made it"
				for _, d := range deletes[e.Name] {
					if (d.Result == OK && (d.RV == e.RV || d.RV == 0)) || d.Result == Unknown {
						phantom = ""
					}
				}
			}
			if phantom != "" {
				r.Phantoms++
				r.violation("watcher %d chain %d: %s: %s", c.Watcher, ci, e, phantom)
				note(e.At, "watch", "phantom: %s", e)
			}
		}
		// Every acknowledged write inside the window must be there.
		end := c.LastRV()
		for _, w := range allAcked {
			if w.RV == 0 {
				// A delete answered without its resourceVersion: it lies
				// above every write acknowledged before it started and
				// below every write started after it returned.
				lo, hi, ok := bounds(allAcked, w)
				if !ok || lo < c.StartRV || hi > end {
					continue
				}
				seen := false
				for _, e := range events {
					if e.Type == Deleted && e.Name == w.Name && e.RV > lo && e.RV < hi {
						seen = true
					}
				}
				if !seen {
					r.SilentGaps++
					r.violation("watcher %d chain %d (from %d to %d) did not deliver %s (between resourceVersions %d and %d)", c.Watcher, ci, c.StartRV, end, w, lo, hi)
					note(w.Return, "watch", "silent gap: delete %s", w.Name)
				}
				continue
			}
			if w.RV <= c.StartRV || w.RV > end {
				continue
			}
			e, ok := byRV[w.RV]
			if !ok || e.Name != w.Name || e.Type != eventOf[w.Kind] {
				r.SilentGaps++
				r.violation("watcher %d chain %d (from %d to %d) did not deliver %s", c.Watcher, ci, c.StartRV, end, w)
				note(w.Return, "watch", "silent gap: %s %s rv=%d", w.Kind, w.Name, w.RV)
			}
		}
	}

	for _, res := range h.Resumes {
		r.Resumes++
		switch {
		case res.Gone:
			r.ResumesGone++
			continue
		case res.Err != "":
			r.ResumeErrors++
			r.violation("watch resumed from %d (watcher %d chain %d): %s", res.From, res.Watcher, res.Chain, res.Err)
			continue
		}
		var want, got []string
		for _, e := range h.Chains[res.Chain].Events() {
			if e.Type != Bookmark && e.RV > res.From && e.RV <= res.Until {
				want = append(want, e.String())
			}
		}
		for _, e := range res.Events {
			if e.Type != Bookmark && e.RV <= res.Until {
				got = append(got, e.String())
			}
		}
		if strings.Join(want, "\n") != strings.Join(got, "\n") {
			r.ResumeMismatches++
			r.violation("watch resumed from %d (watcher %d chain %d) delivered %d events, the chain %d; first difference: %s",
				res.From, res.Watcher, res.Chain, len(got), len(want), firstDifference(want, got))
		}
	}
}

// bounds returns the resourceVersions between which a delete without one
// lies: the highest of the writes acknowledged before it started, and the
// lowest of those started after it returned.
func bounds(acked []*Op, d *Op) (lo, hi uint64, ok bool) {
	for _, w := range acked {
		switch {
		case w.RV == 0:
		case w.Return < d.Call:
			lo = max(lo, w.RV)
		case w.Call > d.Return && (hi == 0 || w.RV < hi):
			hi = w.RV
		}
	}
	return lo, hi, hi != 0
}

func firstDifference(want, got []string) string {
	for i := 0; i < len(want) || i < len(got); i++ {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			return fmt.Sprintf("at %d: chain %q, resumed %q", i, w, g)
		}
	}
	return "none"
}
