package lean

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	goruntime "runtime"
	"testing"
	"weak"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/endpoints/request"
)

// countingCodec counts the decodings it makes.
type countingCodec struct {
	runtime.Codec
	decodes int
}

func (c *countingCodec) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	c.decodes++
	return c.Codec.Decode(data, defaults, into)
}

func report(name, size string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "reports.example.com/v1", "kind": "Report",
		"metadata": map[string]any{"name": name, "namespace": "team-a"},
		"spec":     map[string]any{"size": size},
	}}
}

// memoStore does what the etcd3 store does with its codec on a write and
// on the watch event that follows.
type memoStore struct {
	t      *testing.T
	s      *Storage
	inner  *countingCodec
	codec  runtime.Codec
	stored []byte
}

func newMemoStore(t *testing.T) *memoStore {
	s := newTestStorage()
	s.config.Memo = NewWriteMemo()
	inner := &countingCodec{Codec: unstructured.UnstructuredJSONScheme}
	return &memoStore{t: t, s: s, inner: inner, codec: s.config.Memo.Codec(inner)}
}

// write encodes obj as a store's write does, and returns the write and the
// object the store would return, decoded from what it stored at
// resourceVersion.
func (m *memoStore) write(obj runtime.Object, resourceVersion string) (*memoWrite, runtime.Object) {
	m.t.Helper()
	w, out := m.writeFor("", obj)
	out.SetResourceVersion(resourceVersion)
	return w, out
}

// watch decodes stored as the store's watch does, at resourceVersion, and
// compacts the event as the cache's store does.
func (m *memoStore) watch(stored []byte, resourceVersion string) *Object {
	m.t.Helper()
	obj, err := runtime.Decode(m.codec, stored)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := m.s.setResourceVersion(obj, resourceVersion); err != nil {
		m.t.Fatal(err)
	}
	ev, _ := (&compacting{s: m.s}).compactEvent(watch.Event{Type: watch.Added, Object: obj})
	o, ok := ev.Object.(*Object)
	if !ok {
		m.t.Fatalf("the watch event holds a %T", ev.Object)
	}
	return o
}

// decoded is what the cache would hold for stored at resourceVersion
// without the memo.
func (m *memoStore) decoded(stored []byte, resourceVersion string) *Object {
	m.t.Helper()
	obj, err := runtime.Decode(unstructured.UnstructuredJSONScheme, stored)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := m.s.setResourceVersion(obj, resourceVersion); err != nil {
		m.t.Fatal(err)
	}
	o, err := m.s.compact(obj)
	if err != nil {
		m.t.Fatal(err)
	}
	return o
}

func sameObject(t *testing.T, s *Storage, got, want *Object) {
	t.Helper()
	gotJSON, wantJSON := encodedJSON(t, s, got), encodedJSON(t, s, want)
	if got.key != want.key || got.ResourceVersion != want.ResourceVersion || !bytes.Equal(gotJSON, wantJSON) ||
		fmt.Sprint(got.GetLabels(), got.fields) != fmt.Sprint(want.GetLabels(), want.fields) {
		t.Errorf("the cache got %s %s %s, want %s %s %s", got.key, got.ResourceVersion, gotJSON, want.key, want.ResourceVersion, wantJSON)
	}
}

