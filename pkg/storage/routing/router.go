// Package routing sends the objects of each hosted type to the
// StorageBackend its HostedResource names.
//
// The binding of a type to a backend is recorded on its internal
// CustomResourceDefinition, in the BackendAnnotation, when annex creates the
// CRD; the apiextensions server asks the Router for the type's storage with
// that CRD in its informer, so a type's storage is built on the backend it
// was created for and stays there for the CRD's life. Moving a type to
// another backend re-creates its CRD (annex does it only for a type with no
// objects); the Router refuses requests in between.
//
// Routing only maps a type to a backend: package backend opens and probes
// the backends themselves.
package routing

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionslisters "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	annexlisters "annex.dev/annex/pkg/generated/listers/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/backend"
)

// BackendAnnotation on an internal CRD names the StorageBackend that holds
// the type's objects. A CRD without it lives on the default backend.
const BackendAnnotation = "annex.dev/storage-backend"

// OwnerLabel on an internal CRD names the HostedResource that declares it.
const OwnerLabel = "annex.dev/hosted-resource"

// BackendOf is the StorageBackend a CRD is bound to.
func BackendOf(crd *apiextensionsv1.CustomResourceDefinition) string {
	if b := crd.Annotations[BackendAnnotation]; b != "" {
		return b
	}
	return annex.DefaultStorageBackend
}

// BackendOfHostedResource is the StorageBackend a HostedResource asks for.
func BackendOfHostedResource(hr *v1alpha1.HostedResource) string {
	if b := hr.Spec.Storage.Backend; b != "" {
		return b
	}
	return annex.DefaultStorageBackend
}

// ErrStarting marks a backend, or annex's routing, that is still starting:
// the condition passes by itself.
var ErrStarting = errors.New("starting")

// DefaultRetryInterval is how long a backend that failed to start is
// reported as failed before the next attempt; the wait doubles with each
// failure in a row, up to maxRetryInterval.
const DefaultRetryInterval = 10 * time.Second

// maxRetryInterval bounds the wait between two attempts to start a backend
// (unless the first wait is already longer).
const maxRetryInterval = 2 * time.Minute

// Options configure a Router.
type Options struct {
	// Backends opens the backends; its default backend serves the types
	// bound to "default".
	Backends *backend.Factory
	// RetryInterval is the wait before a backend that failed to start is
	// tried again, doubled with each failure in a row;
	// DefaultRetryInterval when zero.
	RetryInterval time.Duration
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

	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	runtimes map[string]*backendRuntime
}

// backendRuntime is a started (or starting, or failed) non-default backend.
type backendRuntime struct {
	// Set once, when starting ends.
	done    chan struct{}
	backend backend.Backend
	err     error
	ended   time.Time
	// failures counts the failed attempts in a row, this one included;
	// retryAfter is the wait before the next.
	failures   int
	retryAfter time.Duration
}

func (b *backendRuntime) state() (starting bool, opened backend.Backend, err error) {
	select {
	case <-b.done:
		return false, b.backend, b.err
	default:
		return true, nil, nil
	}
}

// New returns a Router whose default backend is the command-line store.
func New(opts Options) *Router {
	ctx, cancel := context.WithCancel(context.Background())
	return &Router{
		opts:     opts,
		ctx:      ctx,
		cancel:   cancel,
		runtimes: map[string]*backendRuntime{},
	}
}

// SetListers gives the Router what it reads: the CRDs of the apiextensions
// server's own informer (so that a CRD it asks storage for is always
// there), and annex.dev's HostedResources and StorageBackends. synced says
// whether the latter two have synced.
func (r *Router) SetListers(crds apiextensionslisters.CustomResourceDefinitionLister, hrs annexlisters.HostedResourceLister,
	backends annexlisters.StorageBackendLister, synced func() bool) {
	r.crds, r.hrs, r.backends, r.synced = crds, hrs, backends, synced
}

// Close stops every backend the Router started. One still starting is
// left to the process's exit: a database that does not answer can hold
// kine's start for minutes.
func (r *Router) Close() {
	r.cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.runtimes {
		if starting, opened, _ := b.state(); !starting && opened != nil {
			opened.Close()
		}
	}
}

