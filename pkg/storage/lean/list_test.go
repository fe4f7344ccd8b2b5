package lean

import (
	"bytes"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
)

// A list written from the cache's encodings is byte for byte what the
// apiserver's JSON serializer writes for the same list decoded, with and
// without its streaming of collections, for pages with a continue token,
// a count of the items left, and none.
func TestEncodedListIsTheSerializersList(t *testing.T) {
	s := newTestStorage()
	kind := schema.GroupVersionKind{Group: "reports.example.com", Version: "v1", Kind: "ReportList"}
	remaining := int64(7)
	for _, tc := range []struct {
		name      string
		items     int
		continued string
		remaining *int64
	}{
		{"empty", 0, "", nil},
		{"one", 1, "", nil},
		{"a page", 3, "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTJ9", &remaining},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upstream := &unstructured.UnstructuredList{}
			upstream.SetGroupVersionKind(kind)
			upstream.SetResourceVersion("12")
			upstream.SetContinue(tc.continued)
			upstream.SetRemainingItemCount(tc.remaining)
			upstream.Items = []unstructured.Unstructured{}
			encoded := &EncodedList{s: s}
			encoded.list.SetGroupVersionKind(kind)
			encoded.list.SetResourceVersion("12")
			encoded.list.SetContinue(tc.continued)
			encoded.list.SetRemainingItemCount(tc.remaining)
			for i := range tc.items {
				item := unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "reports.example.com/v1", "kind": "Report",
					"metadata": map[string]any{"name": fmt.Sprintf("r%d", i), "namespace": "team-a", "resourceVersion": fmt.Sprint(10 + i),
						"labels": map[string]any{"app": "<web & db>"}},
					"spec": map[string]any{"size": int64(i), "ratio": 0.5, "note": "caf\u00e9 \u2028", "tags": []any{"a", nil, true}},
				}}
				upstream.Items = append(upstream.Items, item)
				o, err := s.compact(&item)
				if err != nil {
					t.Fatal(err)
				}
				encoded.items = append(encoded.items, *o)
			}
			var got bytes.Buffer
			if err := (JSONEncoder{}).Encode(encoded, &got); err != nil {
				t.Fatal(err)
			}
			for _, streaming := range []bool{true, false} {
				serializer := json.NewSerializerWithOptions(json.DefaultMetaFactory, nil, nil,
					json.SerializerOptions{StreamingCollectionsEncoding: streaming})
				want, err := runtime.Encode(serializer, upstream)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes(), want) {
					t.Errorf("streaming %v: the list from the cache's encodings is\n%s\nthe serializer writes\n%s", streaming, got.Bytes(), want)
				}
			}
		})
	}
}
