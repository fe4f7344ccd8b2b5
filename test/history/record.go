package history

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// ValueAnnotation is the annotation in which a write puts its value.
const ValueAnnotation = "history.annex.dev/value"

// Config says what a Recorder drives.
type Config struct {
	// REST reaches the server; Resource is the type, in Namespace (empty
	// for a cluster-scoped type).
	REST *rest.Config
	// Replicas, when set, are servers of the same store that the clients
	// and watchers share in turn, and REST is unused: client i talks to
	// Replicas[i%len(Replicas)], watcher j (and the watches resumed from
	// its chains) to Replicas[(Clients+j)%len(Replicas)], the final list
	// to Replicas[(Clients+Watchers)%len(Replicas)].
	Replicas  []*rest.Config
	Resource  schema.GroupVersionResource
	Namespace string
	// Object returns a valid object of the type (apiVersion, kind, spec)
	// for a create or an update; the recorder sets its name, value and
	// resourceVersion.
	Object func(name string) *unstructured.Unstructured
	// Names are the object names the clients share; few names make
	// conflicts frequent.
	Names []string
	// Clients write and read; Watchers list and watch.
	Clients, Watchers int
	// Pause is how long a client waits between two operations.
	Pause time.Duration
	// OpTimeout bounds each operation (an operation that times out has an
	// unknown outcome). Default 10s.
	OpTimeout time.Duration
	// WatchTimeout, when set, is each watch's timeoutSeconds: the server
	// ends the watch then (sending a bookmark shortly before), and the
	// watcher resumes it from the last resourceVersion it received.
	WatchTimeout time.Duration
	// Seed makes the clients' choices reproducible.
	Seed int64
	// Logf, when set, gets a line for each watch that ends and restarts.
	Logf func(format string, args ...any)
}

// Recorder runs the clients and watchers of a Config and records what they
// see.
type Recorder struct {
	cfg   Config
	start time.Time
	// servers are REST's, or each of Replicas'.
	servers []server

	stop     chan struct{}
	stopOnce sync.Once
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	inflight atomic.Int64 // writes sent and not answered yet

	mu sync.Mutex
	h  History
}

// server is how the recorder reaches one server.
type server struct {
	res  dynamic.ResourceInterface
	http *http.Client
	base string // the URL of the type's collection
}

func newServer(cfg *Config, rc *rest.Config) (server, error) {
	restCfg := rest.CopyConfig(rc)
	// No client-side rate limit: the clients keep their own pace.
	restCfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return server{}, err
	}
	httpClient, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		return server{}, err
	}
	client := dyn.Resource(cfg.Resource)
	var resClient dynamic.ResourceInterface = client
	path := "/apis/" + cfg.Resource.Group + "/" + cfg.Resource.Version
	if cfg.Resource.Group == "" {
		path = "/api/" + cfg.Resource.Version
	}
	if cfg.Namespace != "" {
		resClient = client.Namespace(cfg.Namespace)
		path += "/namespaces/" + cfg.Namespace
	}
	base, err := url.JoinPath(restCfg.Host, path, cfg.Resource.Resource)
	if err != nil {
		return server{}, err
	}
	return server{res: resClient, http: httpClient, base: base}, nil
}