func encodedJSON(t *testing.T, s *Storage, o *Object) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := (objectCodec{packer: &s.packer}).Encode(o, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The watch event of a write is the object the write decoded, not a
// second decoding; and it is what the cache would hold without the memo.
func TestWatchTakesTheWritesDecoding(t *testing.T) {
	m := newMemoStore(t)
	w, out := m.write(report("r1", "3"), "7")
	m.s.config.Memo.end(w, m.s, out, nil)
	before := m.inner.decodes

	got := m.watch(m.stored, "7")
	if m.inner.decodes != before {
		t.Errorf("the watch decoded the write's bytes again (%d decodings)", m.inner.decodes-before)
	}
	sameObject(t, m.s, got, m.decoded(m.stored, "7"))

	// A second watch of the same bytes (another watcher of the store) decodes them.
	sameObject(t, m.s, m.watch(m.stored, "7"), m.decoded(m.stored, "7"))
	if m.inner.decodes != before+1 {
		t.Errorf("a second watch of the bytes made %d decodings, want 1", m.inner.decodes-before)
	}
}

// A watch that comes to a write's bytes before the write has finished
// does not wait: it decodes them, and the write then leaves nothing.
func TestWatchBeforeTheWriteFinishes(t *testing.T) {
	m := newMemoStore(t)
	w, out := m.write(report("r1", "3"), "7")
	before := m.inner.decodes
	sameObject(t, m.s, m.watch(m.stored, "7"), m.decoded(m.stored, "7"))
	if m.inner.decodes != before+1 {
		t.Errorf("the watch made %d decodings of a write that had not finished, want 1", m.inner.decodes-before)
	}
	m.s.config.Memo.end(w, m.s, out, nil)
	if w.object != nil {
		t.Error("the write compacted its object for a watch that had decoded it already")
	}
	if n := len(m.s.config.Memo.encoded) + len(m.s.config.Memo.writing); n != 0 {
		t.Errorf("the memo keeps %d entries after the write", n)
	}
}

// An event at another revision than the write's (another writer stored the
// same bytes) is decoded, and gets its own revision.
func TestWatchOfAnotherRevisionDecodes(t *testing.T) {
	m := newMemoStore(t)
	w, out := m.write(report("r1", "3"), "7")
	m.s.config.Memo.end(w, m.s, out, nil)
	before := m.inner.decodes
	sameObject(t, m.s, m.watch(m.stored, "6"), m.decoded(m.stored, "6"))
	if m.inner.decodes != before+1 {
		t.Errorf("the event at another revision made %d decodings, want 1", m.inner.decodes-before)
	}
}

// A failed write leaves nothing to the watch.
func TestFailedWriteLeavesNothing(t *testing.T) {
	m := newMemoStore(t)
	w, out := m.write(report("r1", "3"), "7")
	m.s.config.Memo.end(w, m.s, out, errors.New("conflict"))
	if o, _ := m.s.config.Memo.take(m.stored); o != nil {
		t.Fatalf("the watch got the object of a failed write: %s", o.key)
	}
	if n := len(m.s.config.Memo.encoded) + len(m.s.config.Memo.writing); n != 0 {
		t.Errorf("the memo keeps %d entries after a failed write", n)
	}
}

// Bytes that no write of this process encoded are decoded, as are reads.
func TestMemoLeavesOtherDecodingsAlone(t *testing.T) {
	m := newMemoStore(t)
	var buf bytes.Buffer
	if err := unstructured.UnstructuredJSONScheme.Encode(report("r2", "4"), &buf); err != nil {
		t.Fatal(err)
	}
	sameObject(t, m.s, m.watch(buf.Bytes(), "9"), m.decoded(buf.Bytes(), "9"))
	if m.inner.decodes != 1 {
		t.Errorf("%d decodings, want 1", m.inner.decodes)
	}
	if len(m.s.config.Memo.encoded) != 0 {
		t.Error("an encoding outside a write was noted")
	}
}

// Writes whose event never comes (an update that changes nothing) are
// forgotten beyond memoSize.
func TestMemoIsBounded(t *testing.T) {
	m := newMemoStore(t)
	for i := range memoSize + 100 {
		w, out := m.write(report(fmt.Sprintf("r%d", i), "3"), "7")
		m.s.config.Memo.end(w, m.s, out, nil)
	}
	if n := len(m.s.config.Memo.encoded); n != memoSize {
		t.Errorf("the memo keeps %d writes, want %d", n, memoSize)
	}
	if n := len(m.s.config.Memo.order); n > 4*memoSize {
		t.Errorf("the memo's order holds %d keys", n)
	}
	// The latest write is still there, the first one is not.
	sameObject(t, m.s, m.watch(m.stored, "7"), m.decoded(m.stored, "7"))
}

// A write the memo keeps for the watch does not keep the objects it
// encoded: the memo holds a thousand writes of every type, and a decoded
// custom resource is several times its compact form.
func TestMemoLetsTheWritesObjectsGo(t *testing.T) {
	m := newMemoStore(t)
	obj := report("r1", "3")
	gone := weak.Make(obj)
	w, out := m.write(obj, "7")
	m.s.config.Memo.end(w, m.s, out, nil)
	obj = nil
	for range 10 {
		goruntime.GC()
		if gone.Value() == nil {
			break
		}
	}
	if gone.Value() != nil {
		t.Error("the memo keeps the object a finished write encoded")
	}
	if o, _ := m.s.config.Memo.take(m.stored); w.object == nil || o == nil {
		t.Error("the memo did not keep the write's compact object for the watch")
	}
	_ = obj
}

// newDeferringMemoStore is newMemoStore with a cache that keeps what the
// store's watch sends as stored until read, placed from its metadata, and
// no background decoding.
func newDeferringMemoStore(t *testing.T) *memoStore {
	m := newMemoStore(t)
	m.s.storeCodec = m.inner
	m.s.attrsFromMetadata = true
	m.s.config.Memo.deferring.Store(true)
	return m
}

// watchEvent decodes stored as the store's watch does, at resourceVersion:
// what compactEvent then takes.
func (m *memoStore) watchEvent(stored []byte, resourceVersion string) runtime.Object {
	m.t.Helper()
	obj, err := runtime.Decode(m.codec, stored)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := m.s.setResourceVersion(obj, resourceVersion); err != nil {
		m.t.Fatal(err)
	}
	return obj
}

// compactEvent compacts an event of the store's watch as the cache's store
// does.
func (m *memoStore) compactEvent(obj runtime.Object) *Object {
	m.t.Helper()
	ev, _ := (&compacting{s: m.s}).compactEvent(watch.Event{Type: watch.Added, Object: obj})
	o, ok := ev.Object.(*Object)
	if !ok {
		m.t.Fatalf("the watch event holds a %T", ev.Object)
	}
	return o
}

// readBack decodes o as a read of the cache does, and returns it compacted
// again, to compare with what the cache would hold.
func (m *memoStore) readBack(o *Object) *Object {
	m.t.Helper()
	obj := &unstructured.Unstructured{}
	if err := m.s.decode(o, obj); err != nil {
		m.t.Fatal(err)
	}
	c, err := m.s.compact(obj)
	if err != nil {
		m.t.Fatal(err)
	}
	return c
}

// When the cache defers decoding, a watch that comes to a write's bytes
// before the write has finished keeps them as stored, and the write, once
// done, gives that object the compact form of what it decoded: no read
// decodes the bytes again, and a read gets what it would have decoded.
func TestWriteFillsTheDeferredObjectOfAnEarlierWatch(t *testing.T) {
	for _, handOffAfterEnd := range []bool{false, true} {
		t.Run(fmt.Sprintf("handOffAfterEnd=%v", handOffAfterEnd), func(t *testing.T) {
			m := newDeferringMemoStore(t)
			w, out := m.write(report("r1", "3"), "7")
			decodes := m.inner.decodes
			ev := m.watchEvent(m.stored, "7")
			var o *Object
			if handOffAfterEnd {
				// The watch took the write before it finished, and made
				// its object after.
				m.s.config.Memo.end(w, m.s, out, nil)
				o = m.compactEvent(ev)
			} else {
				o = m.compactEvent(ev)
				if o.stored == nil || o.stored.form.Load().compact {
					t.Fatal("the watch did not keep the bytes of an unfinished write as stored")
				}
				m.s.config.Memo.end(w, m.s, out, nil)
			}
			if o.stored == nil || !o.stored.form.Load().compact {
				t.Fatal("the write left the watch's object as stored")
			}
			sameObject(t, m.s, m.readBack(o), m.decoded(m.stored, "7"))
			if m.inner.decodes != decodes {
				t.Errorf("the watch and the read decoded the write's bytes %d more times, want none", m.inner.decodes-decodes)
			}
			if n := len(m.s.config.Memo.encoded) + len(m.s.config.Memo.writing); n != 0 {
				t.Errorf("the memo keeps %d entries after the write", n)
			}
		})
	}
}

// A write that failed, or whose event is at another revision, leaves the
// watch's object as stored, and a read decodes it.
func TestWriteLeavesOtherDeferredObjects(t *testing.T) {
	for name, tc := range map[string]struct {
		err error
		rv  string
	}{
		"failed":         {err: errors.New("conflict"), rv: "7"},
		"other revision": {rv: "8"},
	} {
		t.Run(name, func(t *testing.T) {
			m := newDeferringMemoStore(t)
			w, out := m.write(report("r1", "3"), "7")
			o := m.compactEvent(m.watchEvent(m.stored, tc.rv))
			m.s.config.Memo.end(w, m.s, out, tc.err)
			if o.stored == nil || o.stored.form.Load().compact {
				t.Fatal("the write filled an object that is not its own")
			}
			decodes := m.inner.decodes
			sameObject(t, m.s, m.readBack(o), m.decoded(m.stored, tc.rv))
			if m.inner.decodes != decodes+1 {
				t.Errorf("the read made %d decodings, want 1", m.inner.decodes-decodes)
			}
		})
	}
}

// writeFor is write for a request with verb (none: a write whose object
// the memo is not told of): the write returns the object the store
// decodes what it stored into, as the store's Create does.
func (m *memoStore) writeFor(verb string, obj runtime.Object) (*memoWrite, *unstructured.Unstructured) {
	m.t.Helper()
	w := m.s.config.Memo.begin()
	m.s.config.Memo.note(w, obj)
	out := &unstructured.Unstructured{}
	if verb != "" {
		ctx := request.WithRequestInfo(context.Background(), &request.RequestInfo{IsResourceRequest: true, Verb: verb})
		m.s.config.Memo.returns(ctx, w, out)
	}
	var buf bytes.Buffer
	if err := m.codec.Encode(obj, &buf); err != nil {
		m.t.Fatal(err)
	}
	m.stored = buf.Bytes()
	if _, _, err := m.codec.Decode(m.stored, nil, out); err != nil {
		m.t.Fatal(err)
	}
	return w, out
}

// A create or an update of an object of the memo's reused apiVersion
// returns a copy of the object it wrote, without decoding what it stored;
// any other write decodes.
func TestCreatesAndUpdatesReuseTheirObject(t *testing.T) {
	m := newMemoStore(t)
	var reused prometheus.Counter = prometheus.NewCounter(prometheus.CounterOpts{Name: "reused"})
	m.s.config.Memo.ReuseWritten("reports.example.com/v1", reused)

	for _, verb := range []string{"create", "update"} {
		written := report("r-"+verb, "3")
		before := m.inner.decodes
		w, out := m.writeFor(verb, written)
		if m.inner.decodes != before {
			t.Errorf("%s: the write decoded what it stored (%d decodings), want its object", verb, m.inner.decodes-before)
		}
		if !equality.Semantic.DeepEqual(out.Object, written.Object) {
			t.Errorf("%s: the write returned %v, want %v", verb, out.Object, written.Object)
		}
		// A copy: what the caller does to the answer leaves the written
		// object, which the memo may still hold, alone.
		out.Object["spec"].(map[string]any)["size"] = "4"
		if written.Object["spec"].(map[string]any)["size"] != "3" {
			t.Errorf("%s: the answer shares its maps with the written object", verb)
		}
		m.s.config.Memo.end(w, m.s, out, nil)
	}
	if got := testutil.ToFloat64(reused); got != 2 {
		t.Errorf("the memo counted %v reused writes, want 2", got)
	}

	other := report("r-other", "3")
	other.SetAPIVersion("reports.example.com/v2")
	for name, write := range map[string]func() (*memoWrite, *unstructured.Unstructured){
		"a patch":                      func() (*memoWrite, *unstructured.Unstructured) { return m.writeFor("patch", report("r-patch", "3")) },
		"a delete":                     func() (*memoWrite, *unstructured.Unstructured) { return m.writeFor("delete", report("r-delete", "3")) },
		"an object of another version": func() (*memoWrite, *unstructured.Unstructured) { return m.writeFor("create", other) },
		"a write without a request": func() (*memoWrite, *unstructured.Unstructured) {
			w, out := m.write(report("r-none", "3"), "7")
			return w, out.(*unstructured.Unstructured)
		},
	} {
		before := m.inner.decodes
		w, out := write()
		if m.inner.decodes != before+1 {
			t.Errorf("%s: %d decodings of what it stored, want 1", name, m.inner.decodes-before)
		}
		if out.GetName() == "" {
			t.Errorf("%s: the write returned %v", name, out.Object)
		}
		m.s.config.Memo.end(w, m.s, out, nil)
	}
	if got := testutil.ToFloat64(reused); got != 2 {
		t.Errorf("the memo counted %v reused writes, want still 2", got)
	}
	if n := len(m.s.config.Memo.returning); n != 0 {
		t.Errorf("the memo still holds %d finished writes' answers", n)
	}
}

// A decoding of other bytes into the write's answer (an update that
// found the object unchanged decodes what the store held) decodes them.
func TestReuseNeedsTheWrittenBytes(t *testing.T) {
	m := newMemoStore(t)
	m.s.config.Memo.ReuseWritten("reports.example.com/v1", prometheus.NewCounter(prometheus.CounterOpts{Name: "reused"}))
	ctx := request.WithRequestInfo(context.Background(), &request.RequestInfo{IsResourceRequest: true, Verb: "update"})
	written := report("r1", "3")
	w := m.s.config.Memo.begin()
	m.s.config.Memo.note(w, written)
	out := &unstructured.Unstructured{}
	m.s.config.Memo.returns(ctx, w, out)
	if err := m.codec.Encode(written, io.Discard); err != nil {
		t.Fatal(err)
	}
	held, err := runtime.Encode(unstructured.UnstructuredJSONScheme, report("r1", "5"))
	if err != nil {
		t.Fatal(err)
	}
	before := m.inner.decodes
	if _, _, err := m.codec.Decode(held, nil, out); err != nil {
		t.Fatal(err)
	}
	if m.inner.decodes != before+1 || out.Object["spec"].(map[string]any)["size"] != "5" {
		t.Errorf("%d decodings, answer %v: want the bytes held decoded", m.inner.decodes-before, out.Object)
	}
	m.s.config.Memo.end(w, m.s, out, nil)
}
