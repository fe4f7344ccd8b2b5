package dryrunsize

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/apiserver"
	"annex.dev/annex/pkg/storage/objectsize"
)

var parcels = schema.GroupVersionResource{Group: "example.com", Version: "v2", Resource: "parcels"}

// newTestPlugin returns the plugin with the storage codecs annex uses, and
// v1 as the storage version of every hosted type.
func newTestPlugin() *plugin {
	p := newPlugin(apiserver.Codecs.LegacyCodec(v1alpha1.SchemeGroupVersion))
	p.hostedCodec = hostedStorageEncoder()
	p.storageVersion = func(context.Context, schema.GroupResource) (string, error) { return "v1", nil }
	return p
}

// convertor converts a parcel from v2 to v1 as a type's conversion might:
// v1 spells the field of data with a longer name.
type convertor struct{ runtime.ObjectConvertor }

func (convertor) ConvertToVersion(in runtime.Object, gv runtime.GroupVersioner) (runtime.Object, error) {
	u := in.(*unstructured.Unstructured).DeepCopy()
	if gv != (schema.GroupVersion{Group: "example.com", Version: "v1"}) {
		return nil, fmt.Errorf("unexpected conversion to %v", gv)
	}
	data, _, _ := unstructured.NestedString(u.Object, "spec", "data")
	unstructured.RemoveNestedField(u.Object, "spec", "data")
	_ = unstructured.SetNestedField(u.Object, data, "spec", "longerNameOfData")
	u.SetAPIVersion("example.com/v1")
	return u, nil
}

type objectInterfaces struct{ admission.ObjectInterfaces }

func (objectInterfaces) GetObjectConvertor() runtime.ObjectConvertor { return convertor{} }

// parcel is a v2 parcel whose stored (v1) encoding is size bytes.
func parcel(t *testing.T, name string, size int) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v2", "kind": "Parcel",
		"metadata": map[string]any{"name": name, "namespace": "ns", "uid": "8d1d7cbb-0d5b-4b9e-9d5e-0d1f4b0c6e11"},
		"spec":     map[string]any{"data": ""},
	}}
	empty := stored(t, u)
	_ = unstructured.SetNestedField(u.Object, strings.Repeat("x", size-len(empty)), "spec", "data")
	if got := len(stored(t, u)); got != size {
		t.Fatalf("the parcel is %d bytes stored, want %d", got, size)
	}
	return u
}

