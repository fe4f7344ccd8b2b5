// Package routing sends the objects of each hosted type to the
// StorageBackend its HostedResource names.
//
// The binding of a type to a backend is recorded on its internal
// CustomResourceDefinition, in v1alpha1.StorageBackendAnnotation, when annex
// creates the CRD; the apiextensions server asks the Router for the type's
// storage with that CRD in its informer, so a type's storage is built on the
// backend it was created for and stays there for the CRD's life. Moving a
// type to another backend re-creates its CRD (annex does it only for a type
// with no objects); the Router refuses requests in between.
//
// Routing only maps a type to a backend: package backend opens and probes
// the backends themselves.
package routing

import (
	"errors"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionslisters "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/registry/generic"
	utilfeature "k8s.io/apiserver/pkg/util/feature"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	annexlisters "annex.dev/annex/pkg/generated/listers/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/backend"
	"annex.dev/annex/pkg/storage/lean"
	"annex.dev/annex/pkg/storage/objectsize"
	"annex.dev/annex/pkg/storage/unavailable"
)

// BackendOf is the StorageBackend a CRD is bound to.
func BackendOf(crd *apiextensionsv1.CustomResourceDefinition) string {
	if b := crd.Annotations[v1alpha1.StorageBackendAnnotation]; b != "" {
		return b
	}
	return annex.DefaultStorageBackend
}

// KeyPrefixOf is the key prefix of the objects of a CRD's type in its store:
// the one recorded on the CRD when annex created it, or legacy, the store's
// --etcd-prefix, for a CRD made before installs had prefixes of their own.
func KeyPrefixOf(crd *apiextensionsv1.CustomResourceDefinition, legacy string) string {
	if p := crd.Annotations[v1alpha1.StorageKeyPrefixAnnotation]; p != "" {
		return p
	}
	return legacy
}

// BackendOfHostedResource is the StorageBackend a HostedResource asks for.
func BackendOfHostedResource(hr *v1alpha1.HostedResource) string {
	if b := hr.Spec.Storage.Backend; b != "" {
		return b
	}
	return annex.DefaultStorageBackend
}

// Options configure a Router.
type Options struct {
	// Backends opens the backends; its default backend serves the types
	// bound to "default".
	Backends *backend.Factory
	// RetryInterval is the wait before a backend that failed to start is
	// tried again, doubled with each failure in a row;
	// DefaultRetryInterval when zero.
	RetryInterval time.Duration
	// ReuseWrittenObjects lets the creates and updates of a type kept lean
	// return the object they wrote instead of decoding it again, where that
	// gives the same object (reusableVersion).
	ReuseWrittenObjects bool
}

// Router is the RESTOptionsGetter of the hosted types: it returns the
// storage options of the backend each type is bound to, starting the
// backend's client (or, for PostgreSQL, an in-process kine) on first use.
type Router struct {
	opts Options

	// Set by SetListers before the server serves.
	crds     apiextensionslisters.CustomResourceDefinitionLister
	hrs      annexlisters.HostedResourceLister
	backends annexlisters.StorageBackendLister
	synced   func() bool

	// pool holds the StorageBackends' backends, opened on first use.
	pool *backend.Pool
	// lean knows the lean storage of the types kept lean.
	lean *lean.Registry
}

// New returns a Router whose default backend is the command-line store.
func New(opts Options) *Router {
	r := &Router{opts: opts, lean: lean.NewRegistry()}
	r.pool = backend.NewPool(opts.Backends, opts.RetryInterval, r.storageBackend)
	return r
}

// ErrStarting marks a backend, or annex's routing, that is still starting:
// the condition passes by itself.
var ErrStarting = backend.ErrStarting

// storageBackend reads a StorageBackend for the pool.
func (r *Router) storageBackend(name string) (*v1alpha1.StorageBackend, error) {
	if r.backends == nil {
		return nil, fmt.Errorf("annex is starting: StorageBackend %q is not known yet", name)
	}
	sb, err := r.backends.Get(name)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("StorageBackend %q does not exist", name)
	}
	return sb, err
}

// SetListers gives the Router what it reads: the CRDs of the apiextensions
// server's own informer (so that a CRD it asks storage for is always
// there), and annex.dev's HostedResources and StorageBackends. synced says
// whether the latter two have synced.
func (r *Router) SetListers(crds apiextensionslisters.CustomResourceDefinitionLister, hrs annexlisters.HostedResourceLister,
	backends annexlisters.StorageBackendLister, synced func() bool) {
	r.crds, r.hrs, r.backends, r.synced = crds, hrs, backends, synced
}

