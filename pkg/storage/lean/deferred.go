package lean

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	jsoniter "github.com/json-iterator/go"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
)

// A cache filling from a large store spends nearly all its time decoding:
// each object the store's watch sends (the whole type, when the cache
// starts) goes through the type's codec (for a custom resource: JSON,
// schema coercion twice, defaulting, pruning, a conversion) on one
// goroutine, and is then encoded again. On 2 cores that is about half a
// millisecond for a 2 KiB report: 8 minutes for 1,000,000 objects before
// the type serves a watch.
//
// With deferred decoding, an object the store's watch sends is kept as the
// store holds it, compressed, until something reads it: the first read
// decodes it with the store's codec, as the watch would have, and leaves
// the compact encoding in its place for the reads after it. The watch
// cache still needs the object's key, labels and fields to place and
// select it; when the resource's attributes come from its name, namespace
// and labels alone (a custom resource without selectable fields), those
// are read from the stored JSON's metadata without decoding the rest.
// Otherwise the object is decoded for them, and kept as stored.
//
// Once the cache has filled, a goroutine decodes the deferred objects in
// the background (warmer), so that reads find them compact again.
//
// Writes made through Storage are not deferred: the write memo hands the
// cache the object the write decoded.

// storedForm holds a deferred object's encoding: the store's bytes until a
// read decodes them, then the compact encoding. An Object's copies share
// it, so one read serves them all.
type storedForm struct {
	form atomic.Pointer[encodedForm]
}

// encodedForm is an encoding, compressed; compact says that it is the
// resource's compact encoding rather than the store's bytes.
type encodedForm struct {
	data    []byte
	compact bool
}

// storedMetadata is what a deferred object's placement reads from the
// stored JSON.
type storedMetadata struct {
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	Labels     map[string]string
}

// metadataReader reads JSON field names case-sensitively, as the codec
// decodes them.
var metadataReader = jsoniter.Config{CaseSensitive: true}.Froze()

// readStoredMetadata reads the apiVersion, kind, name, namespace and
// labels of a stored object's JSON, skipping the rest without decoding
// it: two to three times faster than decoding into a struct, which first
// checks the whole document and then skips the other fields again. A
// field given twice counts as its last, as in a decoding. It reads only
// what is plainly so: it fails when metadata is not an object, or these
// fields are not strings (labels: an object of strings, or null), leaving
// such an object to be decoded. It may miss that the rest is malformed,
// which the object's first read then finds.
func readStoredMetadata(data []byte) (storedMetadata, error) {
	var m storedMetadata
	it := metadataReader.BorrowIterator(data)
	defer metadataReader.ReturnIterator(it)
	if it.WhatIsNext() != jsoniter.ObjectValue {
		return m, errNotPlain
	}
	it.ReadObjectCB(func(it *jsoniter.Iterator, field string) bool {
		switch field {
		case "apiVersion":
			m.APIVersion = readString(it)
		case "kind":
			m.Kind = readString(it)
		case "metadata":
			if it.WhatIsNext() != jsoniter.ObjectValue {
				it.ReportError("reading metadata", "not an object")
				return false
			}
			it.ReadObjectCB(func(it *jsoniter.Iterator, field string) bool {
				switch field {
				case "name":
					m.Name = readString(it)
				case "namespace":
					m.Namespace = readString(it)
				case "labels":
					m.Labels = readLabels(it)
				default:
					it.Skip()
				}
				return it.Error == nil
			})
		default:
			it.Skip()
		}
		return it.Error == nil
	})
	if it.Error != nil {
		return storedMetadata{}, it.Error
	}
	return m, nil
}

var errNotPlain = errors.New("not a JSON object")

// readString reads a string, and fails on anything else, and on a string
// that is not UTF-8 (which a decoding would change).
func readString(it *jsoniter.Iterator) string {
	if it.WhatIsNext() != jsoniter.StringValue {
		it.ReportError("reading metadata", "not a string")
		return ""
	}
	s := it.ReadString()
	if !utf8.ValidString(s) {
		it.ReportError("reading metadata", "not UTF-8")
	}
	return s
}

