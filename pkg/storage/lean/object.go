package lean

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/s2"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
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
	// labels are shared with the other objects that carry the same
	// (labels.go).
	labels *labelSet
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
	stored         byte = 0 // as is: compression would not shrink it
	compressed     byte = 1 // compressed with S2
	compressedDict byte = 2 // compressed with S2 and the packer's dictionary
)

// packer compresses and decompresses the encodings of one resource's
// objects. Objects of one type share most of their encoding: field names,
// managedFields, the values that repeat from object to object. Compressed
// one at a time, each object carries its own copy of them; compressed
// against a dictionary of the type, it carries only what differs. The
// reports of TestDictionary, 2.5 KiB of JSON each, keep about 810 bytes on
// their own and 330 against the first report, compressed in about the
// same time.
//
// The dictionary is the first encoding of dictMinSample bytes or more that
// the packer compresses (its first dictMaxSample bytes), fixed for the
// packer's life, so that every encoding compressed with it decompresses
// with it.
type packer struct {
	dict atomic.Pointer[s2.Dict]
}

const (
	// dictMinSample is the smallest encoding the dictionary is made of:
	// below it there is too little to share.
	dictMinSample = 128
	// dictMaxSample is the most of an encoding the dictionary holds, S2's
	// largest.
	dictMaxSample = s2.MaxDictSize
	// dictMaxSource is the largest encoding compressed with the
	// dictionary: S2 compresses a block of at most 4 MiB against one, and
	// a larger object gains little from a dictionary of 64 KiB.
	dictMaxSource = 1 << 20
)

// dictionary returns the packer's dictionary, made of encoded if it has
// none yet and encoded can be one.
func (p *packer) dictionary(encoded []byte) *s2.Dict {
	if d := p.dict.Load(); d != nil {
		return d
	}
	if len(encoded) < dictMinSample {
		return nil
	}
	sample := encoded[:min(len(encoded), dictMaxSample)]
	// The dictionary keeps the slice it is made of: give it its own, with
	// the room S2 wants past the end.
	d := s2.MakeDict(append(make([]byte, 0, len(sample)+16), sample...), nil)
	if d == nil {
		return nil
	}
	if p.dict.CompareAndSwap(nil, d) {
		return d
	}
	return p.dict.Load()
}

// compress returns the encoding compressed, or as is when that is not
// smaller, in a slice of its own size.
func (p *packer) compress(encoded []byte) []byte {
	scratch := scratches.Get().(*[]byte)
	defer scratches.Put(scratch)
	if need := 1 + s2.MaxEncodedLen(len(encoded)); cap(*scratch) < need {
		*scratch = make([]byte, need)
	}
	dst := (*scratch)[1:cap(*scratch)]
	var out []byte
	if d := p.dictionary(encoded); d != nil && len(encoded) <= dictMaxSource {
		// The better encoder copies the dictionary's larger tables on
		// every call: three times the time of the fast one, for 5% less.
		out = d.Encode(dst, encoded)
		(*scratch)[0] = compressedDict
	} else {
		out = s2.EncodeBetter(dst, encoded)
		(*scratch)[0] = compressed
	}
	if len(out) >= len(encoded) {
		return append([]byte{stored}, encoded...)
	}
	*scratch = (*scratch)[:1+len(out)]
	return bytes.Clone(*scratch)
}

// expand returns the encoding data holds, and a function to call once
// done with it: a decompressed encoding is in a buffer of the pool, a
// stored one is data's own.
func (p *packer) expand(data []byte) ([]byte, func(), error) {
	if len(data) == 0 {
		return nil, func() {}, errors.New("no data")
	}
	switch data[0] {
	case stored:
		return data[1:], func() {}, nil
	case compressed, compressedDict:
		n, err := s2.DecodedLen(data[1:])
		if err != nil {
			return nil, func() {}, err
		}
		scratch := scratches.Get().(*[]byte)
		if cap(*scratch) < n {
			*scratch = make([]byte, n)
		}
		var encoded []byte
		if data[0] == compressed {
			encoded, err = s2.Decode((*scratch)[:cap(*scratch)], data[1:])
		} else if d := p.dict.Load(); d != nil {
			encoded, err = d.Decode((*scratch)[:cap(*scratch)], data[1:])
		} else {
			err = errors.New("compressed with a dictionary, and there is none")
		}
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
func (o *Object) GetLabels() map[string]string {
	if o.labels == nil {
		return nil
	}
	return o.labels.set
}

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
type objectCodec struct {
	packer *packer
}

func (c objectCodec) Encode(obj runtime.Object, w io.Writer) error {
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
	encoded, release, err := c.packer.expand(o.data)
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
