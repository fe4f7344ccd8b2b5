package lean

import (
	"errors"
	"maps"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/storage"
)

func newUnstructured() runtime.Object { return &unstructured.Unstructured{} }

// metadataAttrs are the attributes of a custom resource without selectable
// fields, as its strategy gives them.
func metadataAttrs(namespaced bool) storage.AttrFunc {
	return func(obj runtime.Object) (labels.Set, fields.Set, error) {
		u := obj.(*unstructured.Unstructured)
		f := fields.Set{"metadata.name": u.GetName()}
		if namespaced {
			f["metadata.namespace"] = u.GetNamespace()
		}
		return u.GetLabels(), f, nil
	}
}

func TestAttributesFromMetadata(t *testing.T) {
	withSpec := func(obj runtime.Object) (labels.Set, fields.Set, error) {
		l, f, err := metadataAttrs(true)(obj)
		if err != nil {
			return nil, nil, err
		}
		color, _, _ := unstructured.NestedString(obj.(*unstructured.Unstructured).Object, "spec", "color")
		f["spec.color"] = color
		return l, f, nil
	}
	failing := func(runtime.Object) (labels.Set, fields.Set, error) { return nil, nil, errors.New("no attributes") }
	noLabels := func(obj runtime.Object) (labels.Set, fields.Set, error) {
		_, f, err := metadataAttrs(true)(obj)
		return nil, f, err
	}
	for _, tc := range []struct {
		name  string
		attrs storage.AttrFunc
		want  bool
	}{
		{"namespaced, name and namespace", metadataAttrs(true), true},
		{"cluster-scoped, name alone", metadataAttrs(false), true},
		{"a selectable field of the spec", withSpec, false},
		{"attributes that fail", failing, false},
		{"labels that are not the object's", noLabels, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := attributesFromMetadata(newUnstructured, tc.attrs); got != tc.want {
				t.Errorf("attributesFromMetadata = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestDeferObjectPlacesFromMetadata places stored JSON from its metadata,
// and decodes what it cannot read that way (labels that are not strings,
// which the codec's coercion drops) for the attributes the codec gives.
func TestDeferObjectPlacesFromMetadata(t *testing.T) {
	key := func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc("/widgets/", obj) }
	s := &Storage{
		config: Config{NewFunc: newUnstructured, KeyFunc: key, GetAttrsFunc: metadataAttrs(true), Codec: unstructured.UnstructuredJSONScheme},
		raw:    versionerOnly{}, storeCodec: unstructured.UnstructuredJSONScheme, attrsFromMetadata: true,
	}
	for _, tc := range []struct {
		name, stored string
		labels       labels.Set
	}{
		{"labels", `{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"ns","labels":{"tier":"gold"}},"spec":{"size":1}}`, labels.Set{"tier": "gold"}},
		{"no labels", `{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"ns"}}`, nil},
		{"labels of the wrong case", `{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"ns","Labels":{"tier":"gold"}}}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := s.deferObject([]byte(tc.stored), "7")
			if err != nil {
				t.Fatal(err)
			}
			if o.key != "/widgets/ns/w" || o.Name != "w" || o.Namespace != "ns" || o.ResourceVersion != "7" ||
				!labels.Equals(o.labels, tc.labels) || !maps.Equal(o.fields, fields.Set{"metadata.name": "w", "metadata.namespace": "ns"}) {
				t.Errorf("placed as key %q, %s/%s at %q, labels %v, fields %v", o.key, o.Namespace, o.Name, o.ResourceVersion, o.labels, o.fields)
			}
			obj := &unstructured.Unstructured{}
			if err := s.decode(o, obj); err != nil {
				t.Fatal(err)
			}
			if obj.GetName() != "w" || obj.GetResourceVersion() != "7" || !labels.Equals(obj.GetLabels(), tc.labels) {
				t.Errorf("decoded as %v", obj.Object)
			}
			if form := o.stored.form.Load(); !form.compact {
				t.Error("the first read left the object as stored")
			}
		})
	}
	// Labels that are not strings: the metadata is not read, the object
	// is decoded for its attributes, and has the labels the codec gives it
	// (this codec: none).
	var decodes countingCodec
	decodes.Codec = unstructured.UnstructuredJSONScheme
	s.storeCodec = &decodes
	o, err := s.deferObject([]byte(`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"ns","labels":{"tier":1}}}`), "8")
	if err != nil {
		t.Fatal(err)
	}
	if decodes.decodes != 1 || len(o.labels) != 0 {
		t.Errorf("labels that are not strings: %d decodings, labels %v; want 1, none", decodes.decodes, o.labels)
	}
}
