package lean

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
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

	// Compression never costs more than a byte.
	if encoded, _ := runtime.Encode(unstructured.UnstructuredJSONScheme, in); len(o.data) > len(encoded)+1 {
		t.Errorf("the cache keeps %d bytes of a %d-byte object", len(o.data), len(encoded))
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

// A report, whose results repeat their field names, is kept in a third of
// its JSON or less, and comes back the same.
func TestCompression(t *testing.T) {
	s := newTestStorage()
	report := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "reports.example.com/v1", "kind": "Report",
		"metadata": map[string]any{"name": "r1", "namespace": "team-a", "resourceVersion": "7"},
	}}
	var results []any
	for i := range 8 {
		results = append(results, map[string]any{"policy": fmt.Sprintf("pol-%d", i), "rule": "r1", "result": "pass",
			"severity": "low", "category": "sec", "resources": []any{map[string]any{"kind": "Pod", "name": "web-1"}}})
	}
	report.Object["results"] = results
	o, err := s.compact(report)
	if err != nil {
		t.Fatal(err)
	}
	encoded, _ := json.Marshal(report.Object)
	if len(o.data)*3 > len(encoded) {
		t.Errorf("the cache keeps %d bytes of a %d-byte report, want a third or less", len(o.data), len(encoded))
	}
	out := &unstructured.Unstructured{}
	if err := s.decode(o, out); err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(out.Object); string(got) != string(encoded) {
		t.Errorf("the report out of the cache:\n%s\nwant\n%s", got, encoded)
	}
}

// Buffers reused between objects never reach what the cache keeps: an
// object stored as is, decoded, stays intact while others are compressed
// and decoded after it.
func TestBuffersStayApart(t *testing.T) {
	s := newTestStorage()
	// Random hex does not compress: this object is kept as is.
	noise := make([]byte, 200)
	for i := range noise {
		noise[i] = byte(i*7919 + i*i*104729)
	}
	incompressible := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Noise",
		"metadata": map[string]any{"name": "a", "namespace": "n", "resourceVersion": "1"}, "data": hex.EncodeToString(noise)}}
	kept, err := s.compact(incompressible)
	if err != nil {
		t.Fatal(err)
	}
	if kept.data[0] != stored {
		t.Fatalf("a %d-byte object was compressed; this test needs one kept as is", len(kept.data))
	}
	want := string(kept.data)
	for i := range 100 {
		out := &unstructured.Unstructured{}
		if err := s.decode(kept, out); err != nil {
			t.Fatal(err)
		}
		// Smaller once decoded than the kept object, and compressed.
		other := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Other",
			"metadata": map[string]any{"name": fmt.Sprintf("b%d", i), "namespace": "n", "resourceVersion": "2"},
			"data":     strings.Repeat("abcdefgh", 10+i%20)}}
		o, err := s.compact(other)
		if err != nil {
			t.Fatal(err)
		}
		if o.data[0] != compressed {
			t.Fatalf("a repetitive object was kept as is")
		}
		if err := s.decode(o, &unstructured.Unstructured{}); err != nil {
			t.Fatal(err)
		}
		if string(kept.data) != want {
			t.Fatalf("after %d other objects, the kept object changed", i+1)
		}
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
