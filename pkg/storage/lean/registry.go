package lean

import (
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"
)

// Registry knows the lean storage of each version of each custom resource
// kept lean, so that requests can be answered from it without the
// upstream handler (see ListEncoded).
type Registry struct {
	mu       sync.RWMutex
	storages map[schema.GroupVersionResource]Registered
}

// Registered is the lean storage of one version of a resource, and the
// state of the resource's definition it was made for.
type Registered struct {
	Storage *Storage
	// UID and Generation are those of the CustomResourceDefinition the
	// storage was made for: a storage made for another generation
	// decodes with another schema.
	UID        types.UID
	Generation int64
	// ListKind is the kind of the version's lists.
	ListKind schema.GroupVersionKind
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{storages: map[schema.GroupVersionResource]Registered{}}
}

// Get returns the latest lean storage made for a version of a resource.
func (r *Registry) Get(gvr schema.GroupVersionResource) (Registered, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	reg, ok := r.storages[gvr]
	return reg, ok
}

// Storages returns every lean storage the registry knows.
func (r *Registry) Storages() []*Storage {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Storage, 0, len(r.storages))
	for _, reg := range r.storages {
		out = append(out, reg.Storage)
	}
	return out
}

// Decorator returns the storage decorator of a custom resource kept lean,
// for the definition with uid at generation: Decorator's storage, which
// the registry knows until it is destroyed. The creates and updates of
// objects of reuse, an apiVersion, when set, return the object they wrote
// instead of decoding it again (WriteMemo.ReuseWritten).
func (r *Registry) Decorator(uid types.UID, generation int64, reuse string) generic.StorageDecorator {
	return registering{r: r, uid: uid, generation: generation, reuse: reuse}.decorate
}

// registering decorates with the lean storage, and registers it.
type registering struct {
	r          *Registry
	uid        types.UID
	generation int64
	reuse      string
}

func (d registering) decorate(config *storagebackend.ConfigForResource, resourcePrefix string, keyFunc func(runtime.Object) (string, error),
	newFunc, newListFunc func() runtime.Object, getAttrsFunc storage.AttrFunc, _ storage.IndexerFuncs, _ *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
	s, destroy, err := decorate(config, resourcePrefix, keyFunc, newFunc, newListFunc, getAttrsFunc, d.reuse)
	if err != nil {
		return nil, nil, err
	}
	list, ok := newListFunc().(*unstructured.UnstructuredList)
	if !ok {
		return s, destroy, nil
	}
	listKind := list.GroupVersionKind()
	gvr := config.GroupResource.WithVersion(listKind.Version)
	r := d.r
	r.mu.Lock()
	r.storages[gvr] = Registered{Storage: s.(*Storage), UID: d.uid, Generation: d.generation, ListKind: listKind}
	r.mu.Unlock()
	return s, func() {
		r.mu.Lock()
		if reg, ok := r.storages[gvr]; ok && reg.Storage == s {
			delete(r.storages, gvr)
		}
		r.mu.Unlock()
		destroy()
	}, nil
}
