package kubectlannex

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// read returns every object of input with its position.
func read(t *testing.T, input string) ([]*unstructured.Unstructured, []string, error) {
	t.Helper()
	var objs []*unstructured.Unstructured
	var positions []string
	err := readObjects(strings.NewReader(input), func(obj *unstructured.Unstructured, pos position) error {
		objs = append(objs, obj)
		positions = append(positions, pos.String())
		return nil
	})
	return objs, positions, err
}

func TestReadObjectsOfAYAMLStream(t *testing.T) {
	objs, positions, err := read(t, `---
apiVersion: reports.example.com/v1
kind: PolicyReport
metadata: {name: a, namespace: team-a}
spec: {size: 9007199254740993}
---
# an empty document
---
apiVersion: v1
kind: List
items:
- apiVersion: reports.example.com/v1
  kind: PolicyReport
  metadata: {name: b}
- apiVersion: reports.example.com/v1
  kind: PolicyReport
  metadata: {name: c}
---
metadata: {name: no-kind}
`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.GetName())
	}
	if got, want := strings.Join(names, ","), "a,b,c,no-kind"; got != want {
		t.Fatalf("objects %s, want %s", got, want)
	}
	if got, want := strings.Join(positions, "; "), "document 1; document 3, item 1; document 3, item 2; document 4"; got != want {
		t.Errorf("positions %q, want %q", got, want)
	}
	// Integers stay exact.
	if size, _, _ := unstructured.NestedInt64(objs[0].Object, "spec", "size"); size != 9007199254740993 {
		t.Errorf("spec.size = %d, want 9007199254740993", size)
	}
}

func TestReadObjectsReportsTheBrokenDocument(t *testing.T) {
	_, _, err := read(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [unclosed\n")
	if err == nil || !strings.Contains(err.Error(), "document 2") {
		t.Errorf("reading a broken second document: error %v, want one naming document 2", err)
	}
	_, _, err = read(t, `{"apiVersion": "v1", "kind": "List", "items": [`)
	if err == nil {
		t.Errorf("reading a truncated JSON List succeeded")
	}
}

func TestClearServerFieldsKeepsWhatTheUserWrote(t *testing.T) {
	obj := &unstructured.Unstructured{}
	if err := json.Unmarshal([]byte(`{
		"apiVersion": "reports.example.com/v1", "kind": "PolicyReport",
		"metadata": {
			"name": "a", "namespace": "team-a", "uid": "u", "resourceVersion": "7", "generation": 3,
			"creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "m"}],
			"deletionTimestamp": "2026-01-02T00:00:00Z", "deletionGracePeriodSeconds": 0,
			"labels": {"team": "a"}, "annotations": {"note": "kept"}, "finalizers": ["example.com/f"],
			"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "o"}]
		},
		"spec": {"size": 1}, "status": {"phase": "Done"}
	}`), &obj.Object); err != nil {
		t.Fatal(err)
	}
	clearServerFields(obj)
	meta := obj.Object["metadata"].(map[string]any)
	for _, f := range serverFields {
		if _, ok := meta[f]; ok {
			t.Errorf("metadata.%s is still there", f)
		}
	}
	for _, f := range []string{"name", "namespace", "labels", "annotations", "finalizers", "ownerReferences"} {
		if _, ok := meta[f]; !ok {
			t.Errorf("metadata.%s was removed", f)
		}
	}
	if _, ok := obj.Object["status"]; !ok {
		t.Error("status was removed")
	}
}

// TestWritersOutputReadsBack writes objects in each format and reads them
// back as import does.
func TestWritersOutputReadsBack(t *testing.T) {
	for _, format := range []string{"yaml", "json"} {
		for _, n := range []int{0, 1, 3} {
			var buf bytes.Buffer
			w := newObjectWriter(format, &buf)
			for i := range n {
				obj := &unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "reports.example.com/v1", "kind": "PolicyReport",
					"metadata": map[string]any{"name": string(rune('a' + i))},
					"spec":     map[string]any{"size": int64(i)},
				}}
				if err := w.write(obj); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.close(); err != nil {
				t.Fatal(err)
			}
			if format == "json" && !json.Valid(buf.Bytes()) {
				t.Errorf("%s of %d objects is not valid JSON:\n%s", format, n, buf.String())
			}
			objs, _, err := read(t, buf.String())
			if err != nil {
				t.Fatalf("%s of %d objects: reading back: %v\n%s", format, n, err, buf.String())
			}
			if len(objs) != n {
				t.Errorf("%s of %d objects: read back %d:\n%s", format, n, len(objs), buf.String())
			}
			for i, o := range objs {
				if size, _, _ := unstructured.NestedInt64(o.Object, "spec", "size"); size != int64(i) || o.GetName() != string(rune('a'+i)) {
					t.Errorf("%s: object %d read back as %v", format, i, o.Object)
				}
			}
		}
	}
}
