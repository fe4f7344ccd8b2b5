// Package storage wires standalone mode's namespaces to the generic registry
// store, with the kube-apiserver's two-phase delete on top.
package storage

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"
	storageerr "k8s.io/apiserver/pkg/storage/errors"
	"k8s.io/apiserver/pkg/util/dryrun"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"annex.dev/annex/pkg/registry/core/namespace"
	"annex.dev/annex/pkg/registry/status"
)

var resource = corev1.Resource("namespaces")

// REST is the storage of namespaces. It wraps the store rather than
// embedding it so that it offers no DeleteCollection, which would bypass the
// namespace's finalization.
type REST struct {
	store *genericregistry.Store
}

var (
	_ rest.Getter                 = &REST{}
	_ rest.Lister                 = &REST{}
	_ rest.Watcher                = &REST{}
	_ rest.Creater                = &REST{}
	_ rest.Updater                = &REST{}
	_ rest.GracefulDeleter        = &REST{}
	_ rest.ShortNamesProvider     = &REST{}
	_ rest.SingularNameProvider   = &REST{}
	_ rest.StorageVersionProvider = &REST{}
	_ rest.ResetFieldsStrategy    = &REST{}
	_ rest.TableConvertor         = &REST{}
)

// NewREST returns the storage of namespaces, of namespaces/status and of
// namespaces/finalize.
func NewREST(scheme *runtime.Scheme, optsGetter generic.RESTOptionsGetter) (*REST, *status.REST, *FinalizeREST, error) {
	strategy := namespace.NewStrategy(scheme)
	store := &genericregistry.Store{
		NewFunc:                   func() runtime.Object { return &corev1.Namespace{} },
		NewListFunc:               func() runtime.Object { return &corev1.NamespaceList{} },
		PredicateFunc:             namespace.Match,
		DefaultQualifiedResource:  resource,
		SingularQualifiedResource: corev1.Resource("namespace"),

		CreateStrategy:      strategy,
		UpdateStrategy:      strategy,
		DeleteStrategy:      strategy,
		ResetFieldsStrategy: strategy,
		ReturnDeletedObject: true,

		// An update that empties both kinds of finalizers of a namespace
		// being deleted removes it: that is how /finalize ends its life.
		ShouldDeleteDuringUpdate: shouldDeleteDuringUpdate,

		TableConvertor: namespace.NewTableConvertor(),
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: optsGetter, AttrFunc: namespace.GetAttrs}); err != nil {
		return nil, nil, nil, err
	}

	finalizeStore := *store
	finalizeStrategy := namespace.NewFinalizeStrategy(strategy)
	finalizeStore.UpdateStrategy = finalizeStrategy
	finalizeStore.ResetFieldsStrategy = finalizeStrategy

	return &REST{store: store},
		status.NewREST(store, namespace.NewStatusStrategy(strategy)),
		&FinalizeREST{store: &finalizeStore}, nil
}

func shouldDeleteDuringUpdate(ctx context.Context, key string, obj, existing runtime.Object) bool {
	ns, ok := obj.(*corev1.Namespace)
	return ok && len(ns.Spec.Finalizers) == 0 && genericregistry.ShouldDeleteDuringUpdate(ctx, key, obj, existing)
}

func (r *REST) New() runtime.Object     { return r.store.New() }
func (r *REST) NewList() runtime.Object { return r.store.NewList() }
func (r *REST) Destroy()                { r.store.Destroy() }
func (r *REST) NamespaceScoped() bool   { return false }

// GetSingularName returns "namespace".
func (r *REST) GetSingularName() string { return r.store.GetSingularName() }

// ShortNames lets kubectl accept "ns".
func (r *REST) ShortNames() []string { return []string{"ns"} }

// StorageVersion is the version namespaces are kept in.
func (r *REST) StorageVersion() runtime.GroupVersioner { return r.store.StorageVersion() }

// GetResetFields returns the fields server-side apply leaves to /status.
func (r *REST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

func (r *REST) ConvertToTable(ctx context.Context, obj runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	return r.store.ConvertToTable(ctx, obj, tableOptions)
}

func (r *REST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}

func (r *REST) List(ctx context.Context, options *metainternalversion.ListOptions) (runtime.Object, error) {
	return r.store.List(ctx, options)
}

func (r *REST) Watch(ctx context.Context, options *metainternalversion.ListOptions) (watch.Interface, error) {
	return r.store.Watch(ctx, options)
}

func (r *REST) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	return r.store.Create(ctx, obj, createValidation, options)
}

