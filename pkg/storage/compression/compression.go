// Package compression keeps hosted objects compressed in their store.
//
// A hosted object is stored as its JSON, which repeats its field names
// (in managedFields too): a report of about 2 KiB keeps about a third of
// its size compressed with S2. Every store annex offers holds values as
// opaque bytes, so compression sits where encryption at rest sits: in the
// value transformer of the resource's storage configuration, which the
// upstream etcd3 store calls with the encoded object on every write, and
// with the stored value on every read (get, list, watch). The embedded
// etcd's file, and with it the part of it mapped in memory, an external
// etcd's database and PostgreSQL's rows all shrink by as much, and the
// embedded etcd's quota holds that many more objects.
//
// A compressed value starts with Prefix, which no JSON, protobuf or
// encrypted value of the apiserver starts with. Values without it are read
// as they are: those written before compression, or while it was off.
// Reading never depends on the setting, so it can be turned off and on
// again; a value not in the form writes use is reported stale, which the
// etcd3 store reads as "rewrite it on the next update".
//
// Compression is not combined with encryption at rest: the size of a
// value compressed before it is encrypted tells something about its
// content, which encryption must not. With an encryption configuration,
// values are written encrypted and uncompressed, and compressed values
// written before are still read.
package compression

import (
	"bytes"
	"context"
	"fmt"

	"github.com/klauspost/compress/s2"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
)

// Prefix starts every value compressed by annex.
const Prefix = "annex:s2:"

var prefix = []byte(Prefix)

// Mode is how values are written.
type Mode string

const (
	// S2 writes values compressed with S2 (the default).
	S2 Mode = "S2"
	// None writes values as they are.
	None Mode = "None"
)

// Modes are the modes, in the order a flag's help lists them.
var Modes = []Mode{S2, None}

// Valid is an error when m is not a mode.
func (m Mode) Valid() error {
	for _, known := range Modes {
		if m == known {
			return nil
		}
	}
	return fmt.Errorf("unknown storage compression %q: want one of %v", string(m), Modes)
}

// Compress returns data compressed, with Prefix: the value a write of data
// stores when it compresses.
func Compress(data []byte) []byte {
	out := make([]byte, len(prefix)+s2.MaxEncodedLen(len(data)))
	copy(out, prefix)
	n := len(s2.EncodeBetter(out[len(prefix):], data))
	return out[:len(prefix)+n]
}

// Decompress returns what a stored value holds: data decompressed when it
// starts with Prefix, and data itself otherwise; compressed says which.
func Decompress(data []byte) (out []byte, compressed bool, err error) {
	if !bytes.HasPrefix(data, prefix) {
		return data, false, nil
	}
	out, err = s2.Decode(nil, data[len(prefix):])
	if err != nil {
		return nil, true, fmt.Errorf("the stored value is not valid %s data: %w", Prefix, err)
	}
	return out, true, nil
}

// Transformer returns the value transformer of a resource whose values
// inner transforms (encryption at rest; nil when there is none), writing
// compressed when compress is set.
func Transformer(inner value.Transformer, compress bool) value.Transformer {
	if inner == nil {
		// What the etcd3 store uses when it is given none: it refuses to
		// read encrypted values as they are.
		inner = identity.NewEncryptCheckTransformer()
	}
	return &transformer{inner: inner, compress: compress}
}

type transformer struct {
	inner    value.Transformer
	compress bool
}

func (t *transformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	data, stale, err := t.inner.TransformFromStorage(ctx, data, dataCtx)
	if err != nil {
		return nil, stale, err
	}
	out, compressed, err := Decompress(data)
	if err != nil {
		return nil, false, err
	}
	return out, stale || compressed != t.compress, nil
}

func (t *transformer) TransformToStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, error) {
	if t.compress {
		data = Compress(data)
	}
	return t.inner.TransformToStorage(ctx, data, dataCtx)
}

// ResourceTransformers returns the transformers of every resource: inner's
// (encryption at rest), or none when inner is nil, reading compressed
// values, and writing them compressed when mode is S2 and there is no
// encryption.
func ResourceTransformers(inner value.ResourceTransformers, mode Mode) value.ResourceTransformers {
	return resourceTransformers{inner: inner, compress: mode == S2 && inner == nil}
}

type resourceTransformers struct {
	inner    value.ResourceTransformers
	compress bool
}

func (r resourceTransformers) TransformerForResource(resource schema.GroupResource) value.Transformer {
	var inner value.Transformer
	if r.inner != nil {
		inner = r.inner.TransformerForResource(resource)
	}
	return Transformer(inner, r.compress)
}
