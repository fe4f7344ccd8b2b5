package lean

import (
	"context"
	"errors"
	"fmt"

	jsoniter "github.com/json-iterator/go"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/storage"
	sigsjson "sigs.k8s.io/json"
)

// ListMetadata lists as GetList does, and returns the items' metadata as a
// list of PartialObjectMetadata: what the upstream handler answers a list
// asked for as metadata only (the garbage collector's, the namespace
// controller's, every metadata informer's), read from each object's
// encoding without decoding the rest of the object.
//
// Its items are what the upstream handler makes of each decoded object
// (meta.AsPartialObjectMetadata), and its list metadata is the list's, so
// the answer written with the same serializer is the same. An object whose
// metadata cannot be read that way fails the list, for the upstream handler
// to answer.
func (s *Storage) ListMetadata(ctx context.Context, key string, opts storage.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	l := &ObjectList{}
	if err := s.delegator.GetList(ctx, key, opts, l); err != nil {
		return nil, err
	}
	out := &metav1.PartialObjectMetadataList{}
	out.ResourceVersion, out.Continue, out.RemainingItemCount = l.ResourceVersion, l.Continue, l.RemainingItemCount
	if len(l.Items) == 0 {
		// As the upstream handler builds it: no items is a nil slice.
		return out, nil
	}
	out.Items = make([]metav1.PartialObjectMetadata, len(l.Items))
	err := inParallel(len(l.Items), func(i int) error {
		return s.readObjectMeta(&l.Items[i], &out.Items[i].ObjectMeta)
	})
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	for i := range out.Items {
		out.Items[i].APIVersion, out.Items[i].Kind = metav1.SchemeGroupVersion.String(), "PartialObjectMetadata"
	}
	return out, nil
}

// readObjectMeta reads the metadata of o's compact encoding into into, with
// the resourceVersion the cache holds for o. A deferred object is decoded
// first: its stored bytes are not yet what the type's codec makes of them.
func (s *Storage) readObjectMeta(o *Object, into *metav1.ObjectMeta) error {
	encoded, release, err := s.compactEncoding(o)
	defer release()
	if err != nil {
		return err
	}
	raw, err := metadataOf(encoded)
	if err != nil {
		return fmt.Errorf("reading the metadata of %s: %w", o.key, err)
	}
	// Case-sensitive, as the codec decodes. The compact encoding is the
	// codec's, whose metadata was checked against ObjectMeta when decoded.
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, into); err != nil {
		return fmt.Errorf("reading the metadata of %s: %w", o.key, err)
	}
	into.ResourceVersion = o.ResourceVersion
	return nil
}

// metadataOf returns the JSON of the metadata of an object's JSON: the
// value of its field "metadata", found without decoding the other fields.
func metadataOf(encoded []byte) ([]byte, error) {
	it := metadataReader.BorrowIterator(encoded)
	defer metadataReader.ReturnIterator(it)
	if it.WhatIsNext() != jsoniter.ObjectValue {
		return nil, errNotPlain
	}
	var raw []byte
	it.ReadObjectCB(func(it *jsoniter.Iterator, field string) bool {
		if field != "metadata" {
			it.Skip()
			return it.Error == nil
		}
		if it.WhatIsNext() != jsoniter.ObjectValue {
			it.ReportError("reading metadata", "not an object")
			return false
		}
		raw = it.SkipAndReturnBytes()
		return false
	})
	if it.Error != nil {
		return nil, it.Error
	}
	if raw == nil {
		return nil, errors.New("no metadata")
	}
	return raw, nil
}