// stored is the encoding of a v2 parcel that the store would write, found
// independently of the plugin: converted to v1, then JSON with a newline.
func stored(t *testing.T, u *unstructured.Unstructured) []byte {
	t.Helper()
	v1, err := convertor{}.ConvertToVersion(u, schema.GroupVersion{Group: "example.com", Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	unstructured.RemoveNestedField(v1.(*unstructured.Unstructured).Object, "metadata", "resourceVersion")
	data, err := runtime.Encode(unstructured.UnstructuredJSONScheme, v1)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func validate(p *plugin, obj, old runtime.Object, gvr schema.GroupVersionResource, subresource string, op admission.Operation, dryRun bool) error {
	var opts runtime.Object = &metav1.CreateOptions{}
	if op == admission.Update {
		opts = &metav1.UpdateOptions{}
	}
	a := admission.NewAttributesRecord(obj, old, schema.GroupVersionKind{}, "ns", "p", gvr, subresource, op, opts, dryRun, nil)
	return p.Validate(context.Background(), a, objectInterfaces{})
}

// wantRefused checks that err is the 413 a real write of size bytes gets.
func wantRefused(t *testing.T, what string, err error, size int) {
	t.Helper()
	want := fmt.Sprintf("Request entity too large: the object is %d bytes encoded, and annex stores objects of at most %d bytes", size, objectsize.MaxBytes)
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Code != http.StatusRequestEntityTooLarge ||
		status.Status().Reason != metav1.StatusReasonRequestEntityTooLarge || status.Status().Message != want {
		t.Errorf("%s: %v, want 413 %q", what, err, want)
	}
}

func TestHostedObjects(t *testing.T) {
	p := newTestPlugin()
	if err := p.ValidateInitialization(); err != nil {
		t.Fatal(err)
	}
	atLimit := parcel(t, "p", objectsize.MaxBytes)
	over := parcel(t, "p", objectsize.MaxBytes+1)

	if err := validate(p, atLimit, nil, parcels, "", admission.Create, true); err != nil {
		t.Errorf("a dry-run create of an object of exactly %d bytes stored: %v", objectsize.MaxBytes, err)
	}
	wantRefused(t, "a dry-run create one byte over", validate(p, over, nil, parcels, "", admission.Create, true), objectsize.MaxBytes+1)
	far := parcel(t, "p", 2_500_000)
	wantRefused(t, "a dry-run create far over", validate(p, far, nil, parcels, "", admission.Create, true), 2_500_000)

	// The size is the stored version's: the same object measured in the
	// request's version (v2, with a shorter field name) is under the limit.
	if n, err := runtime.Encode(unstructured.UnstructuredJSONScheme, over); err != nil || len(n) > objectsize.MaxBytes {
		t.Fatalf("the test's v2 parcel is %d bytes in v2 (%v), want it under the limit there", len(n), err)
	}

	// The resourceVersion is not stored, so not counted.
	withRV := atLimit.DeepCopy()
	withRV.SetResourceVersion("123456789")
	if err := validate(p, withRV, atLimit, parcels, "", admission.Update, true); err != nil {
		t.Errorf("a dry-run update at the limit, with a resourceVersion: %v", err)
	}

	// Updates, of the object and of its status.
	for _, subresource := range []string{"", "status"} {
		wantRefused(t, "a dry-run update of "+subresource+" one byte over",
			validate(p, over, atLimit, parcels, subresource, admission.Update, true), objectsize.MaxBytes+1)
	}
	// An update that stores nothing new is not written, so not refused,
	// even of an object stored over the limit before it existed.
	if err := validate(p, over, over.DeepCopy(), parcels, "", admission.Update, true); err != nil {
		t.Errorf("a dry-run update that changes nothing of an object over the limit: %v", err)
	}

	// Real writes are the store's to refuse.
	if err := validate(p, over, nil, parcels, "", admission.Create, false); err != nil {
		t.Errorf("a create that is not a dry run: %v, want it left to the store", err)
	}
	if err := validate(p, over, atLimit, parcels, "", admission.Update, false); err != nil {
		t.Errorf("an update that is not a dry run: %v, want it left to the store", err)
	}

	// The scale subresource changes a number: not measured.
	scale := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: autoscalingv1.ScaleSpec{Replicas: 3}}
	if err := validate(p, scale, scale, parcels, "scale", admission.Update, true); err != nil {
		t.Errorf("a dry-run update of scale: %v", err)
	}
}

func TestStorageVersionNotFound(t *testing.T) {
	p := newTestPlugin()
	p.storageVersion = func(context.Context, schema.GroupResource) (string, error) {
		return "", errors.New("not there")
	}
	err := validate(p, parcel(t, "p", 1000), nil, parcels, "", admission.Create, true)
	if !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), "not there") {
		t.Errorf("a dry run when the storage version cannot be found: %v, want a 500 saying why", err)
	}
}

func TestAnnexObjects(t *testing.T) {
	p := newTestPlugin()
	codec := apiserver.Codecs.LegacyCodec(v1alpha1.SchemeGroupVersion)
	backend := func(endpoints int) *annex.StorageBackend {
		sb := &annex.StorageBackend{ObjectMeta: metav1.ObjectMeta{Name: "big", ResourceVersion: "42"},
			Spec: annex.StorageBackendSpec{Etcd: &annex.EtcdStorage{}}}
		for i := range endpoints {
			sb.Spec.Etcd.Endpoints = append(sb.Spec.Etcd.Endpoints, fmt.Sprintf("https://etcd-%06d.example.com:2379", i))
		}
		return sb
	}
	size := func(sb *annex.StorageBackend) int {
		c := sb.DeepCopy()
		c.ResourceVersion = ""
		data, err := runtime.Encode(codec, c)
		if err != nil {
			t.Fatal(err)
		}
		return len(data)
	}
	backends := annex.Resource("storagebackends").WithVersion("v1alpha1")
	small, big := backend(10), backend(50_000)
	if err := validate(p, small, nil, backends, "", admission.Create, true); err != nil {
		t.Errorf("a dry-run create of a small StorageBackend: %v", err)
	}
	wantRefused(t, "a dry-run create of a StorageBackend over the limit", validate(p, big, nil, backends, "", admission.Create, true), size(big))
	wantRefused(t, "a dry-run update of a StorageBackend over the limit", validate(p, big, small, backends, "", admission.Update, true), size(big))
	if err := validate(p, big, nil, backends, "", admission.Create, false); err != nil {
		t.Errorf("a create that is not a dry run: %v, want it left to the store", err)
	}
}