// readLabels reads an object of strings, or null.
func readLabels(it *jsoniter.Iterator) map[string]string {
	switch it.WhatIsNext() {
	case jsoniter.NilValue:
		it.Skip()
		return nil
	case jsoniter.ObjectValue:
		set := map[string]string{}
		it.ReadMapCB(func(it *jsoniter.Iterator, key string) bool {
			set[key] = readString(it)
			if !utf8.ValidString(key) {
				it.ReportError("reading labels", "not UTF-8")
			}
			return it.Error == nil
		})
		return set
	}
	it.ReportError("reading labels", "not an object")
	return nil
}

// attributesFromMetadata reports whether the resource's attributes come
// from an object's name, namespace and labels alone: whether getAttrs of
// an object that has nothing else gives them back and no other field.
func attributesFromMetadata(newFunc func() runtime.Object, getAttrs storage.AttrFunc) bool {
	probe := newFunc()
	accessor, err := meta.Accessor(probe)
	if err != nil {
		return false
	}
	accessor.SetName("probe-name")
	accessor.SetNamespace("probe-namespace")
	accessor.SetLabels(map[string]string{"probe": "label"})
	l, f, err := getAttrs(probe)
	if err != nil || !maps.Equal(l, labels.Set{"probe": "label"}) || f["metadata.name"] != "probe-name" {
		return false
	}
	for field, value := range f {
		switch {
		case field == "metadata.name":
		case field == "metadata.namespace" && value == "probe-namespace":
		default:
			return false
		}
	}
	return true
}

// deferObject makes the Object of what the store holds, encoded, at
// resourceVersion, without decoding it when the resource's attributes
// come from its metadata. warm queues it for decoding in the background:
// an object of the cache's.
func (s *Storage) deferObject(encoded []byte, resourceVersion string, warm bool) (*Object, error) {
	placed, err := s.placeholder(encoded, resourceVersion)
	if err != nil {
		return nil, err
	}
	accessor, err := meta.Accessor(placed)
	if err != nil {
		return nil, err
	}
	key, err := s.config.KeyFunc(placed)
	if err != nil {
		return nil, fmt.Errorf("the key of %s/%s: %w", accessor.GetNamespace(), accessor.GetName(), err)
	}
	l, f, err := s.config.GetAttrsFunc(placed)
	if err != nil {
		return nil, err
	}
	o := &Object{key: key, labels: s.labelSets.share(l), fields: f, stored: &storedForm{}}
	o.stored.form.Store(&encodedForm{data: s.packer.compress(encoded)})
	o.Name, o.Namespace, o.ResourceVersion = accessor.GetName(), accessor.GetNamespace(), resourceVersion
	if warm && s.warmer != nil {
		s.warmer.add(o)
	}
	return o, nil
}

// placeholder returns an object that has the attributes of the one
// encoded: one made of its stored metadata when the resource's attributes
// come from metadata and the JSON has them in the form the codec takes,
// else the object decoded.
func (s *Storage) placeholder(encoded []byte, resourceVersion string) (runtime.Object, error) {
	if s.attrsFromMetadata {
		if m, err := readStoredMetadata(encoded); err == nil && m.APIVersion != "" && m.Kind != "" && m.Name != "" {
			obj := s.config.NewFunc()
			accessor, err := meta.Accessor(obj)
			if err != nil {
				return nil, err
			}
			accessor.SetName(m.Name)
			accessor.SetNamespace(m.Namespace)
			accessor.SetLabels(m.Labels)
			return obj, nil
		}
	}
	obj, err := runtime.Decode(s.storeCodec, encoded)
	if err != nil {
		return nil, err
	}
	return obj, s.setResourceVersion(obj, resourceVersion)
}