// Close closes every backend the Router opened. One still opening is
// left to the process's exit: a database that does not answer can hold
// kine's start for minutes.
func (r *Router) Close() { r.pool.Close() }

// GetRESTOptions returns the storage options of a hosted type. It never
// waits for a backend to start: the apiextensions server calls it under a
// lock that every hosted request takes.
func (r *Router) GetRESTOptions(gr schema.GroupResource, example runtime.Object) (generic.RESTOptions, error) {
	opts, err := r.restOptions(gr, example)
	if err != nil {
		return opts, err
	}
	// One limit on the size of an object, whichever backend keeps it; a
	// store that is unavailable answered alike whichever it is.
	opts.Decorator = unavailable.Decorate(objectsize.Decorate(opts.Decorator))
	// restOptions found the CRD.
	crd, err := r.crds.Get(gr.Resource + "." + gr.Group)
	if err != nil {
		return opts, err
	}
	opts.Decorator = keepOnMove(opts.Decorator, r.crds.Get, crd.Name, crd.UID, BackendOf(crd))
	return opts, nil
}

// restOptions are the storage options of a hosted type on its backend, with
// its cache.
func (r *Router) restOptions(gr schema.GroupResource, example runtime.Object) (generic.RESTOptions, error) {
	if r.crds == nil {
		return generic.RESTOptions{}, fmt.Errorf("annex is %w: the storage of %s is not known yet", ErrStarting, gr)
	}
	crd, err := r.crds.Get(gr.Resource + "." + gr.Group)
	if err != nil {
		return generic.RESTOptions{}, fmt.Errorf("finding the type of %s: %w", gr, err)
	}
	store, cache := r.opts.Backends.Default(), v1alpha1.StorageCache(crd.Annotations[v1alpha1.StorageCacheAnnotation])
	switch name := BackendOf(crd); {
	case name == annex.DefaultStorageBackend:
	case r.deletingOnMissingBackend(crd, name):
		// No watch cache: the deletion lists the type once and is done, and
		// a cache still filling would refuse that list and fail the
		// deletion's first attempt.
		cache = v1alpha1.StorageCacheNone
	default:
		if store, err = r.backendOf(name); err != nil {
			return generic.RESTOptions{}, err
		}
	}
	opts, err := store.GetRESTOptions(gr, example)
	if err == nil {
		// The backend's options are a copy per call, so the prefix is this
		// type's alone.
		opts.StorageConfig.Prefix = KeyPrefixOf(crd, opts.StorageConfig.Prefix)
	}
	switch cache {
	case v1alpha1.StorageCacheNone:
		opts.Decorator = generic.UndecoratedStorage
	case v1alpha1.StorageCacheLean:
		reuse := ""
		if r.opts.ReuseWrittenObjects {
			reuse = reusableVersion(crd)
		}
		opts.Decorator = r.lean.Decorator(crd.UID, crd.Generation, reuse)
	}
	return opts, err
}

// reusableVersion is the apiVersion of the objects of crd that its storage
// codec decodes back unchanged from their encoding, when a create or
// update request has decoded them: those of its stored version, when that
// version's schema sets no defaults, and none with CBOR on. Such an object
// is encoded as it is, and the decoding's coercion (metadata, pruning,
// nulls, defaults) has nothing left to do to it; the decoding can give
// other Go types for the same JSON numbers (int64 for a float64 1.0), the
// same in JSON but not in CBOR.
func reusableVersion(crd *apiextensionsv1.CustomResourceDefinition) string {
	if utilfeature.DefaultFeatureGate.Enabled(features.CBORServingAndStorage) {
		return ""
	}
	for _, v := range crd.Spec.Versions {
		if !v.Storage {
			continue
		}
		if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil || setsDefaults(v.Schema.OpenAPIV3Schema) {
			return ""
		}
		return crd.Spec.Group + "/" + v.Name
	}
	return ""
}

