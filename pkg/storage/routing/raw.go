package routing

import (
	"encoding/json"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
)

// RawObjects is the store of one hosted type's objects, without its cache,
// admission or strategy: objects are written exactly as given, identity,
// timestamps and status included. Only the adoption of a cluster's CRD
// writes through it, to copy the cluster's objects as they are. Its codec is
// the one the type's storage encodes with below its conversion (the
// apiextensions server's), so an object given in the type's storage version
// is stored in the same bytes as if annex had written it.
type RawObjects struct {
	storage.Interface
	// Destroy closes the store's client.
	Destroy func()
	prefix  string
}

// Key is the key of an object of the type; namespace is empty for a
// cluster-scoped type.
func (o *RawObjects) Key(namespace, name string) string {
	if namespace == "" {
		return o.prefix + "/" + name
	}
	return o.prefix + "/" + namespace + "/" + name
}

// Prefix is the key below which the type's objects are.
func (o *RawObjects) Prefix() string { return o.prefix + "/" }

// RawObjects opens the store of the hosted type plural.group on its backend,
// with its key prefix. The caller destroys it.
func (r *Router) RawObjects(gr schema.GroupResource) (*RawObjects, error) {
	opts, err := r.restOptions(gr, nil)
	if err != nil {
		return nil, err
	}
	config := *opts.StorageConfig
	config.Codec = rawCodec{unstructured.UnstructuredJSONScheme}
	newFunc := func() runtime.Object { return &unstructured.Unstructured{} }
	newListFunc := func() runtime.Object { return &unstructured.UnstructuredList{} }
	prefix := "/" + strings.TrimPrefix(opts.ResourcePrefix, "/")
	s, destroy, err := generic.NewRawStorage(&config, newFunc, newListFunc, prefix)
	if err != nil {
		return nil, fmt.Errorf("opening the store of %s: %w", gr, err)
	}
	return &RawObjects{Interface: s, Destroy: destroy, prefix: prefix}, nil
}

// rawCodec is the type's codec, but for a PartialObjectMetadata, into which
// it decodes the object's name, namespace and uid only (the store sets its
// resourceVersion): a list of a type's metadata, as
// &metav1.PartialObjectMetadataList{}, then costs a fraction of a list of
// its objects.
type rawCodec struct{ runtime.Codec }

func (c rawCodec) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	meta, ok := into.(*metav1.PartialObjectMetadata)
	if !ok {
		return c.Codec.Decode(data, defaults, into)
	}
	var obj struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string    `json:"name"`
			Namespace string    `json:"namespace"`
			UID       types.UID `json:"uid"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, nil, fmt.Errorf("decoding the metadata of a stored object: %w", err)
	}
	*meta = metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: obj.Metadata.Name, Namespace: obj.Metadata.Namespace, UID: obj.Metadata.UID}}
	gvk := schema.FromAPIVersionAndKind(obj.APIVersion, obj.Kind)
	meta.SetGroupVersionKind(gvk)
	return meta, &gvk, nil
}
