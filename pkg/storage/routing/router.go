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
package routing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionslisters "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	apiextensionsoptions "k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	storagevalue "k8s.io/apiserver/pkg/storage/value"
	flowcontrolrequest "k8s.io/apiserver/pkg/util/flowcontrol/request"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	annexlisters "annex.dev/annex/pkg/generated/listers/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/postgres"
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
	// Etcd are the options of the command-line store, complete (its
	// ServerList is set): every backend's storage is configured like it,
	// with its own transport.
	Etcd                 genericoptions.EtcdOptions
	ResourceTransformers storagevalue.ResourceTransformers
	Tracker              flowcontrolrequest.StorageObjectCountTracker
	// EmbeddedDefault says that the command-line store is annex's embedded
	// etcd, which an Embedded StorageBackend names.
	EmbeddedDefault bool
	// DataDir holds the client certificates of etcd backends and the
	// sockets of PostgreSQL backends.
	DataDir string
	// PostgresCompactInterval is how often PostgreSQL backends are compacted.
	PostgresCompactInterval time.Duration
	// PostgresConnectTimeout bounds the first connection to a PostgreSQL
	// backend's database when it starts; postgres.DefaultConnectTimeout
	// when zero.
	PostgresConnectTimeout time.Duration
	// PostgresStartTimeout bounds the start of kine on a PostgreSQL
	// backend's database; postgres.DefaultStartTimeout when zero.
	PostgresStartTimeout time.Duration
	// RetryInterval is the wait before a backend that failed to start is
	// tried again, doubled with each failure in a row;
	// DefaultRetryInterval when zero.
	RetryInterval time.Duration
	// MetricsRegisterer receives the database metrics of PostgreSQL
	// backends, labelled with the backend's name; nil for none.
	MetricsRegisterer prometheus.Registerer
	// Secrets reads a Secret of the cluster; nil when there is no cluster.
	Secrets func(ctx context.Context, namespace, name string) (*corev1.Secret, error)
}

// Router is the RESTOptionsGetter of the hosted types: it returns the
// storage options of the backend each type is bound to, starting the
// backend's client (or, for PostgreSQL, an in-process kine) on first use.
type Router struct {
	opts          Options
	defaultGetter generic.RESTOptionsGetter

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
	done   chan struct{}
	getter generic.RESTOptionsGetter
	err    error
	ended  time.Time
	close  func()
	// failures counts the failed attempts in a row, this one included;
	// retryAfter is the wait before the next.
	failures   int
	retryAfter time.Duration
}

func (b *backendRuntime) state() (starting bool, getter generic.RESTOptionsGetter, err error) {
	select {
	case <-b.done:
		return false, b.getter, b.err
	default:
		return true, nil, nil
	}
}

// New returns a Router whose default backend is the command-line store.
func New(opts Options) *Router {
	ctx, cancel := context.WithCancel(context.Background())
	return &Router{
		opts:          opts,
		defaultGetter: apiextensionsoptions.NewCRDRESTOptionsGetter(opts.Etcd, opts.ResourceTransformers, opts.Tracker),
		ctx:           ctx,
		cancel:        cancel,
		runtimes:      map[string]*backendRuntime{},
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
		if starting, _, _ := b.state(); !starting && b.close != nil {
			b.close()
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
		return r.defaultGetter.GetRESTOptions(gr, example)
	}
	getter, err := r.backendGetter(name)
	if err != nil {
		return generic.RESTOptions{}, err
	}
	return getter.GetRESTOptions(gr, example)
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

// backendGetter returns the RESTOptionsGetter of a started backend, or
// starts it and says it is not ready yet.
func (r *Router) backendGetter(name string) (generic.RESTOptionsGetter, error) {
	b := r.runtime(name)
	starting, getter, err := b.state()
	switch {
	case starting:
		return nil, fmt.Errorf("annex is connecting to StorageBackend %q (%w)", name, ErrStarting)
	case err != nil:
		return nil, err
	}
	return getter, nil
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
		b.getter, b.close, b.err = r.startSafely(name)
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
func (r *Router) startSafely(name string) (getter generic.RESTOptionsGetter, closer func(), err error) {
	defer func() {
		if p := recover(); p != nil {
			getter, closer = nil, nil
			err = fmt.Errorf("StorageBackend %q: starting its storage failed: %v", name, p)
		}
	}()
	return r.start(r.ctx, name)
}

// start builds a backend's storage options from its StorageBackend.
func (r *Router) start(ctx context.Context, name string) (generic.RESTOptionsGetter, func(), error) {
	if r.backends == nil {
		return nil, nil, fmt.Errorf("annex is starting: StorageBackend %q is not known yet", name)
	}
	sb, err := r.backends.Get(name)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, fmt.Errorf("StorageBackend %q does not exist", name)
		}
		return nil, nil, err
	}
	switch sb.Spec.Type {
	case v1alpha1.StorageBackendEmbedded:
		if !r.opts.EmbeddedDefault {
			return nil, nil, fmt.Errorf("StorageBackend %q is Embedded, and this annex does not run its embedded etcd", name)
		}
		return r.defaultGetter, nil, nil
	case v1alpha1.StorageBackendEtcd:
		if sb.Spec.Etcd == nil {
			return nil, nil, fmt.Errorf("StorageBackend %q has no spec.etcd", name)
		}
		return r.startEtcd(ctx, name, sb.Spec.Etcd)
	case v1alpha1.StorageBackendPostgres:
		if sb.Spec.Postgres == nil {
			return nil, nil, fmt.Errorf("StorageBackend %q has no spec.postgres", name)
		}
		return r.startPostgres(ctx, name, &sb.Spec.Postgres.DSNSecretRef)
	}
	return nil, nil, fmt.Errorf("StorageBackend %q has the unknown type %q", name, sb.Spec.Type)
}

// backendDir is a short directory per backend: unix socket paths are
// limited to about 100 bytes, and a backend's name may be 63.
func (r *Router) backendDir(name string) string {
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(r.opts.DataDir, "backends", hex.EncodeToString(sum[:6]))
}

func (r *Router) secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	if r.opts.Secrets == nil {
		return nil, fmt.Errorf("the credentials are in Secret %s/%s, and annex without a cluster cannot read Secrets", namespace, name)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := r.opts.Secrets(ctx, namespace, name)
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s/%s: %w", namespace, name, err)
	}
	return s, nil
}

