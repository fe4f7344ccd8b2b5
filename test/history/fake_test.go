package history

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeStore is an in-memory server of one cluster-scoped type,
// example.com/v1 things, speaking the part of the REST API the recorder
// uses: create, update and delete with resourceVersion preconditions, get,
// list and watch (newline-delimited JSON events). Its faults break it on
// purpose, to show that the checker notices.
type fakeStore struct {
	// dropEvery > 0: every dropEvery-th write that would succeed is
	// acknowledged with a new resourceVersion but not applied.
	dropEvery int
	// staleReads: gets and lists answer from a copy of the state refreshed
	// only every eighth write.
	staleReads bool
	// skipEvents > 0: watches leave out every skipEvents-th event.
	skipEvents int
	// bookmarkBack: the bookmark that ends a watch with timeoutSeconds
	// is below the last event it sent.
	bookmarkBack bool
	// unavailableEvery > 0: every unavailableEvery-th write that would
	// succeed is answered 503 "service unavailable" as the kube-apiserver's
	// aggregator answers a request it did not send on, and not applied;
	// with appliesUnavailable, it is applied all the same.
	unavailableEvery   int
	appliesUnavailable bool

	mu      sync.Mutex
	rev     uint64
	objects map[string]Object
	lagged  map[string]Object
	laggedR uint64
	writes  int
	log     []fakeEvent
	changed chan struct{} // closed and replaced at each event
}

type fakeEvent struct {
	typ  EventType
	name string
	obj  Object
}

func newFakeStore() *fakeStore {
	return &fakeStore{rev: 1, objects: map[string]Object{}, lagged: map[string]Object{}, changed: make(chan struct{})}
}

const fakePath = "/apis/example.com/v1/things"

func (f *fakeStore) serve(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv
}

func (f *fakeStore) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	name, item := strings.CutPrefix(req.URL.Path, fakePath+"/")
	if !item && req.URL.Path != fakePath {
		status(w, http.StatusNotFound, "NotFound", "no such path")
		return
	}
	switch {
	case !item && req.Method == http.MethodGet && req.URL.Query().Get("watch") == "true":
		f.watch(w, req)
	case !item && req.Method == http.MethodGet:
		f.list(w)
	case !item && req.Method == http.MethodPost:
		f.write(w, req, Create, "")
	case item && req.Method == http.MethodPut:
		f.write(w, req, Update, name)
	case item && req.Method == http.MethodDelete:
		f.write(w, req, Delete, name)
	case item && req.Method == http.MethodGet:
		f.get(w, name)
	default:
		status(w, http.StatusMethodNotAllowed, "MethodNotAllowed", req.Method)
	}
}

func status(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "code": code, "message": msg,
	})
}

func render(name string, o Object) map[string]any {
	return map[string]any{
		"apiVersion": "example.com/v1", "kind": "Thing",
		"metadata": map[string]any{
			"name": name, "resourceVersion": strconv.FormatUint(o.RV, 10),
			"annotations": map[string]any{ValueAnnotation: o.Value},
		},
	}
}

