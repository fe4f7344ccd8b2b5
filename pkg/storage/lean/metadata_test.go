package lean

import (
	"encoding/json"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The metadata read from an object's encoding is what the upstream handler
// makes of the decoded object, field for field.
func TestReadObjectMetaIsTheDecodedObjects(t *testing.T) {
	s := newTestStorage()
	full := testReport(7)
	m := full.Object["metadata"].(map[string]any)
	m["annotations"] = map[string]any{"note": "caf\u00e9 \u2028 <b>"}
	m["finalizers"] = []any{"example.com/keep"}
	m["ownerReferences"] = []any{map[string]any{"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "0b1c", "controller": true}}
	m["deletionTimestamp"] = "2026-12-01T11:00:00Z"
	m["deletionGracePeriodSeconds"] = int64(0)
	m["generation"] = int64(3)
	m["generateName"] = "report-"
	for _, obj := range []*unstructured.Unstructured{testReport(1), full, {Object: map[string]any{
		"apiVersion": "v1", "kind": "Bare", "metadata": map[string]any{"name": "bare", "resourceVersion": "9"}}}} {
		o, err := s.compact(obj)
		if err != nil {
			t.Fatal(err)
		}
		o.ResourceVersion = "12345"
		var got metav1.ObjectMeta
		if err := s.readObjectMeta(o, &got); err != nil {
			t.Fatal(err)
		}
		decoded := &unstructured.Unstructured{}
		if err := s.decode(o, decoded); err != nil {
			t.Fatal(err)
		}
		accessor, err := meta.Accessor(decoded)
		if err != nil {
			t.Fatal(err)
		}
		want := meta.AsPartialObjectMetadata(accessor).ObjectMeta
		gotJSON, _ := json.Marshal(got)
		wantJSON, _ := json.Marshal(want)
		if string(gotJSON) != string(wantJSON) {
			t.Errorf("%s: metadata read\n%s\nwant, as from the decoded object\n%s", obj.GetName(), gotJSON, wantJSON)
		}
	}
}

func TestMetadataOf(t *testing.T) {
	for _, tc := range []struct {
		name, json, want string
	}{
		{"first", `{"metadata":{"name":"a"},"spec":{"x":[1,2]}}`, `{"name":"a"}`},
		{"after other fields", `{"apiVersion":"v1","kind":"K","metadata":{"name":"a","labels":{"k":"v"}},"z":1}`, `{"name":"a","labels":{"k":"v"}}`},
		{"nested metadata is not it", `{"spec":{"metadata":{"name":"inner"}},"metadata":{"name":"outer"}}`, `{"name":"outer"}`},
		{"none", `{"spec":{}}`, ""},
		{"not an object", `{"metadata":"x"}`, ""},
		{"not JSON", `[1]`, ""},
	} {
		got, err := metadataOf([]byte(tc.json))
		if tc.want == "" {
			if err == nil {
				t.Errorf("%s: %s gave %s, want an error", tc.name, tc.json, got)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: %s gave %s, %v; want %s", tc.name, tc.json, got, err, tc.want)
		}
	}
}
