package routing

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const storedWidget = `{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"ns","uid":"u-1",` +
	`"labels":{"app":"demo"},"managedFields":[{"manager":"m","operation":"Update"}]},"spec":{"size":3}}`

func TestRawCodecDecodesMetadataOnlyIntoPartialObjectMetadata(t *testing.T) {
	c := rawCodec{unstructured.UnstructuredJSONScheme}
	meta := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "left", Labels: map[string]string{"left": "over"}}}
	got, gvk, err := c.Decode([]byte(storedWidget), nil, meta)
	if err != nil {
		t.Fatal(err)
	}
	m := got.(*metav1.PartialObjectMetadata)
	if m != meta || m.Name != "w" || m.Namespace != "ns" || m.UID != "u-1" || m.Labels != nil || m.APIVersion != "example.com/v1" || m.Kind != "Widget" ||
		gvk == nil || gvk.Kind != "Widget" {
		t.Errorf("decoded %+v (kind %v), want w in ns with uid u-1 and nothing else", m, gvk)
	}
	if _, _, err := c.Decode([]byte(`{"metadata":`), nil, &metav1.PartialObjectMetadata{}); err == nil {
		t.Error("a truncated object decoded without an error")
	}
}

func TestRawCodecDecodesObjectsWhole(t *testing.T) {
	c := rawCodec{unstructured.UnstructuredJSONScheme}
	got, _, err := c.Decode([]byte(storedWidget), nil, &unstructured.Unstructured{})
	if err != nil {
		t.Fatal(err)
	}
	obj := got.(*unstructured.Unstructured)
	if size, _, _ := unstructured.NestedInt64(obj.Object, "spec", "size"); size != 3 || obj.GetLabels()["app"] != "demo" || len(obj.GetManagedFields()) != 1 {
		t.Errorf("decoded %v, want the whole object", obj.Object)
	}
}