// decodeStored decodes a deferred object into into, and leaves its
// compact encoding in place of the stored bytes for the reads after.
// It returns the compact encoding.
func (s *Storage) decodeStored(o *Object, form *encodedForm, into runtime.Object) ([]byte, error) {
	encoded, release, err := s.packer.expand(form.data)
	defer release()
	if err != nil {
		return nil, fmt.Errorf("decompressing %s from the lean cache: %w", o.key, err)
	}
	out, _, err := s.storeCodec.Decode(encoded, nil, into)
	if err != nil {
		return nil, fmt.Errorf("decoding %s as stored: %w", o.key, err)
	}
	if out != into {
		return nil, fmt.Errorf("decoding %s as stored gave a %T, not a %T", o.key, out, into)
	}
	if err := s.setResourceVersion(into, o.ResourceVersion); err != nil {
		return nil, err
	}
	buf := buffers.Get().(*bytes.Buffer)
	defer buffers.Put(buf)
	buf.Reset()
	if err := s.config.Codec.Encode(into, buf); err != nil {
		return nil, fmt.Errorf("encoding %s: %w", o.key, err)
	}
	compacted := &encodedForm{data: s.packer.compress(buf.Bytes()), compact: true}
	if !o.stored.form.CompareAndSwap(form, compacted) {
		// Another read made it first; both are the same.
		compacted = o.stored.form.Load()
	}
	return compacted.data, nil
}

// fill gives o, deferred, the compact form of the write that stored its
// bytes: the object the write decoded from them, with the same key and
// resourceVersion, which is what o's first read would decode. It reports
// whether o is compact now (a read may have made it so first).
func (s *Storage) fill(o, written *Object) bool {
	if o == nil || o.stored == nil || written == nil || written.stored != nil || written.data == nil ||
		o.key != written.key || o.ResourceVersion != written.ResourceVersion {
		return false
	}
	form := o.stored.form.Load()
	if !form.compact {
		o.stored.form.CompareAndSwap(form, &encodedForm{data: written.data, compact: true})
	}
	return true
}

// warm queues o, deferred, for the background decoding, if there is one.
func (s *Storage) warm(o *Object) {
	if o != nil && s.warmer != nil {
		s.warmer.add(o)
	}
}

// encoding returns the compact encoding of o, compressed: decoding a
// deferred object first when no read has yet.
func (s *Storage) encoding(o *Object) ([]byte, error) {
	if o.stored == nil {
		return o.data, nil
	}
	form := o.stored.form.Load()
	if form.compact {
		return form.data, nil
	}
	return s.decodeStored(o, form, s.config.NewFunc())
}

// compactEncoding returns the compact encoding of o, decompressed (and
// decoded first when deferred), and a function to call once done with it.
func (s *Storage) compactEncoding(o *Object) ([]byte, func(), error) {
	data, err := s.encoding(o)
	if err != nil {
		return nil, func() {}, err
	}
	encoded, release, err := s.packer.expand(data)
	if err != nil {
		return nil, release, fmt.Errorf("decompressing %s from the lean cache: %w", o.key, err)
	}
	return encoded, release, nil
}

// storedItem is an object read from the store as stored: a list of them
// makes the store's codec (the memo's) leave each object's bytes as they
// are, with the revision the store sets.
type storedItem struct {
	objectMeta
	data []byte
}

// GetObjectKind implements runtime.Object.
func (i *storedItem) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object; the bytes are never changed.
func (i *storedItem) DeepCopyObject() runtime.Object {
	c := *i
	c.Annotations = maps.Clone(i.Annotations)
	return &c
}

// storedList is a list of storedItems.
type storedList struct {
	metav1.ListMeta
	Items []storedItem
}

// GetObjectKind implements runtime.Object.
func (l *storedList) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (l *storedList) DeepCopyObject() runtime.Object {
	c := &storedList{Items: make([]storedItem, len(l.Items))}
	l.ListMeta.DeepCopyInto(&c.ListMeta)
	for i := range l.Items {
		c.Items[i] = *l.Items[i].DeepCopyObject().(*storedItem)
	}
	return c
}