func (r *REST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, forceAllowCreate, options)
}

// Delete starts a namespace's termination: the first request sets its
// deletionTimestamp and the Terminating phase and returns it, and it stays
// until its spec.finalizers are removed through /finalize (the namespace
// controller does it once the namespace is empty). A namespace with no
// finalizers of either kind is removed at once.
//
// Delete options that ask for orphaning or foreground deletion add no
// finalizers: standalone mode runs no garbage collector to remove them.
func (r *REST) Delete(ctx context.Context, name string, deleteValidation rest.ValidateObjectFunc, options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	obj, err := r.store.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, false, err
	}
	ns := obj.(*corev1.Namespace)

	if options == nil {
		options = metav1.NewDeleteOptions(0)
	} else {
		options = options.DeepCopy()
	}
	// Pin the UID, so that a namespace deleted and created again in between
	// is left alone.
	if options.Preconditions == nil {
		options.Preconditions = &metav1.Preconditions{}
	}
	if uid := options.Preconditions.UID; uid == nil {
		options.Preconditions.UID = &ns.UID
	} else if *uid != ns.UID {
		return nil, false, apierrors.NewConflict(resource, name,
			fmt.Errorf("precondition failed: UID in precondition: %v, UID in object meta: %v", *uid, ns.UID))
	}
	if rv := options.Preconditions.ResourceVersion; rv != nil && *rv != ns.ResourceVersion {
		return nil, false, apierrors.NewConflict(resource, name,
			fmt.Errorf("precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *rv, ns.ResourceVersion))
	}

	if len(ns.Spec.Finalizers) == 0 && len(ns.Finalizers) == 0 {
		return r.store.Delete(ctx, name, deleteValidation, options)
	}
	if ns.DeletionTimestamp.IsZero() {
		return r.markTerminating(ctx, name, deleteValidation, options)
	}
	if len(ns.Spec.Finalizers) > 0 {
		// Already terminating: nothing to do until it is finalized.
		return ns, false, nil
	}
	// Only metadata.finalizers remain: the store waits for them.
	return r.store.Delete(ctx, name, deleteValidation, options)
}

func (r *REST) markTerminating(ctx context.Context, name string, deleteValidation rest.ValidateObjectFunc, options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	key, err := r.store.KeyFunc(ctx, name)
	if err != nil {
		return nil, false, err
	}
	preconditions := &storage.Preconditions{UID: options.Preconditions.UID, ResourceVersion: options.Preconditions.ResourceVersion}
	out := r.store.NewFunc()
	err = r.store.Storage.GuaranteedUpdate(ctx, key, out, false, preconditions,
		storage.SimpleUpdate(func(existing runtime.Object) (runtime.Object, error) {
			ns, ok := existing.(*corev1.Namespace)
			if !ok {
				return nil, fmt.Errorf("expected a Namespace, got %T", existing)
			}
			if err := deleteValidation(ctx, ns); err != nil {
				return nil, err
			}
			if ns.DeletionTimestamp.IsZero() {
				now := metav1.Now()
				ns.DeletionTimestamp = &now
			}
			ns.Status.Phase = corev1.NamespaceTerminating
			return ns, nil
		}),
		dryrun.IsDryRun(options.DryRun), nil)
	if err != nil {
		err = storageerr.InterpretGetError(err, resource, name)
		err = storageerr.InterpretUpdateError(err, resource, name)
		if _, ok := err.(apierrors.APIStatus); !ok {
			err = apierrors.NewInternalError(err)
		}
		return nil, false, err
	}
	return out, false, nil
}

// FinalizeREST is the storage of namespaces/finalize, which changes
// spec.finalizers and nothing else. It takes PUT only, as in Kubernetes.
type FinalizeREST struct {
	store *genericregistry.Store
}

var (
	_ rest.Updater             = &FinalizeREST{}
	_ rest.ResetFieldsStrategy = &FinalizeREST{}
)

// New returns an empty Namespace.
func (r *FinalizeREST) New() runtime.Object { return r.store.New() }

// Destroy does nothing: the main resource's store owns the storage.
func (r *FinalizeREST) Destroy() {}

// Update changes spec.finalizers. A subresource never creates its object.
func (r *FinalizeREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}

// GetResetFields returns the fields a finalize update leaves alone.
func (r *FinalizeREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}
