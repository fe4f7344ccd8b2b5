package lean

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"io"
	"sync"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/klog/v2"
)

// Every watcher of a resource receives the same events. The upstream watch
// cache wraps each event's object so that it is serialized once per
// encoder for all watchers; the lean cache's objects must be decoded
// before they are serialized, so the decoding and serializing is shared
// here instead: the watchers of one event get one sharedObject, found by
// what identifies the event's object, and it serializes once per encoder.
//
// The objects are shared through a small table of the latest events. A
// watcher far enough behind the others to find its event's slot taken by
// a newer event makes an object of its own: it then decodes and
// serializes alone, as every watcher would without the table.
const (
	// sharedSlots is the number of events whose objects are shared.
	sharedSlots = 1024
	// sharedBudget bounds the serializations the table keeps, in bytes.
	// Past it, events are not shared until older ones leave the table.
	sharedBudget = 64 << 20
)

// sharedEvents is the table of the objects of the latest watch events.
type sharedEvents struct {
	seed  maphash.Seed
	mu    sync.Mutex
	slots [sharedSlots]sharedSlot
	// kept is the size of the serializations the table's objects keep,
	// and budget its bound.
	kept   atomic.Int64
	budget int64
}

type sharedSlot struct {
	id  eventObjectID
	obj *sharedObject
}

// eventObjectID identifies the object of an event: at one
// resourceVersion, a key names one state of one object. A deletion's
// object is the object's last state, given the deletion's
// resourceVersion; another event at that key and resourceVersion (an
// update that took the object out of a watcher's selection) carries the
// new state, so deletions are told apart.
type eventObjectID struct {
	key, resourceVersion string
	deleted              bool
}

func newSharedEvents() *sharedEvents {
	return &sharedEvents{seed: maphash.MakeSeed(), budget: sharedBudget}
}

// object returns the shared object of an event whose compact object is o.
// Once the table keeps its budget's worth of serializations, the object is
// the event's alone until older ones are evicted.
func (t *sharedEvents) object(s *Storage, eventType watch.EventType, o *Object) *sharedObject {
	id := eventObjectID{key: o.key, resourceVersion: o.ResourceVersion, deleted: eventType == watch.Deleted}
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(id.key)
	h.WriteString(id.resourceVersion)
	if id.deleted {
		// Both states of an update that takes an object out of some
		// watchers' selection are sent: keep them apart.
		h.WriteByte(1)
	}
	slot := &t.slots[h.Sum64()%sharedSlots]

	t.mu.Lock()
	defer t.mu.Unlock()
	if slot.obj != nil && slot.id == id {
		return slot.obj
	}
	if slot.obj != nil {
		slot.obj.evict()
		slot.obj = nil
	}
	if t.kept.Load() >= t.budget {
		return &sharedObject{s: s, o: o}
	}
	shared := &sharedObject{s: s, o: o, table: t}
	slot.id, slot.obj = id, shared
	return shared
}

// sharedObject is the object of a watch event as every watcher of the
// event sees it: decoded when serialized, and serialized once per encoder.
type sharedObject struct {
	s *Storage
	o *Object
	// table is the table that counts the serializations kept, if any.
	table *sharedEvents

	mu             sync.Mutex
	serializations map[runtime.Identifier]*serialization
	kept           int64
	// object is the decoded state, once a caller has read or changed the
	// metadata.
	object runtime.Object
}

type serialization struct {
	once sync.Once
	data []byte
	err  error
}

var _ runtime.CacheableObject = &sharedObject{}

// evict takes the object out of the table's count; the watchers that hold
// it keep using it.
func (so *sharedObject) evict() {
	so.mu.Lock()
	defer so.mu.Unlock()
	so.table.kept.Add(-so.kept)
	so.table, so.kept = nil, 0
}

