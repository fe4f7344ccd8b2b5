// Package core serves the legacy core group, /api/v1, in standalone mode:
// namespaces only, so that namespaced hosted resources work with no cluster
// and kubectl's discovery finds /api.
//
// annex has no internal core types. Scheme registers the versioned
// k8s.io/api/core/v1 types under both v1 and the internal version; a scheme
// asked to convert an object to a version it already knows the object's Go
// type under only sets the kind, so requests and storage convert nothing.
package core

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"

	"annex.dev/annex/pkg/registry/core/namespace"
	namespacestorage "annex.dev/annex/pkg/registry/core/namespace/storage"
)

var (
	// Scheme holds the core types annex serves, under v1 and the internal
	// version, and the meta types.
	Scheme = runtime.NewScheme()
	// Codecs encode and decode Scheme's types.
	Codecs = serializer.NewCodecFactory(Scheme)
	// OpenAPIScheme holds the same core types under v1 only. Give it to
	// openapi.NewDefinitionNamer so that their OpenAPI definitions carry
	// x-kubernetes-group-version-kind (server-side apply and kubectl explain
	// look models up by it); Scheme would add the internal version there too.
	OpenAPIScheme = runtime.NewScheme()
)

func init() {
	if err := addToScheme(Scheme); err != nil {
		panic(err)
	}
	OpenAPIScheme.AddKnownTypes(corev1.SchemeGroupVersion, &corev1.Namespace{}, &corev1.NamespaceList{})
}

func addToScheme(scheme *runtime.Scheme) error {
	for _, gv := range []schema.GroupVersion{corev1.SchemeGroupVersion, {Version: runtime.APIVersionInternal}} {
		scheme.AddKnownTypes(gv, &corev1.Namespace{}, &corev1.NamespaceList{})
	}
	metav1.AddToGroupVersion(scheme, corev1.SchemeGroupVersion)
	scheme.AddUnversionedTypes(schema.GroupVersion{Version: "v1"},
		&metav1.Status{},
		&metav1.APIVersions{},
		&metav1.APIGroupList{},
		&metav1.APIGroup{},
		&metav1.APIResourceList{},
	)
	scheme.AddTypeDefaultingFunc(&corev1.Namespace{}, namespace.SetDefaults)
	scheme.AddTypeDefaultingFunc(&corev1.NamespaceList{}, func(obj interface{}) {
		list := obj.(*corev1.NamespaceList)
		for i := range list.Items {
			namespace.SetDefaults(&list.Items[i])
		}
	})
	return scheme.AddFieldLabelConversionFunc(corev1.SchemeGroupVersion.WithKind("Namespace"), namespace.ConvertFieldLabel)
}

// InstallLegacyAPI serves /api/v1 with namespaces, namespaces/status and
// namespaces/finalize on server, stored through optsGetter.
func InstallLegacyAPI(server *genericapiserver.GenericAPIServer, optsGetter generic.RESTOptionsGetter) error {
	apiGroupInfo := genericapiserver.NewDefaultAPIGroupInfo(corev1.GroupName, Scheme, metav1.ParameterCodec, Codecs)
	namespaces, namespacesStatus, namespacesFinalize, err := namespacestorage.NewREST(Scheme, RESTOptionsGetter(optsGetter))
	if err != nil {
		return fmt.Errorf("creating the storage of namespaces: %w", err)
	}
	apiGroupInfo.VersionedResourcesStorageMap[corev1.SchemeGroupVersion.Version] = map[string]rest.Storage{
		"namespaces":          namespaces,
		"namespaces/status":   namespacesStatus,
		"namespaces/finalize": namespacesFinalize,
	}
	if err := server.InstallLegacyAPIGroup(genericapiserver.DefaultLegacyAPIPrefix, &apiGroupInfo); err != nil {
		return fmt.Errorf("installing the legacy core API group: %w", err)
	}
	return nil
}

// RESTOptionsGetter adapts a getter made for annex's own groups to the core
// types: their storage codec is Scheme's, writing v1 JSON, because annex's
// codec does not know core types. Garbage collection is off: standalone mode,
// the only one serving core types, runs no garbage collector to remove the
// orphan and foreground finalizers it would add.
func RESTOptionsGetter(delegate generic.RESTOptionsGetter) generic.RESTOptionsGetter {
	return restOptionsGetter{delegate}
}

type restOptionsGetter struct {
	delegate generic.RESTOptionsGetter
}

func (g restOptionsGetter) GetRESTOptions(resource schema.GroupResource, example runtime.Object) (generic.RESTOptions, error) {
	opts, err := g.delegate.GetRESTOptions(resource, example)
	if err != nil {
		return opts, err
	}
	storageConfig := *opts.StorageConfig
	storageConfig.Codec = Codecs.LegacyCodec(corev1.SchemeGroupVersion)
	storageConfig.EncodeVersioner = corev1.SchemeGroupVersion
	opts.StorageConfig = &storageConfig
	opts.EnableGarbageCollection = false
	return opts, nil
}
