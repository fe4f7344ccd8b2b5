package lean

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/s2"

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
	if o.GetLabels()["tier"] != "gold" || o.fields["metadata.name"] != "r1" {
		t.Errorf("compact object's labels %v and fields %v, want the object's", o.GetLabels(), o.fields)
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
// its JSON or less, and comes back the same, even when the packer's
// dictionary holds nothing like it.
func TestCompression(t *testing.T) {
	s := newTestStorage()
	if _, err := s.compact(&unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Unlike",
		"metadata": map[string]any{"name": "first", "namespace": "elsewhere", "resourceVersion": "1"}, "data": strings.Repeat("0123456789", 20)}}); err != nil {
		t.Fatal(err)
	}
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

// testReport is report i of a type: the same fields as every other, with
// values of its own.
func testReport(i int) *unstructured.Unstructured {
	var results []any
	for r := range 8 {
		results = append(results, map[string]any{"policy": fmt.Sprintf("policy-%d", (i+r)%13), "rule": fmt.Sprintf("rule-%d", r),
			"result": []string{"pass", "fail", "warn"}[(i*r)%3], "severity": "low", "category": "Pod Security",
			"timestamp": map[string]any{"seconds": int64(1700000000 + i*37 + r), "nanos": int64(i * r)},
			"resources": []any{map[string]any{"kind": "Pod", "name": fmt.Sprintf("web-%d-%x", i, i*7919), "uid": fmt.Sprintf("%08x-7e5f-4a7b-8c9d-%012x", i*104729, i*r)}}})
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "reports.example.com/v1", "kind": "Report",
		"metadata": map[string]any{"name": fmt.Sprintf("report-%d", i), "namespace": fmt.Sprintf("team-%d", i%5), "resourceVersion": fmt.Sprint(100 + i),
			"uid": fmt.Sprintf("%08x-1c2d-4e5f-8a9b-%012x", i*15485863, i), "creationTimestamp": fmt.Sprintf("2026-12-01T10:%02d:%02dZ", i%60, (i*7)%60),
			"labels": map[string]any{"app.kubernetes.io/managed-by": "policy-engine", "scope.uid": fmt.Sprintf("%08x", i*31337)},
			"managedFields": []any{map[string]any{"manager": "policy-engine", "operation": "Update", "apiVersion": "reports.example.com/v1",
				"time": fmt.Sprintf("2026-12-01T10:%02d:%02dZ", i%60, (i*7)%60), "fieldsType": "FieldsV1",
				"fieldsV1": map[string]any{"f:metadata": map[string]any{"f:labels": map[string]any{".": map[string]any{}, "f:scope.uid": map[string]any{}}},
					"f:results": map[string]any{}, "f:summary": map[string]any{".": map[string]any{}, "f:pass": map[string]any{}, "f:fail": map[string]any{}}}}}},
		"results": results,
		"summary": map[string]any{"pass": int64(i % 8), "fail": int64(8 - i%8)},
	}}
}

// Reports of one type are compressed against a dictionary of the type,
// made of the first: each keeps less than half of what it keeps alone, and
// comes back the same.
func TestDictionary(t *testing.T) {
	s := newTestStorage()
	var alone, withDict, total int
	for i := range 50 {
		report := testReport(i)
		o, err := s.compact(report)
		if err != nil {
			t.Fatal(err)
		}
		encoded, _ := runtime.Encode(unstructured.UnstructuredJSONScheme, report)
		if o.data[0] != compressedDict {
			t.Fatalf("report %d was kept in form %d, want compressed with the dictionary", i, o.data[0])
		}
		if i > 0 {
			alone += len(s2.EncodeBetter(nil, encoded))
			withDict += len(o.data)
			total += len(encoded)
		}
		out := &unstructured.Unstructured{}
		if err := s.decode(o, out); err != nil {
			t.Fatal(err)
		}
		report.SetResourceVersion(o.ResourceVersion)
		if got, want := mustJSON(t, out), mustJSON(t, report); got != want {
			t.Fatalf("report %d out of the cache:\n%s\nwant\n%s", i, got, want)
		}
	}
	t.Logf("49 reports of %d bytes of JSON: %d bytes compressed alone, %d against the dictionary", total, alone, withDict)
	if withDict*2 > alone {
		t.Errorf("the reports keep %d bytes against the dictionary and %d alone, want under half", withDict, alone)
	}

	// What a packer without that dictionary cannot read is an error.
	var other packer
	if _, release, err := other.expand(s.packer.compress(mustEncode(t, testReport(1)))); err == nil {
		t.Error("a packer without the dictionary expanded what was compressed with it")
	} else {
		release()
	}
}

// A small first encoding makes no dictionary; the first large one does.
func TestDictionaryNeedsASample(t *testing.T) {
	var p packer
	small := []byte(`{"kind":"Tiny"}`)
	if data := p.compress(small); data[0] == compressedDict || p.dict.Load() != nil {
		t.Fatalf("a %d-byte encoding made the dictionary", len(small))
	}
	large := mustEncode(t, testReport(1))
	if data := p.compress(large); data[0] != compressedDict {
		t.Fatalf("a %d-byte encoding was kept in form %d, want compressed with the dictionary it made", len(large), data[0])
	}
	huge := []byte(`{"data":"` + strings.Repeat("abc", dictMaxSource/3) + `"}`)
	data := p.compress(huge)
	if data[0] != compressed {
		t.Errorf("a %d-byte encoding was kept in form %d, want compressed without the dictionary", len(huge), data[0])
	}
	got, release, err := p.expand(data)
	if err != nil || string(got) != string(huge) {
		t.Errorf("the %d-byte encoding came back as %d bytes, %v", len(huge), len(got), err)
	}
	release()
}

// Objects compacted at once while the dictionary is made all come back:
// whichever encoding made it, every other was compressed with that one.
func TestDictionaryMadeOnce(t *testing.T) {
	s := newTestStorage()
	objects := make([]*Object, 16)
	var wg sync.WaitGroup
	for i := range objects {
		wg.Go(func() {
			o, err := s.compact(testReport(i))
			if err != nil {
				t.Error(err)
				return
			}
			objects[i] = o
		})
	}
	wg.Wait()
	for i, o := range objects {
		if o == nil {
			continue
		}
		out := &unstructured.Unstructured{}
		if err := s.decode(o, out); err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
		want := testReport(i)
		want.SetResourceVersion(o.ResourceVersion)
		if got, want := mustJSON(t, out), mustJSON(t, want); got != want {
			t.Errorf("report %d out of the cache:\n%s\nwant\n%s", i, got, want)
		}
	}
}

func mustJSON(t *testing.T, u *unstructured.Unstructured) string {
	t.Helper()
	data, err := json.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func mustEncode(t *testing.T, u *unstructured.Unstructured) []byte {
	t.Helper()
	data, err := runtime.Encode(unstructured.UnstructuredJSONScheme, u)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Buffers reused between objects never reach what the cache keeps: an
// object stored as is, decoded, stays intact while others are compressed
// and decoded after it.
func TestBuffersStayApart(t *testing.T) {
	s := newTestStorage()
	// The first object makes the dictionary.
	if _, err := s.compact(&unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "First",
		"metadata": map[string]any{"name": "first", "namespace": "n", "resourceVersion": "1"}, "data": strings.Repeat("first", 40)}}); err != nil {
		t.Fatal(err)
	}
	// Random hex does not compress: this object is kept as is.
	noise := make([]byte, 4000)
	random := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(random.Uint32())
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
		if o.data[0] == stored {
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