// GetRESTOptions returns the storage options of a hosted type. It never
// waits for a backend to start: the apiextensions server calls it under a
// lock that every hosted request takes.
func (r *Router) GetRESTOptions(gr schema.GroupResource, example runtime.Object) (generic.RESTOptions, error) {
	if r.crds == nil {
		return generic.RESTOptions{}, fmt.Errorf("annex is %w: the storage of %s is not known yet", ErrStarting, gr)
	}
	crd, err := r.crds.Get(gr.Resource + "." + gr.Group)
	if err != nil {
		return generic.RESTOptions{}, fmt.Errorf("finding the type of %s: %w", gr, err)
	}
	name := BackendOf(crd)
	if name == annex.DefaultStorageBackend || r.deletingOnMissingBackend(crd, name) {
		return r.opts.Backends.Default().GetRESTOptions(gr, example)
	}
	opened, err := r.backendOf(name)
	if err != nil {
		return generic.RESTOptions{}, err
	}
	return opened.GetRESTOptions(gr, example)
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

// backendOf returns a started backend, or starts it and says it is not
// ready yet.
func (r *Router) backendOf(name string) (backend.Backend, error) {
	b := r.runtime(name)
	starting, opened, err := b.state()
	switch {
	case starting:
		return nil, fmt.Errorf("annex is connecting to StorageBackend %q (%w)", name, ErrStarting)
	case err != nil:
		return nil, err
	}
	return opened, nil
}

// runtime returns the backend's runtime, starting it if it never started or
// if it failed long enough ago. A backend that cannot be reached fails on its
// own (its types answer 503 with the reason) and is tried again with
// exponential backoff; nothing about it may take the process down.
func (r *Router) runtime(name string) *backendRuntime {
	r.mu.Lock()
	defer r.mu.Unlock()
	failures := 0
	if b, ok := r.runtimes[name]; ok {
		starting, _, err := b.state()
		if starting || err == nil || time.Since(b.ended) < b.retryAfter {
			return b
		}
		failures = b.failures
	}
	b := &backendRuntime{done: make(chan struct{})}
	r.runtimes[name] = b
	go func() {
		defer close(b.done)
		b.backend, b.err = r.startSafely(name)
		b.ended = time.Now()
		logger := klog.FromContext(r.ctx)
		if b.err != nil {
			b.failures = failures + 1
			b.retryAfter = r.retryInterval(b.failures)
			logger.Error(b.err, "Cannot start a storage backend", "storageBackend", name, "failures", b.failures, "retryAfter", b.retryAfter)
			b.err = fmt.Errorf("%w (failed attempt %d in a row, at %s; annex tries again %s later)", b.err, b.failures,
				b.ended.UTC().Format(time.RFC3339), b.retryAfter)
		} else {
			logger.Info("Started a storage backend", "storageBackend", name)
		}
	}()
	return b
}

// retryInterval is the wait after the given number of failures in a row.
func (r *Router) retryInterval(failures int) time.Duration {
	base := r.opts.RetryInterval
	if base <= 0 {
		base = DefaultRetryInterval
	}
	limit := max(maxRetryInterval, base)
	d := base
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// startSafely is start, with a panic while starting turned into the
// backend's failure: the storage libraries annex embeds run their start in
// this goroutine, and a backend must not take annex down.
func (r *Router) startSafely(name string) (opened backend.Backend, err error) {
	defer func() {
		if p := recover(); p != nil {
			opened = nil
			err = fmt.Errorf("StorageBackend %q: starting its storage failed: %v", name, p)
		}
	}()
	return r.start(r.ctx, name)
}

// start opens a backend from its StorageBackend.
func (r *Router) start(ctx context.Context, name string) (backend.Backend, error) {
	if r.backends == nil {
		return nil, fmt.Errorf("annex is starting: StorageBackend %q is not known yet", name)
	}
	sb, err := r.backends.Get(name)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("StorageBackend %q does not exist", name)
		}
		return nil, err
	}
	return r.opts.Backends.Open(ctx, sb)
}

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
	owner := crd.Labels[OwnerLabel]
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
	if c := meta.FindStatusCondition(sb.Status.Conditions, annex.StorageBackendReady); c != nil && c.Status == "False" {
		return fmt.Errorf("StorageBackend %q, which holds the objects of %s.%s, is not ready (%s): %s", bound, resource, group, c.Reason, c.Message)
	}
	_, err = r.backendOf(bound)
	return err
}
