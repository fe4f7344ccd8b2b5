package lean

import (
	"bytes"
	"context"
	"hash/maphash"
	"io"
	"sync"
	"sync/atomic"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// A write decodes the same bytes twice: the store decodes what it wrote to
// return the stored object, and the store's watch decodes it again for the
// cache, each time through the type's whole codec (for a custom resource:
// JSON, schema coercion twice, a deep copy). A WriteMemo lets the cache
// take the write's decoding instead of its own:
//
//   - the store's codec (WriteMemo.Codec) notes the bytes it encodes for a
//     write of Storage;
//   - once the write is done, Storage compacts the object the store
//     decoded from those bytes, and leaves it under them;
//   - when the store's watch decodes the same bytes and the write has
//     left its object, the codec hands it that compact object instead of
//     decoding them again.
//
// The watch never waits for a write: it decodes events in order, one at a
// time, and waiting would hold back every event after it. When it comes to
// a write that has not finished:
//
//   - if the cache defers decoding (deferred.go), it keeps the bytes as
//     stored, as it does for any event, and hands that deferred object to
//     the write: once done, the write gives it the compact encoding of the
//     object it decoded, as the object's first read would have, so that
//     neither a read nor the background decoding decodes the bytes again;
//   - otherwise it decodes the bytes itself and the write leaves nothing.
//
// The codec belongs to one store, and decoding is a function of the bytes,
// so the watch gets what it would have decoded itself. The event's
// revision must also be the write's, else the event is decoded as usual.
type WriteMemo struct {
	seed maphash.Seed
	// storeCodec is the codec the memo is in front of; deferring says
	// that the store's watch defers decoding its objects to the lean
	// cache (deferred.go).
	storeCodec runtime.Codec
	deferring  atomic.Bool
	// reuse, when set, is the apiVersion whose objects the store's codec
	// decodes back from their encoding unchanged (see ReuseWritten), and
	// reused counts the writes that returned their object instead.
	reuse  string
	reused metrics.CounterMetric

	mu sync.Mutex
	// writing maps the objects that writes are about to encode to their
	// write, and returning the objects writes decode what they wrote into
	// (those whose object may be reused) to their write.
	writing   map[runtime.Object]*memoWrite
	returning map[runtime.Object]*memoWrite
	// encoded maps the hash of the bytes a write encoded to the write,
	// until a watch takes it or it is among the oldest beyond memoSize.
	encoded map[uint64]*memoWrite
	// order is encoded's keys in the order they came, for eviction.
	order []uint64
}

// memoSize bounds how many writes the memo keeps for the watch: those
// whose event the watch has not taken yet, and those that send none (a
// write that changes nothing, a failed one).
const memoSize = 1024

// memoWrite is one write through the memo.
type memoWrite struct {
	// objects are the objects the write may encode (an update's tries).
	objects []runtime.Object
	// encoded is what the write encoded last, sum its hash, and last the
	// object it encoded then.
	encoded []byte
	sum     uint64
	last    runtime.Object
	// into is the object the write decodes what it wrote into, when it
	// may reuse last instead.
	into runtime.Object
	// object is the write's compact form once it has finished; taken says
	// that the watch came to the write's bytes first.
	object *Object
	taken  bool
	// done says that the write has finished. result is then its compact
	// form, kept for a watch that took the write before it finished and
	// has not handed it its deferred object yet; pending holds that
	// deferred object, when the watch handed it before the write finished.
	done    bool
	result  *Object
	pending []*Object
}

// NewWriteMemo returns an empty memo.
func NewWriteMemo() *WriteMemo {
	return &WriteMemo{
		seed:      maphash.MakeSeed(),
		writing:   map[runtime.Object]*memoWrite{},
		returning: map[runtime.Object]*memoWrite{},
		encoded:   map[uint64]*memoWrite{},
	}
}

// Codec returns codec with the memo in front of it: the codec the store
// under the lean cache must be built with for the memo to work.
func (m *WriteMemo) Codec(codec runtime.Codec) runtime.Codec {
	m.storeCodec = codec
	return &memoCodec{Codec: codec, memo: m}
}

// ReuseWritten makes the creates and updates of objects of apiVersion
// return the object they wrote, with the write's resourceVersion, instead
// of decoding what they stored, and counts them in reused. The caller
// vouches that the store's codec decodes such an object back unchanged
// from its encoding: it encodes it as it is (it is in the stored version),
// and the decoding's coercion (metadata, pruning, defaults) has nothing to
// change in an object that a create or update request decoded with the
// same schema, which sets no defaults. Other writes (patches, deletes,
// annex's own) decode as before.
func (m *WriteMemo) ReuseWritten(apiVersion string, reused metrics.CounterMetric) {
	m.reuse, m.reused = apiVersion, reused
}

var (
	writtenReused = metrics.NewCounterVec(&metrics.CounterOpts{
		Name: "annex_lean_written_objects_reused_total",
		Help: "Creates and updates of a hosted type kept lean that returned the object they wrote instead of decoding it again " +
			"from what they stored (annex's --lean-reuse-written-objects).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	registerWrittenReused sync.Once
)

// reusedWrites is the counter of the writes of gr that reuse their object.
func reusedWrites(gr schema.GroupResource) metrics.CounterMetric {
	registerWrittenReused.Do(func() { legacyregistry.MustRegister(writtenReused) })
	return writtenReused.WithLabelValues(gr.Group, gr.Resource)
}

// begin starts a write.
func (m *WriteMemo) begin() *memoWrite {
	if m == nil {
		return nil
	}
	return &memoWrite{}
}

// note says that w is about to encode obj.
func (m *WriteMemo) note(w *memoWrite, obj runtime.Object) {
	if w == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writing[obj] = w
	w.objects = append(w.objects, obj)
}

// returns says that w decodes what it wrote into into, the object the
// write returns, for the request in ctx: when the request is a create or
// an update and the memo reuses written objects, the decoding copies the
// object w wrote instead (reusedInto).
func (m *WriteMemo) returns(ctx context.Context, w *memoWrite, into runtime.Object) {
	if w == nil || m.reuse == "" || into == nil {
		return
	}
	info, ok := request.RequestInfoFrom(ctx)
	if !ok || !info.IsResourceRequest || info.Verb != "create" && info.Verb != "update" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w.into = into
	m.returning[into] = w
}

// reusedInto fills into with a copy of the object its write encoded as
// data, and says so, when the write may reuse it.
func (m *WriteMemo) reusedInto(into runtime.Object, data []byte) bool {
	u, ok := into.(*unstructured.Unstructured)
	if !ok {
		return false
	}
	m.mu.Lock()
	w := m.returning[into]
	m.mu.Unlock()
	// Only the write itself decodes into into, on its own goroutine: its
	// object does not change under the copy.
	if w == nil || !bytes.Equal(w.encoded, data) {
		return false
	}
	written, ok := w.last.(*unstructured.Unstructured)
	if !ok || written.GetAPIVersion() != m.reuse {
		return false
	}
	u.Object = runtime.DeepCopyJSON(written.Object)
	m.reused.Inc()
	return true
}

// encodedBy says that encoded is obj's encoding, and returns the write
// that encodes obj, if any.
func (m *WriteMemo) encodedBy(obj runtime.Object, encoded []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.writing[obj]
	if w == nil {
		return
	}
	if w.encoded != nil && m.encoded[w.sum] == w {
		// An earlier try of the same update.
		delete(m.encoded, w.sum)
	}
	w.encoded, w.sum, w.last = encoded, maphash.Bytes(m.seed, encoded), obj
	m.encoded[w.sum] = w
	m.order = append(m.order, w.sum)
	for len(m.encoded) > memoSize && len(m.order) > 0 {
		delete(m.encoded, m.order[0])
		m.order = m.order[1:]
	}
	if len(m.order) > 4*memoSize {
		// Keys the watch took long ago; keep the live ones, in order.
		live := make([]uint64, 0, len(m.encoded))
		for _, sum := range m.order {
			if _, ok := m.encoded[sum]; ok {
				live = append(live, sum)
			}
		}
		m.order = live
	}
}

// end finishes w: out is the object the store returned, decoded from
// what w encoded last, when err is nil.
func (m *WriteMemo) end(w *memoWrite, s *Storage, out runtime.Object, err error) {
	if w == nil {
		return
	}
	m.mu.Lock()
	for _, obj := range w.objects {
		if m.writing[obj] == w {
			delete(m.writing, obj)
		}
	}
	if w.into != nil && m.returning[w.into] == w {
		delete(m.returning, w.into)
	}
	// The objects are the write's decoded tries, which the memo no longer
	// needs: let them go while it keeps the write for the watch.
	w.objects, w.last, w.into = nil, nil, nil
	// A watch that took the write before it finished has decoded its bytes
	// itself, unless the cache defers decoding: then it keeps them as
	// stored for the write to fill.
	compact := err == nil && w.encoded != nil && (!w.taken || m.deferring.Load())
	if !compact {
		if w.encoded != nil && m.encoded[w.sum] == w {
			delete(m.encoded, w.sum)
		}
		w.done = true
		pending := w.pending
		w.pending = nil
		m.mu.Unlock()
		for _, p := range pending {
			s.warm(p)
		}
		return
	}
	m.mu.Unlock()
	o, cerr := s.compact(out)
	if cerr != nil {
		o = nil
	}
	m.mu.Lock()
	if (o == nil || w.taken) && m.encoded[w.sum] == w {
		delete(m.encoded, w.sum)
	}
	if !w.taken {
		w.object = o
	}
	w.done = true
	pending := w.pending
	w.pending = nil
	if w.taken {
		w.result = o
	}
	m.mu.Unlock()
	for _, p := range pending {
		if !s.fill(p, o) {
			s.warm(p)
		}
	}
}

// take returns the compact object of the write that encoded exactly
// encoded, if it has finished; if it has not, nil and the write, to hand
// it the deferred object of its bytes (handOff). Either way the write is
// forgotten: one watch takes it.
func (m *WriteMemo) take(encoded []byte) (*Object, *memoWrite) {
	sum := maphash.Bytes(m.seed, encoded)
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.encoded[sum]
	if w == nil || !bytes.Equal(w.encoded, encoded) {
		return nil, nil
	}
	delete(m.encoded, sum)
	w.taken = true
	if w.object != nil {
		return w.object, nil
	}
	return nil, w
}

// handOff gives w, a write the watch took before it finished, o: the
// deferred object the watch made of its bytes. The write fills o with its
// compact encoding once it has finished, or now if it has; a write that
// failed or did not compact leaves o to the background decoding.
func (m *WriteMemo) handOff(w *memoWrite, s *Storage, o *Object) {
	m.mu.Lock()
	if !w.done {
		w.pending = append(w.pending, o)
		m.mu.Unlock()
		return
	}
	result := w.result
	m.mu.Unlock()
	if !s.fill(o, result) {
		s.warm(o)
	}
}

// memoCodec is the store's codec with the memo in front of it.
type memoCodec struct {
	runtime.Codec
	memo *WriteMemo
}

// Encode encodes obj, and notes its encoding when a write of Storage
// encodes it.
func (c *memoCodec) Encode(obj runtime.Object, w io.Writer) error {
	c.memo.mu.Lock()
	_, writing := c.memo.writing[obj]
	c.memo.mu.Unlock()
	if !writing {
		return c.Codec.Encode(obj, w)
	}
	var buf bytes.Buffer
	if err := c.Codec.Encode(obj, &buf); err != nil {
		return err
	}
	c.memo.encodedBy(obj, buf.Bytes())
	_, err := w.Write(buf.Bytes())
	return err
}

// Decode decodes data. The store's watch decodes into nothing: it gets
// the compact object of the write that encoded data, when there is one.
// An item of a storedList takes data as it is.
func (c *memoCodec) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if item, ok := into.(*storedItem); ok {
		item.data = data
		return item, nil, nil
	}
	if into != nil && c.memo.reuse != "" && c.memo.reusedInto(into, data) {
		gvk := into.GetObjectKind().GroupVersionKind()
		return into, &gvk, nil
	}
	if into == nil {
		if o, w := c.memo.take(data); o != nil || c.memo.deferring.Load() {
			return &memoHit{object: o, write: w, memo: c.memo, encoded: data, codec: c.Codec}, nil, nil
		}
	}
	return c.Codec.Decode(data, defaults, into)
}

// memoHit is what the store's watch gets for the bytes of a write of
// Storage: the write's compact object. The watch sets the event's
// revision on it (its ObjectMeta), which the compacting layer checks
// against the object's before it takes the object. When the watch defers
// decoding, it gets a memoHit for any other bytes too, with no object,
// and with the write of its memo when the write has not finished.
type memoHit struct {
	metav1.ObjectMeta
	object *Object
	write  *memoWrite
	memo   *WriteMemo
	// encoded is what the store holds, to decode with codec when the
	// revisions differ.
	encoded []byte
	codec   runtime.Codec
}

// compact returns the compact object of the event h stands for: the
// write's, or, when the event's revision is not the write's, its own.
func (h *memoHit) compact(s *Storage) (*Object, error) {
	if h.object != nil && h.ResourceVersion == h.object.ResourceVersion {
		o := *h.object
		return &o, nil
	}
	if s.storeCodec != nil {
		if h.write == nil {
			return s.deferObject(h.encoded, h.ResourceVersion, true)
		}
		o, err := s.deferObject(h.encoded, h.ResourceVersion, false)
		if err != nil {
			return nil, err
		}
		h.memo.handOff(h.write, s, o)
		return o, nil
	}
	obj, err := runtime.Decode(h.codec, h.encoded)
	if err != nil {
		return nil, err
	}
	if err := s.setResourceVersion(obj, h.ResourceVersion); err != nil {
		return nil, err
	}
	return s.compact(obj)
}

// GetObjectKind implements runtime.Object.
func (h *memoHit) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object; the compact object and the
// bytes are never changed, so the copy shares them.
func (h *memoHit) DeepCopyObject() runtime.Object {
	c := *h
	h.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}
