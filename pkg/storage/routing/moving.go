package routing

import (
	"context"
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// MovedAway says that a CRD is being deleted to re-create its type on
// another StorageBackend: the hostedresource controller marks the CRD
// before it deletes it.
func MovedAway(crd *apiextensionsv1.CustomResourceDefinition) bool {
	_, marked := crd.Annotations[v1alpha1.MoveObservedAnnotation]
	return marked && crd.DeletionTimestamp != nil
}

// keepOnMove makes the storage of a type keep its objects when its CRD is
// deleted for a move. The apiextensions server's CRD finalizer deletes the
// objects of a deleted CRD through the type's storage, listing them first;
// for a CRD that MovedAway the list is empty and no object is deleted. The
// type had none when annex checked, but a replica that had not yet seen the
// move may have accepted one since: it stays in the old store, under the
// type's key prefix, and is served again if the type moves back.
//
// The finalizer runs on every replica, from the same informer as crds: a
// replica that sees the deletion sees the mark, which came before it.
func keepOnMove(decorator generic.StorageDecorator, crds func(name string) (*apiextensionsv1.CustomResourceDefinition, error),
	name string, uid types.UID, backend string) generic.StorageDecorator {
	return func(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(runtime.Object) (string, error),
		newFunc, newListFunc func() runtime.Object, getAttrsFunc storage.AttrFunc, triggerFuncs storage.IndexerFuncs,
		indexers *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
		s, destroy, err := decorator(config, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrsFunc, triggerFuncs, indexers)
		if err != nil {
			return s, destroy, err
		}
		moved := func() bool {
			crd, err := crds(name)
			return err == nil && crd.UID == uid && MovedAway(crd)
		}
		return keeping{Interface: s, moved: moved, name: name, backend: backend, prefix: config.Prefix}, destroy, nil
	}
}

// keeping is the storage of a type that keeps its objects once it moved away.
type keeping struct {
	storage.Interface
	moved                 func() bool
	name, backend, prefix string
}

func (s keeping) GetList(ctx context.Context, key string, opts storage.ListOptions, listObj runtime.Object) error {
	if err := s.Interface.GetList(ctx, key, opts, listObj); err != nil || !s.moved() {
		return err
	}
	if n := meta.LenList(listObj); n > 0 {
		klog.FromContext(ctx).Info("Keeping the objects written to a type's old StorageBackend while it moved; they are served again if the type moves back",
			"type", s.name, "storageBackend", s.backend, "keyPrefix", s.prefix, "objects", n)
	}
	return meta.SetList(listObj, nil)
}

func (s keeping) Delete(ctx context.Context, key string, out runtime.Object, preconditions *storage.Preconditions,
	validateDeletion storage.ValidateObjectFunc, cachedExistingObject runtime.Object, opts storage.DeleteOptions) error {
	if s.moved() {
		return storage.NewInternalError(fmt.Errorf("the type %s moved away from StorageBackend %q: annex keeps its objects there", s.name, s.backend))
	}
	return s.Interface.Delete(ctx, key, out, preconditions, validateDeletion, cachedExistingObject, opts)
}