// Start starts the clients and watchers; they run until Stop.
func Start(cfg Config) (*Recorder, error) {
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = 10 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	configs := cfg.Replicas
	if len(configs) == 0 {
		configs = []*rest.Config{cfg.REST}
	}
	var servers []server
	for _, rc := range configs {
		srv, err := newServer(&cfg, rc)
		if err != nil {
			return nil, err
		}
		servers = append(servers, srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{cfg: cfg, start: time.Now(), servers: servers, stop: make(chan struct{}), cancel: cancel}
	r.h.Names = append([]string(nil), cfg.Names...)
	for i := 0; i < cfg.Clients; i++ {
		r.wg.Add(1)
		go func(id int) {
			defer r.wg.Done()
			r.client(id, rand.New(rand.NewSource(cfg.Seed+int64(id))))
		}(i)
	}
	for i := 0; i < cfg.Watchers; i++ {
		r.wg.Add(1)
		go func(id int) {
			defer r.wg.Done()
			r.watcher(ctx, cfg.Clients+id)
		}(i)
	}
	return r, nil
}

// Now is the recorder's clock: nanoseconds since Start, monotonic.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Mark notes something done to the system under test, such as a fault.
func (r *Recorder) Mark(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Marks = append(r.h.Marks, Mark{At: r.Now(), Description: fmt.Sprintf(format, args...)})
}

// Counts returns how many operations were recorded so far, and how many of
// them were writes the server acknowledged.
func (r *Recorder) Counts() (ops, acked int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.h.Ops {
		if r.h.Ops[i].IsWrite() && r.h.Ops[i].Result == OK {
			acked++
		}
	}
	return len(r.h.Ops), acked
}

// WritesInFlight returns how many writes are sent and not answered yet.
func (r *Recorder) WritesInFlight() int { return int(r.inflight.Load()) }

// Stop lets each client finish its operation in flight, stops the
// watchers, and waits for all of them.
func (r *Recorder) Stop() {
	r.stopOnce.Do(func() {
		close(r.stop)
		r.cancel()
	})
	r.wg.Wait()
}

// Finish stops the run if it is not stopped, reads the final state with a
// list, resumes each watch chain from its list's resourceVersion and from
// up to 2*resumes-1 of the resourceVersions it saw, and returns the
// history. The server must be up; Finish retries the list until ctx ends.
func (r *Recorder) Finish(ctx context.Context, resumes int) (*History, error) {
	r.Stop()
	final := r.Clients() + r.cfg.Watchers
	for {
		o := r.list(ctx, final)
		if o.Result == OK {
			r.h.Final = &o
			break
		}
		select {
		case <-ctx.Done():
			return &r.h, fmt.Errorf("the final list never succeeded: %s", o.Err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	sort.SliceStable(r.h.Chains, func(i, j int) bool { return r.h.Chains[i].Watcher < r.h.Chains[j].Watcher })
	for ci := range r.h.Chains {
		c := &r.h.Chains[ci]
		var events []Event
		for _, e := range c.Events() {
			if e.Type != Bookmark {
				events = append(events, e)
			}
		}
		if len(events) == 0 {
			continue
		}
		until := events[len(events)-1].RV
		// From the list, from points spread over the chain, and from
		// points spread over its last watch: after a restart of the
		// server only the latter may still be served.
		froms := []uint64{c.StartRV}
		for k := 1; k < resumes && len(events) > 1; k++ {
			froms = append(froms, events[(k*(len(events)-1))/resumes].RV)
		}
		lastSeg := c.Segments[len(c.Segments)-1].Events
		for k := 0; k < resumes && len(lastSeg) > 1; k++ {
			if e := lastSeg[(k*(len(lastSeg)-1))/resumes]; e.Type != Bookmark {
				froms = append(froms, e.RV)
			}
		}
		seen := map[uint64]bool{}
		for _, from := range froms {
			if seen[from] || from >= until {
				continue
			}
			seen[from] = true
			res := r.resume(ctx, c.Watcher, from, until)
			res.Watcher, res.Chain = c.Watcher, ci
			r.h.Resumes = append(r.h.Resumes, res)
		}
	}
	return &r.h, nil
}

// Clients is the number of writing clients.
func (r *Recorder) Clients() int { return r.cfg.Clients }

// server is the server that client or watcher id talks to.
func (r *Recorder) server(id int) server { return r.servers[id%len(r.servers)] }

func (r *Recorder) record(o Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Ops = append(r.h.Ops, o)
}

func (r *Recorder) stopped() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// client runs operations on random names until Stop.
func (r *Recorder) client(id int, rng *rand.Rand) {
	known := map[string]uint64{} // the last resourceVersion seen per name
	seq := 0
	for !r.stopped() {
		name := r.cfg.Names[rng.Intn(len(r.cfg.Names))]
		var o Op
		switch p := rng.Float64(); {
		case p < 0.2:
			seq++
			o = r.write(id, Create, name, fmt.Sprintf("c%d-%d", id, seq), 0)
		case p < 0.45:
			seq++
			pre := known[name]
			if pre == 0 {
				pre = 1 // no object of this name was seen: a conflict or a 404
			}
			o = r.write(id, Update, name, fmt.Sprintf("c%d-%d", id, seq), pre)
		case p < 0.55:
			var pre uint64
			if rng.Intn(3) > 0 {
				pre = known[name]
			}
			o = r.write(id, Delete, name, "", pre)
		case p < 0.8:
			o = r.get(id, name)
		default:
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpTimeout)
			o = r.list(ctx, id)
			cancel()
		}
		r.record(o)
		switch {
		case o.Result == OK && (o.Kind == Create || o.Kind == Update):
			known[name] = o.RV
		case o.Result == OK && o.Kind == Delete, o.Result == NotFound:
			delete(known, name)
		case o.Result == OK && o.Kind == Get:
			known[name] = o.Got.RV
		case o.Result == OK && o.Kind == List:
			known = map[string]uint64{}
			for n, obj := range o.Items {
				known[n] = obj.RV
			}
		}
		pause := r.cfg.Pause
		if o.Result == Unknown || o.Result == Refused || (o.Result != OK && !o.IsWrite() && o.Result != NotFound) {
			pause += 100 * time.Millisecond // the server is probably down
		}
		select {
		case <-r.stop:
		case <-time.After(pause):
		}
	}
}

func (r *Recorder) write(client int, kind Kind, name, value string, pre uint64) Op {
	o := Op{Client: client, Kind: kind, Name: name, Value: value, Precondition: pre}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpTimeout)
	defer cancel()
	var got *unstructured.Unstructured
	var err error
	r.inflight.Add(1)
	o.Call = r.Now()
	switch kind {
	case Create, Update:
		obj := r.cfg.Object(name)
		obj.SetName(name)
		ann := obj.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[ValueAnnotation] = value
		obj.SetAnnotations(ann)
		if kind == Create {
			got, err = r.server(client).res.Create(ctx, obj, metav1.CreateOptions{})
		} else {
			obj.SetResourceVersion(strconv.FormatUint(pre, 10))
			got, err = r.server(client).res.Update(ctx, obj, metav1.UpdateOptions{})
		}
	case Delete:
		opts := metav1.DeleteOptions{}
		if pre != 0 {
			rv := strconv.FormatUint(pre, 10)
			opts.Preconditions = &metav1.Preconditions{ResourceVersion: &rv}
		}
		// client-go's dynamic Delete does not return the object; the
		// deleted object's resourceVersion comes from a raw request.
		got, err = r.deleteReturning(ctx, r.server(client), name, opts)
	}
	o.Return = r.Now()
	r.inflight.Add(-1)
	o.Result, o.Err = classify(err)
	if o.Result == OK && !(kind == Delete && got == nil) {
		if o.RV, err = rvOf(got); err != nil {
			o.Result, o.Err = Unknown, err.Error()
		}
	}
	return o
}

// deleteReturning deletes name and returns what the server answered: the
// object as deleted, with the resourceVersion of the deletion.
func (r *Recorder) deleteReturning(ctx context.Context, srv server, name string, opts metav1.DeleteOptions) (*unstructured.Unstructured, error) {
	// client-go's dynamic Delete drops the answer, so send it here.
	body, err := json.Marshal(opts)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, srv.base+"/"+url.PathEscape(name), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := srv.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		if resp.StatusCode >= 300 {
			// Not a Status (the aggregator answers text): the error
			// client-go makes of such an answer.
			return nil, apierrors.NewGenericServerResponse(resp.StatusCode, http.MethodDelete, r.cfg.Resource.GroupResource(), name, string(data), 0, true)
		}
		return nil, fmt.Errorf("%d: %s: %w", resp.StatusCode, data, err)
	}
	if obj.GetKind() == "Status" {
		if st, _, _ := unstructured.NestedString(obj.Object, "status"); st == metav1.StatusSuccess && resp.StatusCode < 300 {
			// Deleted, with no resourceVersion: the kube-apiserver
			// answers so for custom resources.
			return nil, nil
		}
		return nil, apierrors.FromObject(obj)
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%d: %s", resp.StatusCode, data)
	}
	return obj, nil
}

func (r *Recorder) get(client int, name string) Op {
	o := Op{Client: client, Kind: Get, Name: name}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpTimeout)
	defer cancel()
	o.Call = r.Now()
	got, err := r.server(client).res.Get(ctx, name, metav1.GetOptions{})
	o.Return = r.Now()
	o.Result, o.Err = classify(err)
	if o.Result == OK {
		obj, err := objectOf(got)
		if err != nil {
			o.Result, o.Err = Unknown, err.Error()
		} else {
			o.Got = &obj
		}
	}
	return o
}

func (r *Recorder) list(ctx context.Context, client int) Op {
	o := Op{Client: client, Kind: List}
	o.Call = r.Now()
	got, err := r.server(client).res.List(ctx, metav1.ListOptions{})
	o.Return = r.Now()
	o.Result, o.Err = classify(err)
	if o.Result != OK {
		return o
	}
	if o.RV, err = strconv.ParseUint(got.GetResourceVersion(), 10, 64); err != nil {
		o.Result, o.Err = Unknown, "list resourceVersion: "+err.Error()
		return o
	}
	o.Items = map[string]Object{}
	for i := range got.Items {
		obj, err := objectOf(&got.Items[i])
		if err != nil {
			o.Result, o.Err = Unknown, err.Error()
			return o
		}
		o.Items[got.Items[i].GetName()] = obj
	}
	return o
}

// classify says what an error means for the operation's outcome.
func classify(err error) (Result, string) {
	if err == nil {
		return OK, ""
	}
	msg := err.Error()
	switch {
	case apierrors.IsAlreadyExists(err):
		return AlreadyExists, msg
	case apierrors.IsConflict(err):
		return Conflict, msg
	case apierrors.IsNotFound(err):
		return NotFound, msg
	case errors.Is(err, syscall.ECONNREFUSED):
		// Nothing reached the server.
		return Refused, msg
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		s := status.Status()
		msg += serverResponse(s)
		code := int(s.Code)
		// A 4xx other than a timeout was answered before anything was
		// written (429: refused by priority and fairness).
		if code >= 400 && code < 500 && code != http.StatusRequestTimeout {
			return Refused, msg
		}
		if code == http.StatusServiceUnavailable && notSent(s) {
			return Refused, msg
		}
	}
	return Unknown, msg
}

// serverResponse is the body of an answer that was not a Status, which
// client-go keeps as a cause and leaves out of its error's message (for a
// 503: "the server is currently unable to handle the request"), as ": "
// and its first 200 bytes; "" for a Status.
func serverResponse(s metav1.Status) string {
	if s.Details == nil {
		return ""
	}
	for _, c := range s.Details.Causes {
		if c.Type == metav1.CauseTypeUnexpectedServerResponse {
			body := strings.TrimSpace(c.Message)
			if len(body) > 200 {
				body = body[:200] + "..."
			}
			return ": " + body
		}
	}
	return ""
}

// notSent says whether a 503 is one the write's server answered without
// applying the write:
//   - the kube-apiserver's aggregator answers "service unavailable" (as text,
//     not a Status) when it did not send the request on: the APIService is
//     not available, or it has no endpoint;
//   - the aggregator answers its error when its connection to the
//     APIService's server could not be made (connection refused);
//   - annex answers that the write was not applied when its store was not
//     reached.
//
// Any other 503 (a connection lost during the request, a timeout) leaves
// the outcome unknown. The history checks annex's claim: a write it
// called not applied that shows up is a violation.
func notSent(s metav1.Status) bool {
	if strings.Contains(s.Message, "the write was not applied") {
		return true
	}
	if s.Details == nil {
		return false
	}
	for _, c := range s.Details.Causes {
		// client-go keeps a body that is not a Status as a cause.
		if c.Type == metav1.CauseTypeUnexpectedServerResponse &&
			(strings.TrimSpace(c.Message) == "service unavailable" || strings.Contains(c.Message, "connect: connection refused")) {
			return true
		}
	}
	return false
}

func rvOf(obj *unstructured.Unstructured) (uint64, error) {
	if obj == nil {
		return 0, errors.New("no object in the answer")
	}
	rv, err := strconv.ParseUint(obj.GetResourceVersion(), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("resourceVersion %q: %w", obj.GetResourceVersion(), err)
	}
	return rv, nil
}

func objectOf(obj *unstructured.Unstructured) (Object, error) {
	rv, err := rvOf(obj)
	if err != nil {
		return Object{}, err
	}
	return Object{Value: obj.GetAnnotations()[ValueAnnotation], RV: rv}, nil
}

// watcher lists, then watches from the list's resourceVersion, resuming
// each ended watch from the last resourceVersion it delivered; after a 410
// it lists again and starts a new chain.
func (r *Recorder) watcher(ctx context.Context, id int) {
	var chains []Chain
	defer func() {
		r.mu.Lock()
		r.h.Chains = append(r.h.Chains, chains...)
		r.mu.Unlock()
	}()
	for ctx.Err() == nil {
		// A list starts a chain.
		lctx, cancel := context.WithTimeout(ctx, r.cfg.OpTimeout)
		l := r.list(lctx, id)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if l.Result != OK {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		r.record(l)
		chains = append(chains, Chain{Watcher: id, StartRV: l.RV, Initial: l.Items})
		c := &chains[len(chains)-1]
		from := l.RV
		for ctx.Err() == nil {
			seg, err := r.watch(ctx, id, from, nil)
			if err != nil {
				if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
					r.cfg.Logf("watcher %d: watch from %d: %v; listing again", id, from, err)
					c.Segments = append(c.Segments, Segment{From: from, Start: r.Now(), End: r.Now(), Ended: "gone"})
					break
				}
				sleep(ctx, 200*time.Millisecond)
				continue
			}
			c.Segments = append(c.Segments, seg)
			for _, e := range seg.Events {
				if e.RV > from {
					from = e.RV
				}
			}
			if seg.Ended == "gone" {
				r.cfg.Logf("watcher %d: the watch from %d ended with 410; listing again", id, seg.From)
				break
			}
			if seg.Ended != "stopped" {
				r.cfg.Logf("watcher %d: the watch from %d ended (%s) at %d; resuming", id, seg.From, seg.Ended, from)
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// watch runs one watch of watcher id from a resourceVersion until it ends,
// ctx ends, or done says the segment has what it needs. An error means the
// watch could not start.
func (r *Recorder) watch(ctx context.Context, id int, from uint64, done func(Event) bool) (Segment, error) {
	seg := Segment{From: from, Start: r.Now()}
	opts := metav1.ListOptions{ResourceVersion: strconv.FormatUint(from, 10), AllowWatchBookmarks: true}
	if r.cfg.WatchTimeout > 0 && done == nil {
		secs := int64(r.cfg.WatchTimeout / time.Second)
		opts.TimeoutSeconds = &secs
	}
	w, err := r.server(id).res.Watch(ctx, opts)
	if err != nil {
		return seg, err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			seg.End, seg.Ended = r.Now(), "stopped"
			return seg, nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				seg.End, seg.Ended = r.Now(), "closed"
				return seg, nil
			}
			at := r.Now()
			if ev.Type == watch.Error {
				err := apierrors.FromObject(ev.Object)
				seg.End = at
				if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
					seg.Ended = "gone"
				} else {
					seg.Ended = "error: " + err.Error()
				}
				return seg, nil
			}
			obj, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				seg.End, seg.Ended = at, fmt.Sprintf("error: an event of %T", ev.Object)
				return seg, nil
			}
			e := Event{Type: EventType(ev.Type), At: at}
			rv, err := rvOf(obj)
			if err != nil {
				seg.End, seg.Ended = at, "error: "+err.Error()
				return seg, nil
			}
			e.RV = rv
			if ev.Type != watch.Bookmark {
				e.Name, e.Value = obj.GetName(), obj.GetAnnotations()[ValueAnnotation]
			}
			seg.Events = append(seg.Events, e)
			if done != nil && done(e) {
				seg.End, seg.Ended = r.Now(), "stopped"
				return seg, nil
			}
		}
	}
}

// resume watches from from, on watcher id's server, until it delivered an
// event or bookmark at until or later, or 10 seconds passed.
func (r *Recorder) resume(ctx context.Context, id int, from, until uint64) Resume {
	res := Resume{From: from, Until: until}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	seg, err := r.watch(ctx, id, from, func(e Event) bool { return e.RV >= until })
	switch {
	case err != nil && (apierrors.IsGone(err) || apierrors.IsResourceExpired(err)):
		res.Gone = true
	case err != nil:
		res.Err = err.Error()
	case seg.Ended == "gone":
		res.Gone = true
	}
	res.Events = seg.Events
	return res
}