// setsDefaults says that a schema, or one under it, has a default.
func setsDefaults(s *apiextensionsv1.JSONSchemaProps) bool {
	if s == nil {
		return false
	}
	if s.Default != nil || setsDefaults(s.Not) {
		return true
	}
	for _, list := range [][]apiextensionsv1.JSONSchemaProps{s.AllOf, s.AnyOf, s.OneOf} {
		for i := range list {
			if setsDefaults(&list[i]) {
				return true
			}
		}
	}
	for _, m := range []map[string]apiextensionsv1.JSONSchemaProps{s.Properties, s.PatternProperties, s.Definitions} {
		for _, p := range m {
			if setsDefaults(&p) {
				return true
			}
		}
	}
	if s.Items != nil {
		if setsDefaults(s.Items.Schema) {
			return true
		}
		for i := range s.Items.JSONSchemas {
			if setsDefaults(&s.Items.JSONSchemas[i]) {
				return true
			}
		}
	}
	for _, b := range []*apiextensionsv1.JSONSchemaPropsOrBool{s.AdditionalProperties, s.AdditionalItems} {
		if b != nil && setsDefaults(b.Schema) {
			return true
		}
	}
	for _, d := range s.Dependencies {
		if setsDefaults(d.Schema) {
			return true
		}
	}
	return false
}

// Lean knows the lean storage of every version of the types kept lean.
func (r *Router) Lean() *lean.Registry { return r.lean }

// CRD returns the internal CRD of a hosted type, as the apiextensions
// server knows it.
func (r *Router) CRD(name string) (*apiextensionsv1.CustomResourceDefinition, error) {
	if r.crds == nil {
		return nil, fmt.Errorf("annex is %w: the type %s is not known yet", ErrStarting, name)
	}
	return r.crds.Get(name)
}

// deletingOnMissingBackend says that a type being deleted is bound to a
// StorageBackend that does not exist, so it never stored an object through
// annex. The apiextensions server deletes a type's objects before the type,
// through its storage; the default store's, empty for this type, lets the
// deletion finish instead of waiting for a backend that will not come.
func (r *Router) deletingOnMissingBackend(crd *apiextensionsv1.CustomResourceDefinition, name string) bool {
	if crd.DeletionTimestamp == nil || r.backends == nil {
		return false
	}
	_, err := r.backends.Get(name)
	return apierrors.IsNotFound(err)
}

// backendOf returns an opened backend, or starts opening it and says it is
// not ready yet.
func (r *Router) backendOf(name string) (backend.Backend, error) { return r.pool.Get(name) }

// Check says why requests for a hosted type cannot be served now, or nil.
// fromAnnex is true for annex's own requests (its controllers), which may
// read a type that is moving between backends.
func (r *Router) Check(group, resource string, fromAnnex bool) error {
	if r.crds == nil || r.synced == nil || !r.synced() {
		return fmt.Errorf("annex is %w and does not know the storage of %s.%s yet", ErrStarting, resource, group)
	}
	crd, err := r.crds.Get(resource + "." + group)
	if err != nil {
		// Not a hosted type: the request goes on, to a 404.
		return nil
	}
	bound := BackendOf(crd)
	owner := crd.Labels[v1alpha1.HostedResourceLabel]
	if owner != "" && !fromAnnex {
		if hr, err := r.hrs.Get(owner); err == nil {
			if want := BackendOfHostedResource(hr); want != bound {
				return fmt.Errorf("HostedResource %s moves from StorageBackend %q to %q: annex re-creates the type on %q once it has no objects, "+
					"and serves no requests meanwhile (see the HostedResource's status)", owner, bound, want, want)
			}
		}
	}
	if bound == annex.DefaultStorageBackend {
		return nil
	}
	sb, err := r.backends.Get(bound)
	if err != nil {
		return fmt.Errorf("StorageBackend %q, which holds the objects of %s.%s, does not exist", bound, resource, group)
	}
	// The requests of a type's users are told the state of its backend in
	// short: the details (hosts, users, databases, Secrets) are for
	// operators, in the StorageBackend's status and annex's log.
	if c := meta.FindStatusCondition(sb.Status.Conditions, v1alpha1.StorageBackendReady); c != nil && c.Status == "False" {
		return fmt.Errorf("StorageBackend %q, which holds the objects of %s.%s, is not ready (%s); its status says why", bound, resource, group, c.Reason)
	}
	_, err = r.backendOf(bound)
	var openErr *backend.OpenError
	if errors.As(err, &openErr) {
		state := "cannot be opened"
		if openErr.Unreachable() {
			state = "is unreachable"
		}
		return fmt.Errorf("StorageBackend %q, which holds the objects of %s.%s, %s (failed attempt %d in a row; the next one %s after it); "+
			"annex's log says why", bound, resource, group, state, openErr.Failures, openErr.RetryAfter)
	}
	return err
}
