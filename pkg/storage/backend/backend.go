// Package backend turns the description of a store into a running backend:
// the storage options of the hosted types kept in it, a probe of its health,
// and its cleanup. annex's command-line store is one backend (the "default"),
// and every StorageBackend is another.
//
// It is the one place that reads the Secrets a StorageBackend names, and the
// one place that knows how each type of store is reached: the storagebackend
// controller probes through it, and storage routing opens through it.
package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apiextensionsoptions "k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	"k8s.io/apiserver/pkg/registry/generic"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	storagevalue "k8s.io/apiserver/pkg/storage/value"
	flowcontrolrequest "k8s.io/apiserver/pkg/util/flowcontrol/request"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/postgres"
	"annex.dev/annex/pkg/storage/secretpolicy"
)

// Store is what annex keeps its own data in: the "default" backend.
type Store string

// Stores annex runs on.
const (
	StoreEmbeddedEtcd Store = "EmbeddedEtcd"
	StoreEtcd         Store = "Etcd"
	StorePostgres     Store = "Postgres"
)

// Describe names the store in a sentence.
func (s Store) Describe() string {
	switch s {
	case StoreEmbeddedEtcd:
		return "its embedded etcd"
	case StoreEtcd:
		return "an external etcd"
	case StorePostgres:
		return "PostgreSQL"
	}
	return "an unknown store"
}

// Backend is a running store.
type Backend interface {
	// GetRESTOptions returns the storage options of a hosted type kept in
	// the store.
	generic.RESTOptionsGetter
	// Probe checks that the store answers now, with the credentials the
	// backend was opened with. It returns within the probe timeout.
	Probe(ctx context.Context) Result
	// Close releases what opening the backend started. The default
	// backend's store belongs to the process, which closes it.
	Close()
}

// SecretReader reads a Secret of the cluster.
type SecretReader func(ctx context.Context, namespace, name string) (*corev1.Secret, error)

// Postgres configures the kine that annex runs on each PostgreSQL store.
type Postgres struct {
	// CompactInterval is how often old revisions are removed.
	CompactInterval time.Duration
	// ConnectTimeout bounds the first connection to the database;
	// postgres.DefaultConnectTimeout when zero.
	ConnectTimeout time.Duration
	// StartTimeout bounds kine's start; postgres.DefaultStartTimeout when zero.
	StartTimeout time.Duration
	// MaxConnections bounds kine's connections to each database;
	// postgres.DefaultMaxConnections when zero.
	MaxConnections int
	// MetricsRegisterer receives the database's metrics; nil for none.
	MetricsRegisterer prometheus.Registerer
}

// notifyInterval is how often annex sends watch progress notifications, from
// which the watch cache's bookmarks come.
const notifyInterval = 5 * time.Second

// Start runs a kine on the database of dsn, serving the etcd API on a unix
// socket in socketDir. name is the StorageBackend's, "" for the command-line
// store.
func (p Postgres) Start(ctx context.Context, name, dsn, socketDir string) (*postgres.Server, error) {
	return postgres.Start(ctx, postgres.Options{
		DSN:               dsn,
		SocketDir:         socketDir,
		CompactInterval:   p.CompactInterval,
		NotifyInterval:    notifyInterval,
		MetricsRegisterer: p.MetricsRegisterer,
		Backend:           name,
		ConnectTimeout:    p.ConnectTimeout,
		StartTimeout:      p.StartTimeout,
		MaxConnections:    p.MaxConnections,
	})
}

// DefaultProbeTimeout bounds one probe, so that a dead endpoint never holds
// a worker for long.
const DefaultProbeTimeout = 5 * time.Second

// Options configure every backend.
type Options struct {
	// Etcd are the options of the command-line store, complete (its
	// ServerList is set): every backend's storage is configured like it,
	// with its own transport.
	Etcd                 genericoptions.EtcdOptions
	ResourceTransformers storagevalue.ResourceTransformers
	Tracker              flowcontrolrequest.StorageObjectCountTracker
	// DefaultStore is what the command-line store is; an Embedded
	// StorageBackend names it when it is the embedded etcd.
	DefaultStore Store
	// RuntimeDir holds what the backends need only while annex runs: the
	// client certificates and keys of etcd backends, and the sockets of
	// PostgreSQL backends. It must not be on the volume of annex's data.
	RuntimeDir string
	// Postgres configures the kine of PostgreSQL backends.
	Postgres Postgres
	// Secrets reads the Secrets that StorageBackends name; nil when there
	// is no cluster.
	Secrets SecretReader
	// SecretPolicy says which Secrets StorageBackends may name; the zero
	// policy allows none. Secrets reads none that it refuses.
	SecretPolicy secretpolicy.Policy
	// ProbeTimeout bounds each probe, and each read of a Secret;
	// DefaultProbeTimeout when zero.
	ProbeTimeout time.Duration
}

// Factory opens and probes backends.
type Factory struct {
	opts Options
	def  *running
}

// NewFactory returns a Factory whose default backend is the command-line store.
func NewFactory(opts Options) *Factory {
	f := &Factory{opts: opts}
	f.def = &running{
		RESTOptionsGetter: apiextensionsoptions.NewCRDRESTOptionsGetter(opts.Etcd, opts.ResourceTransformers, opts.Tracker),
		probe: func(context.Context) Result {
			return Result{Ready: true, Reason: ReasonRunning, Message: fmt.Sprintf("annex keeps its data in %s", opts.DefaultStore.Describe())}
		},
	}
	return f
}

// Default is the command-line store, the backend named "default".
func (f *Factory) Default() Backend { return f.def }

func (f *Factory) probeTimeout() time.Duration {
	if f.opts.ProbeTimeout > 0 {
		return f.opts.ProbeTimeout
	}
	return DefaultProbeTimeout
}

// Probe checks sb's store without opening it: its Secrets are read and
// checked, and the store is asked whether it answers. It returns within the
// probe timeout (plus the time to read a Secret).
func (f *Factory) Probe(ctx context.Context, sb *v1alpha1.StorageBackend) Result {
	s, failure := f.resolve(ctx, sb)
	if failure != nil {
		return *failure
	}
	return f.probe(ctx, s)
}

// Open starts a client of sb's store (for PostgreSQL, a kine on its
// database). An Embedded backend is the default backend, when that is the
// embedded etcd.
func (f *Factory) Open(ctx context.Context, sb *v1alpha1.StorageBackend) (Backend, error) {
	s, failure := f.resolve(ctx, sb)
	if failure != nil {
		return nil, fmt.Errorf("StorageBackend %q: %s", sb.Name, failure.Message)
	}
	switch {
	case s.etcd != nil:
		return f.openEtcd(s)
	case s.postgres != nil:
		return f.openPostgres(ctx, s)
	}
	// Embedded, and resolve found the embedded etcd running.
	return unclosed{f.def}, nil
}

// dir is a short directory per backend: unix socket paths are limited to
// about 100 bytes, and a backend's name may be 63.
func (f *Factory) dir(name string) string {
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(f.opts.RuntimeDir, "backends", hex.EncodeToString(sum[:6]))
}

// running is an open backend.
type running struct {
	generic.RESTOptionsGetter
	probe func(context.Context) Result
	close func()
}

func (r *running) Probe(ctx context.Context) Result { return r.probe(ctx) }

func (r *running) Close() {
	if r.close != nil {
		r.close()
	}
}

// unclosed is a backend opened under another name, whose owner closes it.
type unclosed struct{ *running }

func (unclosed) Close() {}
