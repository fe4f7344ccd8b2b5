package routing

import (
	"context"
	"errors"

	"k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// HasObjects says whether the type of an internal CRD has at least one
// object, in any namespace, in the backend it is bound to; objects reaches
// annex itself (loopback), whose requests pass the backend check even while
// the type moves.
func HasObjects(ctx context.Context, objects metadata.Interface, crd *apiextensionsv1.CustomResourceDefinition) (bool, error) {
	if backend := BackendOf(crd); backend != annex.DefaultStorageBackend {
		// A type bound to a StorageBackend that does not exist (a name
		// mistyped in its HostedResource, say) never stored an object
		// through annex; its objects would stay in that store otherwise.
		_, err := objects.Resource(v1alpha1.SchemeGroupVersion.WithResource("storagebackends")).Get(ctx, backend, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
	version := ServedVersion(crd.Spec.Versions)
	if version == "" {
		return false, errors.New("the type serves no version to list its objects with")
	}
	gvr := schema.GroupVersionResource{Group: crd.Spec.Group, Version: version, Resource: crd.Spec.Names.Plural}
	list, err := objects.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
	if apierrors.IsNotFound(err) && !apihelpers.IsCRDConditionTrue(crd, apiextensionsv1.Established) {
		// Never served, so nothing was ever stored.
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return len(list.Items) > 0, nil
}

// ServedVersion is the storage version if it is served, else the first
// served one: the version to list a type's objects with; "" if none is served.
func ServedVersion(versions []apiextensionsv1.CustomResourceDefinitionVersion) string {
	served := ""
	for _, v := range versions {
		if !v.Served {
			continue
		}
		if v.Storage {
			return v.Name
		}
		if served == "" {
			served = v.Name
		}
	}
	return served
}
