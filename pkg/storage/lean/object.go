package lean

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"

	"github.com/klauspost/compress/s2"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Object is an object as the lean cache keeps it: its encoding, and what
// the watch cache needs to place and select it (key, name, namespace,
// resourceVersion, labels and fields). It is what the upstream watch cache
// holds in place of the decoded object.
type Object struct {
	// objectMeta holds the name, namespace and resourceVersion (and, on a
	// bookmark, the annotations the watch cache sets).
	objectMeta

	key string
	// data is the object's encoding, compressed with S2 unless that does
	// not shrink it: a custom resource's JSON repeats its field names (in
	// managedFields too), and a report shrinks about threefold for a
	// microsecond of decompression.
	data []byte
	// stored, when set, holds the encoding instead of data: the object is
	// deferred (deferred.go), kept as the store holds it until read.
	stored *storedForm
	labels labels.Set
	fields fields.Set
}

// buffers and scratches hold the encodings being compressed and
// decompressed; only the compressed bytes are kept.
var (
	buffers   = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	scratches = sync.Pool{New: func() any { return new([]byte) }}
)

// The first byte of an Object's data says how the rest holds the encoding.
const (
	stored     byte = 0 // as is: compression would not shrink it
	compressed byte = 1 // compressed with S2
)

// compress returns the encoding compressed, or as is when that is not
// smaller, in a slice of its own size.
func compress(encoded []byte) []byte {
	scratch := scratches.Get().(*[]byte)
	defer scratches.Put(scratch)
	if need := 1 + s2.MaxEncodedLen(len(encoded)); cap(*scratch) < need {
		*scratch = make([]byte, need)
	}
	out := s2.EncodeBetter((*scratch)[1:cap(*scratch)], encoded)
	*scratch = (*scratch)[:1+len(out)]
	if len(out) >= len(encoded) {
		return append([]byte{stored}, encoded...)
	}
	(*scratch)[0] = compressed
	return bytes.Clone(*scratch)
}

// expand returns the encoding data holds, and a function to call once
// done with it: a decompressed encoding is in a buffer of the pool, a
// stored one is data's own.
func expand(data []byte) ([]byte, func(), error) {
	if len(data) == 0 {
		return nil, func() {}, errors.New("no data")
	}
	switch data[0] {
	case stored:
		return data[1:], func() {}, nil
	case compressed:
		n, err := s2.DecodedLen(data[1:])
		if err != nil {
			return nil, func() {}, err
		}
		scratch := scratches.Get().(*[]byte)
		if cap(*scratch) < n {
			*scratch = make([]byte, n)
		}
		encoded, err := s2.Decode((*scratch)[:cap(*scratch)], data[1:])
		return encoded, func() { scratches.Put(scratch) }, err
	}
	return nil, func() {}, fmt.Errorf("unknown form %d", data[0])
}

// GetObjectKind implements runtime.Object; an Object has no kind of its own.
func (o *Object) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object. The encoding, labels and
// fields are never changed once made, so the copy shares them.
func (o *Object) DeepCopyObject() runtime.Object {
	c := *o
	c.Annotations = maps.Clone(o.Annotations)
	return &c
}

// GetLabels implements metav1.Object: the labels the cache selects by,
// which nobody changes.
func (o *Object) GetLabels() map[string]string { return o.labels }

// ObjectList is a list of Objects, the list type the lean cache's watch
// cache is built with.
type ObjectList struct {
	metav1.ListMeta
	Items []Object
}

// GetObjectKind implements runtime.Object.
func (l *ObjectList) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (l *ObjectList) DeepCopyObject() runtime.Object {
	c := &ObjectList{Items: make([]Object, len(l.Items))}
	l.ListMeta.DeepCopyInto(&c.ListMeta)
	for i := range l.Items {
		c.Items[i] = *l.Items[i].DeepCopyObject().(*Object)
	}
	return c
}

// objectCodec writes an Object's encoding. The watch cache checks that its
// codec can encode the objects it holds; nothing decodes into an Object.
type objectCodec struct{}

func (objectCodec) Encode(obj runtime.Object, w io.Writer) error {
	o, ok := obj.(*Object)
	if !ok {
		return errors.New("the lean cache's codec encodes only its own objects")
	}
	if o.stored != nil {
		return errors.New("the lean cache's codec does not encode deferred objects")
	}
	if len(o.data) == 0 {
		return nil
	}
	encoded, release, err := expand(o.data)
	defer release()
	if err != nil {
		return err
	}
	_, err = w.Write(encoded)
	return err
}

func (objectCodec) Decode([]byte, *schema.GroupVersionKind, runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	return nil, nil, errors.New("the lean cache's objects are made from decoded objects, never decoded")
}

func (objectCodec) Identifier() runtime.Identifier { return "annex-lean-object" }