// serialization returns the serialization for an encoder, made or to be
// made.
func (so *sharedObject) serialization(id runtime.Identifier) *serialization {
	so.mu.Lock()
	defer so.mu.Unlock()
	if so.serializations == nil {
		so.serializations = map[runtime.Identifier]*serialization{}
	}
	r, ok := so.serializations[id]
	if !ok {
		r = &serialization{}
		so.serializations[id] = r
	}
	return r
}

// counted adds n bytes of serializations to the table's count.
func (so *sharedObject) counted(n int) {
	so.mu.Lock()
	defer so.mu.Unlock()
	if so.table != nil {
		so.kept += int64(n)
		so.table.kept.Add(int64(n))
	}
}

// CacheEncode implements runtime.CacheableObject: the first watcher that
// needs the object with an encoder serializes it, and the others write
// what it wrote.
func (so *sharedObject) CacheEncode(id runtime.Identifier, encode func(runtime.Object, io.Writer) error, w io.Writer) error {
	r := so.serialization(id)
	r.once.Do(func() {
		obj, err := so.decoded()
		if err != nil {
			r.err = err
			return
		}
		buf := &bytes.Buffer{}
		if r.err = encode(obj, buf); r.err != nil {
			return
		}
		r.data = buf.Bytes()
		so.counted(len(r.data))
	})
	if r.err != nil {
		return r.err
	}
	_, err := w.Write(r.data)
	return err
}

