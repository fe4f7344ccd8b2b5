package routing

import (
	"slices"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// BackendUsers names, sorted, the HostedResources that keep objects in
// StorageBackend name, or may: those that name it, and those whose type is
// still bound to it (a type being moved away, or being deleted, whose CRD
// still exists).
func BackendUsers(name string, hrs []v1alpha1.HostedResource, crds []apiextensionsv1.CustomResourceDefinition) []string {
	var users []string
	for i := range hrs {
		if BackendOfHostedResource(&hrs[i]) == name {
			users = append(users, hrs[i].Name)
		}
	}
	for i := range crds {
		if owner := crds[i].Labels[v1alpha1.HostedResourceLabel]; owner != "" && BackendOf(&crds[i]) == name {
			users = append(users, owner)
		}
	}
	slices.Sort(users)
	return slices.Compact(users)
}
