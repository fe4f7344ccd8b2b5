package lean

import (
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/storage"
	jsonutil "sigs.k8s.io/json"
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
			o, err := s.deferObject([]byte(tc.stored), "7", false)
			if err != nil {
				t.Fatal(err)
			}
			if o.key != "/widgets/ns/w" || o.Name != "w" || o.Namespace != "ns" || o.ResourceVersion != "7" ||
				!labels.Equals(o.GetLabels(), tc.labels) || !maps.Equal(o.fields, fields.Set{"metadata.name": "w", "metadata.namespace": "ns"}) {
				t.Errorf("placed as key %q, %s/%s at %q, labels %v, fields %v", o.key, o.Namespace, o.Name, o.ResourceVersion, o.GetLabels(), o.fields)
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
	o, err := s.deferObject([]byte(`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"ns","labels":{"tier":1}}}`), "8", false)
	if err != nil {
		t.Fatal(err)
	}
	if decodes.decodes != 1 || len(o.GetLabels()) != 0 {
		t.Errorf("labels that are not strings: %d decodings, labels %v; want 1, none", decodes.decodes, o.GetLabels())
	}
}

// FuzzReadStoredMetadata checks that the metadata a deferred object is
// placed by is what decoding the stored JSON gives: for valid JSON, the
// reading fails exactly when the decoding does, and otherwise reads the
// same apiVersion, kind, name, namespace and labels.
func FuzzReadStoredMetadata(f *testing.F) {
	for _, seed := range []string{
		`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"ns","labels":{"tier":"gold"}},"spec":{"size":1}}`,
		`{"metadata":{"name":"w","labels":null},"kind":"Widget","apiVersion":"v1"}`,
		`{"metadata":{"name":"a","name":"b","labels":{"x":"1"},"labels":{"y":"2"}}}`,
		`{"metadata":{"Name":"w","LABELS":{"x":"1"}},"Kind":"Widget"}`,
		`{"metadata":{"name":"w","labels":{"x":1}}}`,
		`{"metadata":{"name":"w","labels":{"x":null}}}`,
		`{"metadata":null}`,
		`{"metadata":[]}`,
		`{"metadata":{"name":"\u00e9\ud83d\ude00","managedFields":[{"fieldsV1":{"f:metadata":{}}}]}}`,
		`{"spec":{"metadata":{"name":"nested"}},"metadata":{"name":"top"}}`,
		`[]`,
		`null`,
		`{"metadata":{"n\u0061me":"w","l\u0061bels":{"\u0078":"1"}},"kind":"K","apiVersion":"v"}`,
		"{\"metadata\":{\"name\":\"w\",\"labels\":{\"\xb8\":\"1\"}}}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := readStoredMetadata(data)
		if err != nil {
			// Left to a decoding.
			return
		}
		// What the codec decodes: a map, whose fields read must be there
		// as strings (or not at all).
		var decoded map[string]any
		if err := jsonutil.UnmarshalCaseSensitivePreserveInts(data, &decoded); err != nil {
			// Malformed past what was read: the first read's decoding
			// fails.
			return
		}
		metadata, _ := decoded["metadata"].(map[string]any)
		var labels map[string]string
		if l, ok := metadata["labels"].(map[string]any); ok {
			labels = map[string]string{}
			for k, v := range l {
				s, ok := v.(string)
				if !ok {
					t.Fatalf("%s: read the labels %v, but label %q decodes as %T", data, got.Labels, k, v)
				}
				labels[k] = s
			}
		}
		str := func(m map[string]any, field string) string {
			v, ok := m[field]
			if !ok {
				return ""
			}
			s, ok := v.(string)
			if !ok {
				t.Fatalf("%s: read %+v, but %s decodes as %T", data, got, field, v)
			}
			return s
		}
		want := storedMetadata{APIVersion: str(decoded, "apiVersion"), Kind: str(decoded, "kind"),
			Name: str(metadata, "name"), Namespace: str(metadata, "namespace"), Labels: labels}
		if got.APIVersion != want.APIVersion || got.Kind != want.Kind || got.Name != want.Name ||
			got.Namespace != want.Namespace || !maps.Equal(got.Labels, want.Labels) || (got.Labels == nil) != (want.Labels == nil) {
			t.Fatalf("%s: read %+v, decoded %+v", data, got, want)
		}
	})
}

// inParallel calls its function once for each item, whatever the count,
// and returns an error one of them returned.
func TestInParallel(t *testing.T) {
	for _, n := range []int{0, 1, parallelChunk - 1, parallelChunk, 2*parallelChunk + 1, 1000} {
		calls := make([]atomic.Int32, n)
		if err := inParallel(n, func(i int) error { calls[i].Add(1); return nil }); err != nil {
			t.Fatal(err)
		}
		for i := range calls {
			if c := calls[i].Load(); c != 1 {
				t.Fatalf("n=%d: item %d done %d times", n, i, c)
			}
		}
	}
	boom := errors.New("boom")
	if err := inParallel(1000, func(i int) error {
		if i == 700 {
			return boom
		}
		return nil
	}); err != boom {
		t.Errorf("inParallel returned %v, want the item's error", err)
	}
}

// Reads of one deferred object at once each get the object, and leave one
// compact encoding.
func TestDeferredObjectReadAtOnce(t *testing.T) {
	key := func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc("/widgets/", obj) }
	s := &Storage{
		config: Config{NewFunc: newUnstructured, KeyFunc: key, GetAttrsFunc: metadataAttrs(true), Codec: unstructured.UnstructuredJSONScheme},
		raw:    versionerOnly{}, storeCodec: unstructured.UnstructuredJSONScheme, attrsFromMetadata: true,
	}
	o, err := s.deferObject([]byte(`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"ns"},"spec":{"size":3}}`), "9", false)
	if err != nil {
		t.Fatal(err)
	}
	items := make([]Object, 64)
	for i := range items {
		items[i] = *o.DeepCopyObject().(*Object)
	}
	if err := inParallel(len(items), func(i int) error {
		obj := &unstructured.Unstructured{}
		if err := s.decode(&items[i], obj); err != nil {
			return err
		}
		if size, _, _ := unstructured.NestedInt64(obj.Object, "spec", "size"); size != 3 || obj.GetResourceVersion() != "9" {
			return fmt.Errorf("decoded %v", obj.Object)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !o.stored.form.Load().compact {
		t.Error("the reads left the object as stored")
	}
}
