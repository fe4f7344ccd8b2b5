package lean

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/storage"
)

// EncodedList is a list read from the lean cache as its objects'
// encodings, to be written without decoding them: a custom resource's
// list in JSON is its items' JSON between the list's own fields.
type EncodedList struct {
	// list holds the list's apiVersion, kind and metadata as the upstream
	// list holds them, so that they are written the same way.
	list  unstructured.UnstructuredList
	items []Object
	// s decodes the items that are deferred.
	s *Storage
}

var _ runtime.Object = &EncodedList{}

// ListEncoded lists as GetList does, and returns the items' encodings
// instead of the decoded items. kind is the list's kind, whose apiVersion
// is the resource's.
func (s *Storage) ListEncoded(ctx context.Context, key string, opts storage.ListOptions, kind schema.GroupVersionKind) (*EncodedList, error) {
	l := &ObjectList{}
	if err := s.delegator.GetList(ctx, key, opts, l); err != nil {
		return nil, err
	}
	if err := s.decodeDeferred(l.Items); err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	out := &EncodedList{items: l.Items, s: s}
	out.list.SetGroupVersionKind(kind)
	// As the store's versioner sets them on the upstream list.
	listMeta, err := meta.ListAccessor(&out.list)
	if err != nil {
		return nil, err
	}
	listMeta.SetResourceVersion(l.ResourceVersion)
	listMeta.SetContinue(l.Continue)
	listMeta.SetRemainingItemCount(l.RemainingItemCount)
	return out, nil
}

// ResourcePrefix is the key of the resource's objects, below which a
// namespace's are.
func (s *Storage) ResourcePrefix() string { return s.config.ResourcePrefix }

// Predicate is the selection of the resource's objects by labels and
// fields, as its registry store makes it.
func (s *Storage) Predicate(label labels.Selector, field fields.Selector) storage.SelectionPredicate {
	return storage.SelectionPredicate{Label: label, Field: field, GetAttrs: s.config.GetAttrsFunc}
}

// writeJSON writes the list as the apiserver's JSON serializer writes an
// UnstructuredList: its fields in the order of their names, each as
// json.Marshal writes it, and the items as the cache holds them (their
// encoding as the type's codec wrote it, less its closing newline).
func (l *EncodedList) writeJSON(w io.Writer) error {
	fields := make([]string, 0, len(l.list.Object)+1)
	for field := range l.list.Object {
		fields = append(fields, field)
	}
	if _, ok := l.list.Object["items"]; !ok {
		fields = append(fields, "items")
	}
	sort.Strings(fields)

	if _, err := io.WriteString(w, "{"); err != nil {
		return err
	}
	for i, field := range fields {
		if i > 0 {
			if _, err := io.WriteString(w, ","); err != nil {
				return err
			}
		}
		name, err := json.Marshal(field)
		if err != nil {
			return err
		}
		if _, err := w.Write(append(name, ':')); err != nil {
			return err
		}
		if field == "items" {
			err = l.writeItems(w)
		} else {
			err = writeValue(w, l.list.Object[field])
		}
		if err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "}\n")
	return err
}

func writeValue(w io.Writer, value any) error {
	data, err := json.Marshal(value)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

func (l *EncodedList) writeItems(w io.Writer) error {
	if _, err := io.WriteString(w, "["); err != nil {
		return err
	}
	for i := range l.items {
		if i > 0 {
			if _, err := io.WriteString(w, ","); err != nil {
				return err
			}
		}
		if err := l.items[i].writeJSON(l.s, w); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "]")
	return err
}

// writeJSON writes the object's JSON, as json.Marshal writes the object.
func (o *Object) writeJSON(s *Storage, w io.Writer) error {
	encoded, release, err := s.compactEncoding(o)
	defer release()
	if err != nil {
		return err
	}
	// The codec's encoder ends the object with a newline; json.Marshal
	// does not.
	encoded = bytes.TrimSuffix(encoded, []byte("\n"))
	if len(encoded) == 0 || encoded[0] != '{' {
		return fmt.Errorf("the lean cache holds %s in a form other than JSON", o.key)
	}
	_, err = w.Write(encoded)
	return err
}

// GetObjectKind implements runtime.Object.
func (l *EncodedList) GetObjectKind() schema.ObjectKind { return l.list.GetObjectKind() }

// DeepCopyObject implements runtime.Object. The items' encodings are
// never changed, so the copy shares them.
func (l *EncodedList) DeepCopyObject() runtime.Object {
	return &EncodedList{list: *l.list.DeepCopy(), items: l.items, s: l.s}
}

// JSONEncoder writes EncodedLists and EncodedObjects in JSON, and nothing
// else.
type JSONEncoder struct{}

var _ runtime.Encoder = JSONEncoder{}

// Encode implements runtime.Encoder.
func (JSONEncoder) Encode(obj runtime.Object, w io.Writer) error { return encodeEncoded(obj, w) }

// Identifier implements runtime.Encoder.
func (JSONEncoder) Identifier() runtime.Identifier { return "annex-lean-list-json" }