func reply(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

type fakeBody struct {
	Metadata struct {
		Name            string            `json:"name"`
		ResourceVersion string            `json:"resourceVersion"`
		Annotations     map[string]string `json:"annotations"`
	} `json:"metadata"`
	Preconditions *struct {
		ResourceVersion *string `json:"resourceVersion"`
	} `json:"preconditions"`
}

func (f *fakeStore) write(w http.ResponseWriter, req *http.Request, kind Kind, name string) {
	var body fakeBody
	if data, _ := io.ReadAll(req.Body); len(data) > 0 {
		if err := json.Unmarshal(data, &body); err != nil {
			status(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
	}
	var pre string
	switch kind {
	case Create:
		name = body.Metadata.Name
	case Update:
		pre = body.Metadata.ResourceVersion
	case Delete:
		if body.Preconditions != nil && body.Preconditions.ResourceVersion != nil {
			pre = *body.Preconditions.ResourceVersion
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, exists := f.objects[name]
	switch {
	case kind == Create && exists:
		status(w, http.StatusConflict, "AlreadyExists", name+" already exists")
		return
	case kind != Create && !exists:
		status(w, http.StatusNotFound, "NotFound", name+" not found")
		return
	case pre != "" && pre != strconv.FormatUint(cur.RV, 10):
		status(w, http.StatusConflict, "Conflict", "the object has been modified")
		return
	}
	f.writes++
	unavailable := f.unavailableEvery > 0 && f.writes%f.unavailableEvery == 0
	if unavailable && !f.appliesUnavailable {
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	}
	f.rev++
	obj := Object{Value: body.Metadata.Annotations[ValueAnnotation], RV: f.rev}
	if kind == Delete {
		obj.Value = cur.Value
	}
	code := http.StatusOK
	if kind == Create {
		code = http.StatusCreated
	}
	// A delete answers with a Status and no resourceVersion, as the
	// kube-apiserver does for custom resources.
	answer := any(render(name, obj))
	if kind == Delete {
		answer = map[string]any{"apiVersion": "v1", "kind": "Status", "status": "Success", "details": map[string]any{"name": name}}
	}
	if f.dropEvery > 0 && f.writes%f.dropEvery == 0 {
		reply(w, code, answer) // acknowledged, never applied
		return
	}
	typ := map[Kind]EventType{Create: Added, Update: Modified, Delete: Deleted}[kind]
	if kind == Delete {
		delete(f.objects, name)
	} else {
		f.objects[name] = obj
	}
	f.log = append(f.log, fakeEvent{typ: typ, name: name, obj: obj})
	close(f.changed)
	f.changed = make(chan struct{})
	if f.writes%8 == 0 {
		f.lagged = map[string]Object{}
		for k, v := range f.objects {
			f.lagged[k] = v
		}
		f.laggedR = f.rev
	}
	if unavailable {
		http.Error(w, "service unavailable", http.StatusServiceUnavailable) // applied all the same
		return
	}
	reply(w, code, answer)
}

// view is the state reads see.
func (f *fakeStore) view() (map[string]Object, uint64) {
	if f.staleReads {
		return f.lagged, max(f.laggedR, 1)
	}
	return f.objects, f.rev
}

func (f *fakeStore) get(w http.ResponseWriter, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	objects, _ := f.view()
	obj, ok := objects[name]
	if !ok {
		status(w, http.StatusNotFound, "NotFound", name+" not found")
		return
	}
	reply(w, http.StatusOK, render(name, obj))
}

func (f *fakeStore) list(w http.ResponseWriter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	objects, rev := f.view()
	items := []any{}
	for name, obj := range objects {
		items = append(items, render(name, obj))
	}
	reply(w, http.StatusOK, map[string]any{
		"apiVersion": "example.com/v1", "kind": "ThingList",
		"metadata": map[string]any{"resourceVersion": strconv.FormatUint(rev, 10)}, "items": items,
	})
}

func (f *fakeStore) watch(w http.ResponseWriter, req *http.Request) {
	from, err := strconv.ParseUint(req.URL.Query().Get("resourceVersion"), 10, 64)
	if err != nil {
		status(w, http.StatusBadRequest, "BadRequest", "resourceVersion: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	flusher := w.(http.Flusher)
	flusher.Flush()
	enc := json.NewEncoder(w)
	var timeout <-chan time.Time
	if secs, err := strconv.Atoi(req.URL.Query().Get("timeoutSeconds")); err == nil && secs > 0 {
		timeout = time.After(time.Duration(secs) * time.Second)
	}
	sent := 0    // events of the log already looked at
	upto := from // the resourceVersion of the last of them
	last := from // the resourceVersion of the last event sent
	for {
		f.mu.Lock()
		pending := append([]fakeEvent(nil), f.log[sent:]...)
		sent = len(f.log)
		changed := f.changed
		f.mu.Unlock()
		for _, e := range pending {
			upto = max(upto, e.obj.RV)
			if e.obj.RV <= from {
				continue
			}
			if f.skipEvents > 0 && e.obj.RV%uint64(f.skipEvents) == 0 {
				continue
			}
			if err := enc.Encode(map[string]any{"type": string(e.typ), "object": render(e.name, e.obj)}); err != nil {
				return
			}
			last = e.obj.RV
		}
		flusher.Flush()
		select {
		case <-req.Context().Done():
			return
		case <-timeout:
			// The bookmark at the end of a watch: everything up to the
			// last event of the log this watch looked at was sent.
			rv := upto
			if f.bookmarkBack && last > from {
				rv = last - 1
			}
			bookmark := map[string]any{"apiVersion": "example.com/v1", "kind": "Thing",
				"metadata": map[string]any{"resourceVersion": strconv.FormatUint(rv, 10)}}
			_ = enc.Encode(map[string]any{"type": string(Bookmark), "object": bookmark})
			flusher.Flush()
			return
		case <-changed:
		case <-time.After(10 * time.Second):
			return
		}
	}
}

// String describes the store's faults, for test names.
func (f *fakeStore) String() string {
	switch {
	case f.dropEvery > 0:
		return fmt.Sprintf("drops every %dth acknowledged write", f.dropEvery)
	case f.staleReads:
		return "serves stale reads"
	case f.bookmarkBack:
		return "sends bookmarks below the events it sent"
	case f.skipEvents > 0:
		return fmt.Sprintf("skips every watch event whose resourceVersion divides by %d", f.skipEvents)
	case f.unavailableEvery > 0 && f.appliesUnavailable:
		return fmt.Sprintf("applies every %dth write it answers 503 service unavailable", f.unavailableEvery)
	case f.unavailableEvery > 0:
		return fmt.Sprintf("answers every %dth write 503 service unavailable", f.unavailableEvery)
	}
	return "correct"
}
