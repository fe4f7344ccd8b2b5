// Package history records what concurrent clients of one resource type saw
// (creates, updates and deletes with resourceVersion preconditions, gets,
// lists and watches), and checks that history against Kubernetes object
// semantics: linearizability with porcupine against a model of objects
// partitioned by name, and the properties of watches (order, no silent gap
// against acknowledged writes, resumption, bookmarks).
//
// A Recorder drives the clients through client-go against any server that
// speaks the Kubernetes REST API for one type; Check reads the History it
// produced and returns a Report. On a violation Check writes porcupine's HTML
// visualization and the history as JSON to a directory the caller chooses.
package history

import (
	"fmt"
	"math"
	"strings"
)

// Kind is what an operation did.
type Kind string

const (
	Create Kind = "create"
	Update Kind = "update"
	Delete Kind = "delete"
	Get    Kind = "get"
	List   Kind = "list"
)

// Result is how an operation ended, as its client saw it.
type Result string

const (
	// OK: the server acknowledged the operation.
	OK Result = "ok"
	// AlreadyExists, Conflict and NotFound are the refusals the model
	// knows: a create of an existing name, a precondition that does not
	// hold, an object that is not there.
	AlreadyExists Result = "AlreadyExists"
	Conflict      Result = "Conflict"
	NotFound      Result = "NotFound"
	// Refused: the operation certainly had no effect (the connection was
	// refused, or the server answered 4xx before doing anything), and
	// tells nothing about the object's state.
	Refused Result = "refused"
	// Unknown: the client cannot know whether a write took effect (a
	// timeout, a reset connection, a 5xx). The model lets such a write
	// take effect at any point after its call, or never.
	Unknown Result = "unknown"
)

// Pending is the return time of an operation whose outcome is unknown:
// it may take effect at any time after its call.
const Pending int64 = math.MaxInt64

// Object is the part of an object the checker follows: the value its
// writer put in it, and its resourceVersion.
type Object struct {
	Value string `json:"value"`
	RV    uint64 `json:"rv"`
}

// Op is one operation of one client.
type Op struct {
	Client int    `json:"client"`
	Kind   Kind   `json:"kind"`
	Name   string `json:"name,omitempty"`
	// Value is what a create or update wrote; unique in a history.
	Value string `json:"value,omitempty"`
	// Precondition is the resourceVersion an update or delete required; 0
	// for a delete without precondition.
	Precondition uint64 `json:"precondition,omitempty"`

	Result Result `json:"result"`
	// RV is the resourceVersion a write returned (0 for a delete answered
	// with a Status, as custom resources are), or the one of the list.
	RV uint64 `json:"rv,omitempty"`
	// Got is what a get found (Result OK).
	Got *Object `json:"got,omitempty"`
	// Items is what a list returned, by name.
	Items map[string]Object `json:"items,omitempty"`
	Err   string            `json:"err,omitempty"`

	// Call and Return are nanoseconds since the recorder started, on the
	// monotonic clock. Return is the time the client got its answer, also
	// for an operation of unknown outcome.
	Call   int64 `json:"call"`
	Return int64 `json:"return"`
}

// IsWrite says whether the operation is a create, update or delete.
func (o *Op) IsWrite() bool { return o.Kind == Create || o.Kind == Update || o.Kind == Delete }

func (o *Op) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "client %d %s", o.Client, o.Kind)
	if o.Name != "" {
		fmt.Fprintf(&b, " %s", o.Name)
	}
	if o.Value != "" {
		fmt.Fprintf(&b, " value=%s", o.Value)
	}
	if o.Precondition != 0 {
		fmt.Fprintf(&b, " if rv=%d", o.Precondition)
	}
	fmt.Fprintf(&b, " -> %s", o.Result)
	if o.RV != 0 {
		fmt.Fprintf(&b, " rv=%d", o.RV)
	}
	if o.Got != nil {
		fmt.Fprintf(&b, " got %s@%d", o.Got.Value, o.Got.RV)
	}
	if o.Kind == List && o.Result == OK {
		fmt.Fprintf(&b, " %d items", len(o.Items))
	}
	if o.Err != "" {
		fmt.Fprintf(&b, " (%s)", o.Err)
	}
	fmt.Fprintf(&b, " [%s, %s]", ms(o.Call), ms(o.Return))
	return b.String()
}

func ms(t int64) string {
	if t == Pending {
		return "pending"
	}
	return fmt.Sprintf("%.3fs", float64(t)/1e9)
}

// EventType is the type of a watch event, as the API names it.
type EventType string

const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
	Bookmark EventType = "BOOKMARK"
)

// Event is one event a watch received. For a bookmark only RV is set.
type Event struct {
	Type  EventType `json:"type"`
	Name  string    `json:"name,omitempty"`
	Value string    `json:"value,omitempty"`
	RV    uint64    `json:"rv"`
	At    int64     `json:"at"`
}

func (e Event) String() string {
	if e.Type == Bookmark {
		return fmt.Sprintf("BOOKMARK rv=%d", e.RV)
	}
	return fmt.Sprintf("%s %s value=%s rv=%d", e.Type, e.Name, e.Value, e.RV)
}

// Segment is one watch request: from the resourceVersion it asked for
// until the stream ended.
type Segment struct {
	From   uint64  `json:"from"`
	Start  int64   `json:"start"`
	End    int64   `json:"end"`
	Events []Event `json:"events,omitempty"`
	// Ended says how the stream ended: "closed" by the server or the
	// network, "gone" (410), "error: ...", or "stopped" by the recorder.
	Ended string `json:"ended"`
}

// Chain is what one watcher saw from one list on: the list, then watches
// each resumed from the last resourceVersion the previous one delivered,
// until a 410 Gone (the watcher lists again and starts a new chain) or the
// end of the run. Within a chain every acknowledged write must appear.
type Chain struct {
	Watcher  int               `json:"watcher"`
	StartRV  uint64            `json:"startRV"`
	Initial  map[string]Object `json:"initial"`
	Segments []Segment         `json:"segments"`
}

// Events returns the chain's events in the order they arrived.
func (c *Chain) Events() []Event {
	var out []Event
	for _, s := range c.Segments {
		out = append(out, s.Events...)
	}
	return out
}

// LastRV is the newest resourceVersion the chain reached: its last event's
// or bookmark's, or the list's.
func (c *Chain) LastRV() uint64 {
	last := c.StartRV
	for _, e := range c.Events() {
		if e.RV > last {
			last = e.RV
		}
	}
	return last
}

// Resume is a watch started after the run from a resourceVersion a chain
// had seen: it must deliver the chain's events after From up to Until, the
// same ones in the same order, or answer 410 Gone.
type Resume struct {
	Watcher int     `json:"watcher"`
	Chain   int     `json:"chain"`
	From    uint64  `json:"from"`
	Until   uint64  `json:"until"`
	Events  []Event `json:"events,omitempty"`
	Gone    bool    `json:"gone,omitempty"`
	Err     string  `json:"err,omitempty"`
}

// Mark is something that happened to the system under test (a fault),
// shown in the visualization and the report.
type Mark struct {
	At          int64  `json:"at"`
	Description string `json:"description"`
}

// History is everything a run recorded.
type History struct {
	Names   []string `json:"names"`
	Ops     []Op     `json:"ops"`
	Chains  []Chain  `json:"chains"`
	Resumes []Resume `json:"resumes"`
	Marks   []Mark   `json:"marks"`
	// Final is the list taken after every client stopped, or nil.
	Final *Op `json:"final,omitempty"`
}
