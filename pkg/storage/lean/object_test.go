package lean

import (
	"encoding/json"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/storage"
)

// newTestStorage is a Storage that only compacts and decodes: enough to
// check the round trip a custom resource makes through the cache.
func newTestStorage() *Storage {
	return &Storage{config: Config{
		Codec:   unstructured.UnstructuredJSONScheme,
		KeyFunc: func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc("/reports/", obj) },
		GetAttrsFunc: func(obj runtime.Object) (labels.Set, fields.Set, error) {
			u := obj.(*unstructured.Unstructured)
			return u.GetLabels(), fields.Set{"metadata.name": u.GetName(), "metadata.namespace": u.GetNamespace()}, nil
		},
		NewFunc: func() runtime.Object { return &unstructured.Unstructured{} },
	}, raw: versionerOnly{}}
}

type versionerOnly struct{ storage.Interface }

func (versionerOnly) Versioner() storage.Versioner { return storage.APIObjectVersioner{} }

// A custom resource comes out of the cache as it went in: the same JSON, with
// the resourceVersion the cache gives it.
func TestRoundTrip(t *testing.T) {
	s := newTestStorage()
	in := &unstructured.Unstructured{}
	if err := json.Unmarshal([]byte(`{"apiVersion":"reports.example.com/v1","kind":"Report",
		"metadata":{"name":"r1","namespace":"team-a","resourceVersion":"42","labels":{"tier":"gold"},
		  "managedFields":[{"manager":"kubectl","operation":"Apply","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:size":{}}}}]},
		"spec":{"size":3,"ratio":0.25,"tags":["a","b"],"nested":{"empty":{},"none":null}}}`), &in.Object); err != nil {
		t.Fatal(err)
	}
	o, err := s.compact(in)
	if err != nil {
		t.Fatal(err)
	}
	if o.key != "/reports/team-a/r1" || o.Name != "r1" || o.Namespace != "team-a" || o.ResourceVersion != "42" {
		t.Errorf("compact object %q %s/%s rv %s, want /reports/team-a/r1 team-a/r1 rv 42", o.key, o.Namespace, o.Name, o.ResourceVersion)
	}
	if o.labels["tier"] != "gold" || o.fields["metadata.name"] != "r1" {
		t.Errorf("compact object's labels %v and fields %v, want the object's", o.labels, o.fields)
	}

	// The cache sets the resourceVersion of what it serves.
	o.ResourceVersion = "43"
	out := &unstructured.Unstructured{}
	if err := s.decode(o, out); err != nil {
		t.Fatal(err)
	}
	in.SetResourceVersion("43")
	want, _ := json.Marshal(in.Object)
	got, _ := json.Marshal(out.Object)
	if string(got) != string(want) {
		t.Errorf("the object out of the cache:\n%s\nwant\n%s", got, want)
	}

	// Copies share the encoding and nothing that can change.
	c := o.DeepCopyObject().(*Object)
	c.ResourceVersion = "44"
	c.Annotations = map[string]string{"k8s.io/initial-events-end": "true"}
	if o.ResourceVersion != "43" || o.Annotations != nil {
		t.Errorf("changing a copy changed the cached object: rv %s, annotations %v", o.ResourceVersion, o.Annotations)
	}
	if &c.data[0] != &o.data[0] {
		t.Error("a copy copied the encoding; it is never changed, so copies share it")
	}
}

// An object that is not the cache's own is refused with a clear error,
// never a panic.
func TestForeignObjects(t *testing.T) {
	if _, err := objectKey(&unstructured.Unstructured{}); err == nil {
		t.Error("objectKey of an Unstructured: no error")
	}
	if _, _, err := objectAttrs(&unstructured.Unstructured{}); err == nil {
		t.Error("objectAttrs of an Unstructured: no error")
	}
	if err := (objectCodec{}).Encode(&unstructured.Unstructured{}, nil); err == nil {
		t.Error("the codec encoded an Unstructured")
	}
}