// warmer decodes the deferred objects in the background once the cache
// has filled, one at a time on one goroutine, so that their first reads
// find them compact: the cache serves a type at once, and the decoding it
// deferred then takes at most one core, as long as it took before the
// cache was ready.
type warmer struct {
	// pending counts the queue in annex_lean_deferred_objects.
	pending metrics.GaugeMetric

	mu sync.Mutex
	// queue holds the deferred objects no read has decoded yet, in the
	// order they came; a deleted one is decoded all the same.
	queue []*Object
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

// deferredObjects counts the objects waiting for the background decoding.
var (
	deferredObjects = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name:           "annex_lean_deferred_objects",
		Help:           "Objects of a type's lean cache kept as stored, waiting to be decoded in the background once the cache has filled.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	registerDeferredObjects sync.Once
)

func newWarmer(gr schema.GroupResource) *warmer {
	registerDeferredObjects.Do(func() { legacyregistry.MustRegister(deferredObjects) })
	return &warmer{
		pending: deferredObjects.WithLabelValues(gr.Group, gr.Resource),
		wake:    make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// add queues o for decoding.
func (w *warmer) add(o *Object) {
	w.mu.Lock()
	w.queue = append(w.queue, o)
	w.mu.Unlock()
	w.pending.Inc()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take returns up to n queued objects.
func (w *warmer) take(n int) []*Object {
	w.mu.Lock()
	defer w.mu.Unlock()
	n = min(n, len(w.queue))
	batch := w.queue[:n:n]
	w.queue = w.queue[n:]
	if len(w.queue) == 0 {
		// Let the backing array go.
		w.queue = nil
	}
	return batch
}

// run decodes the queued objects of s from when its cache has filled
// until stop is closed.
func (w *warmer) run(s *Storage) {
	defer close(w.done)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-w.stop:
		case <-w.done:
		}
		cancel()
	}()
	if err := s.cacher.Wait(ctx); err != nil {
		return
	}
	start, decoded := time.Now(), 0
	for {
		batch := w.take(256)
		if len(batch) == 0 {
			if decoded > 0 {
				klog.V(2).InfoS("Decoded the objects the lean cache deferred", "resource", s.config.GroupResource, "objects", decoded, "took", time.Since(start))
			}
			select {
			case <-w.stop:
				return
			case <-w.wake:
				start, decoded = time.Now(), 0
				continue
			}
		}
		for i, o := range batch {
			select {
			case <-w.stop:
				w.pending.Add(-float64(len(batch) - i))
				return
			default:
			}
			w.pending.Dec()
			form := o.stored.form.Load()
			if form.compact {
				continue
			}
			if _, err := s.decodeStored(o, form, s.config.NewFunc()); err != nil {
				// Its reads will say so.
				klog.V(2).InfoS("Decoding an object the lean cache deferred", "key", o.key, "err", err)
				continue
			}
			decoded++
		}
	}
}

// Stop stops the warmer and waits for it to return.
func (w *warmer) Stop() {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending.Add(-float64(len(w.queue)))
	w.queue = nil
}

// decodeDeferred decodes, in parallel, the objects of items no read has
// decoded yet, so that a list writing their encodings does not decode
// them one after another.
func (s *Storage) decodeDeferred(items []Object) error {
	var deferred []*Object
	for i := range items {
		if o := &items[i]; o.stored != nil && !o.stored.form.Load().compact {
			deferred = append(deferred, o)
		}
	}
	return inParallel(len(deferred), func(i int) error {
		_, err := s.encoding(deferred[i])
		return err
	})
}

// parallelChunk is the fewest items a goroutine of inParallel takes.
const parallelChunk = 32

// inParallel calls do for each of n items, on as many goroutines as the
// process may run at once, each taking at least parallelChunk items. It
// returns the first error.
func inParallel(n int, do func(i int) error) error {
	workers := min(goruntime.GOMAXPROCS(0), n/parallelChunk)
	if workers <= 1 {
		for i := range n {
			if err := do(i); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		next     atomic.Int64
		firstErr error
		once     sync.Once
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				start := int(next.Add(parallelChunk)) - parallelChunk
				if start >= n {
					return
				}
				for i := start; i < min(start+parallelChunk, n); i++ {
					if err := do(i); err != nil {
						once.Do(func() { firstErr = err })
						next.Store(int64(n))
						return
					}
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}