// startEtcd configures a client of an external etcd cluster like the
// command-line store's, with the cluster's endpoints and the client
// certificates of its Secret written to files only annex reads.
func (r *Router) startEtcd(ctx context.Context, name string, spec *v1alpha1.EtcdStorage) (generic.RESTOptionsGetter, func(), error) {
	etcdOptions := r.opts.Etcd
	transport := etcdOptions.StorageConfig.Transport
	transport.ServerList = append([]string(nil), spec.Endpoints...)
	transport.CertFile, transport.KeyFile, transport.TrustedCAFile = "", "", ""
	if ref := spec.TLSSecretRef; ref != nil {
		s, err := r.secret(ctx, ref.Namespace, ref.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("StorageBackend %q: %w", name, err)
		}
		dir := filepath.Join(r.backendDir(name), "tls")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, err
		}
		files := map[string]*string{"ca.crt": &transport.TrustedCAFile, corev1.TLSCertKey: &transport.CertFile, corev1.TLSPrivateKeyKey: &transport.KeyFile}
		for key, field := range files {
			data := s.Data[key]
			if len(data) == 0 {
				continue
			}
			path := filepath.Join(dir, key)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				return nil, nil, err
			}
			*field = path
		}
		if (transport.CertFile == "") != (transport.KeyFile == "") {
			return nil, nil, fmt.Errorf("StorageBackend %q: Secret %s/%s holds only one of tls.crt and tls.key; a client certificate needs both",
				name, ref.Namespace, ref.Name)
		}
	}
	etcdOptions.StorageConfig.Transport = transport
	return apiextensionsoptions.NewCRDRESTOptionsGetter(etcdOptions, r.opts.ResourceTransformers, r.opts.Tracker), nil, nil
}

// startPostgres runs a kine for the backend, on a unix socket of its own.
func (r *Router) startPostgres(ctx context.Context, name string, ref *v1alpha1.SecretKeySelector) (generic.RESTOptionsGetter, func(), error) {
	s, err := r.secret(ctx, ref.Namespace, ref.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("StorageBackend %q: %w", name, err)
	}
	dsn := strings.TrimSpace(string(s.Data[ref.Key]))
	if dsn == "" {
		return nil, nil, fmt.Errorf("StorageBackend %q: Secret %s/%s has no key %q with a connection string", name, ref.Namespace, ref.Name, ref.Key)
	}
	pg, err := postgres.Start(ctx, postgres.Options{
		DSN:               dsn,
		SocketDir:         filepath.Join(r.backendDir(name), "kine"),
		CompactInterval:   r.opts.PostgresCompactInterval,
		NotifyInterval:    5 * time.Second,
		MetricsRegisterer: r.opts.MetricsRegisterer,
		Backend:           name,
		ConnectTimeout:    r.opts.PostgresConnectTimeout,
		StartTimeout:      r.opts.PostgresStartTimeout,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("StorageBackend %q: %w", name, err)
	}
	etcdOptions := r.opts.Etcd
	etcdOptions.StorageConfig.Transport.ServerList = []string{pg.Endpoint}
	etcdOptions.StorageConfig.Transport.CertFile, etcdOptions.StorageConfig.Transport.KeyFile = "", ""
	etcdOptions.StorageConfig.Transport.TrustedCAFile = ""
	return apiextensionsoptions.NewCRDRESTOptionsGetter(etcdOptions, r.opts.ResourceTransformers, r.opts.Tracker), pg.Close, nil
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
	_, err = r.backendGetter(bound)
	return err
}
