package lean

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	jsonutil "sigs.k8s.io/json"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/storage"
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
// stored JSON, case-sensitively as the codec decodes it.
type storedMetadata struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
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
// come from its metadata.
func (s *Storage) deferObject(encoded []byte, resourceVersion string) (*Object, error) {
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
	o := &Object{key: key, labels: l, fields: f, stored: &storedForm{}}
	o.stored.form.Store(&encodedForm{data: compress(encoded)})
	o.Name, o.Namespace, o.ResourceVersion = accessor.GetName(), accessor.GetNamespace(), resourceVersion
	if s.warmer != nil {
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
		var m storedMetadata
		if err := jsonutil.UnmarshalCaseSensitivePreserveInts(encoded, &m); err == nil && m.APIVersion != "" && m.Kind != "" && m.Metadata.Name != "" {
			obj := s.config.NewFunc()
			accessor, err := meta.Accessor(obj)
			if err != nil {
				return nil, err
			}
			accessor.SetName(m.Metadata.Name)
			accessor.SetNamespace(m.Metadata.Namespace)
			accessor.SetLabels(m.Metadata.Labels)
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
	encoded, release, err := expand(form.data)
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
	compacted := &encodedForm{data: compress(buf.Bytes()), compact: true}
	if !o.stored.form.CompareAndSwap(form, compacted) {
		// Another read made it first; both are the same.
		compacted = o.stored.form.Load()
	}
	return compacted.data, nil
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

// warmer decodes the deferred objects in the background once the cache
// has filled, one at a time on one goroutine, so that their first reads
// find them compact: the cache serves a type at once, and the decoding it
// deferred then takes at most one core, as long as it took before the
// cache was ready.
type warmer struct {
	mu sync.Mutex
	// queue holds the deferred objects no read has decoded yet, in the
	// order they came; a deleted one is decoded all the same.
	queue []*Object
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

func newWarmer() *warmer {
	return &warmer{wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// add queues o for decoding.
func (w *warmer) add(o *Object) {
	w.mu.Lock()
	w.queue = append(w.queue, o)
	w.mu.Unlock()
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
		for _, o := range batch {
			select {
			case <-w.stop:
				return
			default:
			}
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
}
