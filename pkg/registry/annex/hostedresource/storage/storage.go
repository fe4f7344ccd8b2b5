// Package storage wires HostedResources to the generic registry store.
package storage

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/registry/annex/hostedresource"
	"annex.dev/annex/pkg/registry/status"
)

// REST is the storage of HostedResources.
type REST struct {
	*genericregistry.Store
}

var _ rest.ShortNamesProvider = &REST{}
var _ rest.CategoriesProvider = &REST{}

// ShortNames lets kubectl accept "hr".
func (*REST) ShortNames() []string { return []string{"hr"} }

// Categories lets "kubectl get annex" list HostedResources.
func (*REST) Categories() []string { return []string{"annex"} }

// NewREST returns the storage of the main resource and of its /status subresource.
func NewREST(scheme *runtime.Scheme, optsGetter generic.RESTOptionsGetter) (*REST, *status.REST, error) {
	strategy := hostedresource.NewStrategy(scheme)
	store := &genericregistry.Store{
		NewFunc:                   func() runtime.Object { return &annex.HostedResource{} },
		NewListFunc:               func() runtime.Object { return &annex.HostedResourceList{} },
		PredicateFunc:             hostedresource.Match,
		DefaultQualifiedResource:  annex.Resource("hostedresources"),
		SingularQualifiedResource: annex.Resource("hostedresource"),

		CreateStrategy:      strategy,
		UpdateStrategy:      strategy,
		DeleteStrategy:      strategy,
		ResetFieldsStrategy: strategy,

		TableConvertor: hostedresource.NewTableConvertor(),
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: optsGetter, AttrFunc: hostedresource.GetAttrs}); err != nil {
		return nil, nil, err
	}

	return &REST{store}, status.NewREST(store, hostedresource.NewStatusStrategy(strategy)), nil
}
