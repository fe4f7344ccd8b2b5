package core

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage/storagebackend"
)

// TestNoConversion checks that the internal version is the v1 Go type, so
// the request chain and the storage convert nothing.
func TestNoConversion(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}}
	internal, err := Scheme.ConvertToVersion(ns, schema.GroupVersion{Version: runtime.APIVersionInternal})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := internal.(*corev1.Namespace); !ok {
		t.Fatalf("internal version is %T", internal)
	}
	obj, err := Scheme.New(schema.GroupVersionKind{Version: runtime.APIVersionInternal, Kind: "Namespace"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := obj.(*corev1.Namespace); !ok {
		t.Fatalf("Scheme.New of the internal kind is %T", obj)
	}
}

// TestRESTOptionsGetter checks that the storage codec writes v1 JSON whatever
// codec the wrapped getter had.
func TestRESTOptionsGetter(t *testing.T) {
	config := storagebackend.NewDefaultConfig("/annex", nil)
	resource := corev1.Resource("namespaces")
	opts, err := RESTOptionsGetter(generic.RESTOptions{StorageConfig: config.ForResource(resource), EnableGarbageCollection: true}).
		GetRESTOptions(resource, &corev1.Namespace{})
	if err != nil {
		t.Fatal(err)
	}
	if opts.EnableGarbageCollection {
		t.Error("garbage collection is on")
	}
	if config.Codec != nil {
		t.Error("the wrapped getter's config was changed")
	}
	var buf bytes.Buffer
	if err := opts.StorageConfig.Codec.Encode(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, &buf); err != nil {
		t.Fatal(err)
	}
	if s := buf.String(); !strings.Contains(s, `"apiVersion":"v1"`) || !strings.Contains(s, `"kind":"Namespace"`) {
		t.Errorf("encoded: %s", s)
	}
	decoded, _, err := opts.StorageConfig.Codec.Decode(buf.Bytes(), nil, &corev1.Namespace{})
	if err != nil {
		t.Fatal(err)
	}
	if ns := decoded.(*corev1.Namespace); ns.Name != "a" || ns.Status.Phase != corev1.NamespaceActive {
		t.Errorf("decoded %+v; want name a, defaulted to Active", ns)
	}
	if gvk := opts.StorageConfig.EncodeVersioner; gvk != corev1.SchemeGroupVersion {
		t.Errorf("EncodeVersioner = %v", gvk)
	}
}
