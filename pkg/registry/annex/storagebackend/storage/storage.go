// Package storage wires StorageBackends to the generic registry store.
package storage

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/registry/annex/storagebackend"
	"annex.dev/annex/pkg/registry/status"
	"annex.dev/annex/pkg/storage/secretpolicy"
)

// REST is the storage of StorageBackends.
type REST struct {
	*genericregistry.Store
}

var _ rest.ShortNamesProvider = &REST{}
var _ rest.CategoriesProvider = &REST{}

// ShortNames lets kubectl accept "sb".
func (*REST) ShortNames() []string { return []string{"sb"} }

// Categories lets "kubectl get annex" list StorageBackends.
func (*REST) Categories() []string { return []string{"annex"} }

// NewREST returns the storage of the main resource and of its /status subresource.
// A StorageBackend that names a Secret policy refuses is refused with 422.
func NewREST(scheme *runtime.Scheme, optsGetter generic.RESTOptionsGetter, policy secretpolicy.Policy) (*REST, *status.REST, error) {
	strategy := storagebackend.NewStrategy(scheme, policy)
	store := &genericregistry.Store{
		NewFunc:                   func() runtime.Object { return &annex.StorageBackend{} },
		NewListFunc:               func() runtime.Object { return &annex.StorageBackendList{} },
		PredicateFunc:             storagebackend.Match,
		DefaultQualifiedResource:  annex.Resource("storagebackends"),
		SingularQualifiedResource: annex.Resource("storagebackend"),

		CreateStrategy:      strategy,
		UpdateStrategy:      strategy,
		DeleteStrategy:      strategy,
		ResetFieldsStrategy: strategy,

		TableConvertor: storagebackend.NewTableConvertor(),
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: optsGetter, AttrFunc: storagebackend.GetAttrs}); err != nil {
		return nil, nil, err
	}

	return &REST{store}, status.NewREST(store, storagebackend.NewStatusStrategy(strategy)), nil
}