// decoded returns a new decoding of the object: a copy of its decoded
// state when a caller has read or changed its metadata, else decoded from
// the cache's object.
func (so *sharedObject) decoded() (runtime.Object, error) {
	so.mu.Lock()
	defer so.mu.Unlock()
	if so.object != nil {
		return so.object.DeepCopyObject(), nil
	}
	obj := so.s.config.NewFunc()
	if err := so.s.decode(so.o, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// GetObject implements runtime.CacheableObject: a decoding of the object
// of the caller's own.
func (so *sharedObject) GetObject() runtime.Object {
	obj, err := so.decoded()
	if err != nil {
		klog.ErrorS(err, "Decoding a watch event's object from the lean cache", "key", so.o.key)
		status := apierrors.NewInternalError(fmt.Errorf("decoding %s: %w", so.o.key, err)).Status()
		return &status
	}
	return obj
}

// GetObjectKind implements runtime.Object: the event's object has its
// resource's kind, which it gets when decoded.
func (so *sharedObject) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (so *sharedObject) DeepCopyObject() runtime.Object { return so.GetObject() }

// The object's metadata can be read and changed, as that of the upstream
// cache's events can: in-process callers of the storage read it (the
// upstream storage suite does). The apiserver's handlers only serialize,
// so on the serving path the object is never kept decoded.

// metaLocked returns the metadata of the object's decoded state, decoding
// it once. Call with so.mu held.
func (so *sharedObject) metaLocked() metav1.Object {
	if so.object == nil {
		obj := so.s.config.NewFunc()
		if err := so.s.decode(so.o, obj); err != nil {
			klog.ErrorS(err, "Decoding a watch event's object from the lean cache", "key", so.o.key)
			return &metav1.ObjectMeta{}
		}
		so.object = obj
	}
	accessor, err := meta.Accessor(so.object)
	if err != nil {
		klog.ErrorS(err, "Reading a watch event's metadata", "key", so.o.key)
		return &metav1.ObjectMeta{}
	}
	return accessor
}

func get[T any](so *sharedObject, read func(metav1.Object) T) T {
	so.mu.Lock()
	defer so.mu.Unlock()
	return read(so.metaLocked())
}

// set changes the object's metadata; its serializations are made again.
func (so *sharedObject) set(change func(metav1.Object)) {
	so.mu.Lock()
	defer so.mu.Unlock()
	change(so.metaLocked())
	so.serializations = nil
}

var _ metav1.Object = &sharedObject{}

func (so *sharedObject) GetNamespace() string { return get(so, metav1.Object.GetNamespace) }
func (so *sharedObject) SetNamespace(v string) {
	so.set(func(m metav1.Object) { m.SetNamespace(v) })
}
func (so *sharedObject) GetName() string  { return get(so, metav1.Object.GetName) }
func (so *sharedObject) SetName(v string) { so.set(func(m metav1.Object) { m.SetName(v) }) }
func (so *sharedObject) GetGenerateName() string {
	return get(so, metav1.Object.GetGenerateName)
}
func (so *sharedObject) SetGenerateName(v string) {
	so.set(func(m metav1.Object) { m.SetGenerateName(v) })
}
func (so *sharedObject) GetUID() types.UID  { return get(so, metav1.Object.GetUID) }
func (so *sharedObject) SetUID(v types.UID) { so.set(func(m metav1.Object) { m.SetUID(v) }) }
func (so *sharedObject) GetResourceVersion() string {
	return get(so, metav1.Object.GetResourceVersion)
}
func (so *sharedObject) SetResourceVersion(v string) {
	so.set(func(m metav1.Object) { m.SetResourceVersion(v) })
}
func (so *sharedObject) GetGeneration() int64  { return get(so, metav1.Object.GetGeneration) }
func (so *sharedObject) SetGeneration(v int64) { so.set(func(m metav1.Object) { m.SetGeneration(v) }) }
func (so *sharedObject) GetSelfLink() string   { return get(so, metav1.Object.GetSelfLink) }
func (so *sharedObject) SetSelfLink(v string)  { so.set(func(m metav1.Object) { m.SetSelfLink(v) }) }
func (so *sharedObject) GetCreationTimestamp() metav1.Time {
	return get(so, metav1.Object.GetCreationTimestamp)
}
func (so *sharedObject) SetCreationTimestamp(v metav1.Time) {
	so.set(func(m metav1.Object) { m.SetCreationTimestamp(v) })
}
func (so *sharedObject) GetDeletionTimestamp() *metav1.Time {
	return get(so, metav1.Object.GetDeletionTimestamp)
}
func (so *sharedObject) SetDeletionTimestamp(v *metav1.Time) {
	so.set(func(m metav1.Object) { m.SetDeletionTimestamp(v) })
}
func (so *sharedObject) GetDeletionGracePeriodSeconds() *int64 {
	return get(so, metav1.Object.GetDeletionGracePeriodSeconds)
}
func (so *sharedObject) SetDeletionGracePeriodSeconds(v *int64) {
	so.set(func(m metav1.Object) { m.SetDeletionGracePeriodSeconds(v) })
}
func (so *sharedObject) GetLabels() map[string]string { return get(so, metav1.Object.GetLabels) }
func (so *sharedObject) SetLabels(v map[string]string) {
	so.set(func(m metav1.Object) { m.SetLabels(v) })
}
func (so *sharedObject) GetAnnotations() map[string]string {
	return get(so, metav1.Object.GetAnnotations)
}
func (so *sharedObject) SetAnnotations(v map[string]string) {
	so.set(func(m metav1.Object) { m.SetAnnotations(v) })
}
func (so *sharedObject) GetFinalizers() []string { return get(so, metav1.Object.GetFinalizers) }
func (so *sharedObject) SetFinalizers(v []string) {
	so.set(func(m metav1.Object) { m.SetFinalizers(v) })
}
func (so *sharedObject) GetOwnerReferences() []metav1.OwnerReference {
	return get(so, metav1.Object.GetOwnerReferences)
}
func (so *sharedObject) SetOwnerReferences(v []metav1.OwnerReference) {
	so.set(func(m metav1.Object) { m.SetOwnerReferences(v) })
}
func (so *sharedObject) GetManagedFields() []metav1.ManagedFieldsEntry {
	return get(so, metav1.Object.GetManagedFields)
}
func (so *sharedObject) SetManagedFields(v []metav1.ManagedFieldsEntry) {
	so.set(func(m metav1.Object) { m.SetManagedFields(v) })
}
