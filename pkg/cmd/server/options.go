// Package server holds annex-apiserver's options and command.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/pflag"
	apiextensionsapiserver "k8s.io/apiextensions-apiserver/pkg/apiserver"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/admission/backendchange"
	"annex.dev/annex/pkg/admission/dryrunsize"
	"annex.dev/annex/pkg/admission/hostedgroups"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/apiserver"
	"annex.dev/annex/pkg/clustergroups"
	"annex.dev/annex/pkg/controllers/adoption"
	"annex.dev/annex/pkg/controllers/retention"
	"annex.dev/annex/pkg/controllers/storagebackend"
	generatedopenapi "annex.dev/annex/pkg/generated/openapi"
	"annex.dev/annex/pkg/registry/core"
	"annex.dev/annex/pkg/storage/backend"
	"annex.dev/annex/pkg/storage/compression"
	"annex.dev/annex/pkg/storage/lean"
	"annex.dev/annex/pkg/storage/objectsize"
	"annex.dev/annex/pkg/storage/postgres"
	"annex.dev/annex/pkg/storage/secretpolicy"
	"annex.dev/annex/pkg/storage/unavailable"
	"annex.dev/annex/pkg/version"
)

// Modes annex runs in.
const (
	// ModeAuto is aggregated when a cluster is given (a kubeconfig flag, or
	// the in-cluster environment) and standalone otherwise.
	ModeAuto = "auto"
	// ModeAggregated serves behind a cluster's aggregation layer and
	// delegates authentication, authorization and admission to it.
	ModeAggregated = "aggregated"
	// ModeStandalone needs no cluster: annex issues its own certificates and
	// serves its admin directly.
	ModeStandalone = "standalone"
)

// defaultEtcdPathPrefix is where annex keeps its objects in etcd; a distinct
// prefix lets an external etcd be shared without collisions.
const defaultEtcdPathPrefix = "/annex"

// Options are annex-apiserver's command-line options.
type Options struct {
	ServerRunOptions   *genericoptions.ServerRunOptions
	RecommendedOptions *genericoptions.RecommendedOptions

	// Mode is auto, aggregated or standalone.
	Mode string
	// DataDir holds the embedded etcd's data and the certificates annex issues.
	DataDir string
	// RuntimeDir holds what annex needs only while it runs: the client keys
	// of StorageBackends' etcd clusters and the sockets of kine. Empty: a
	// new directory under the system's temporary directory, removed at exit.
	RuntimeDir string
	// AdminKubeconfig is where standalone mode writes the admin's kubeconfig.
	AdminKubeconfig string
	// EmbeddedEtcdQuotaBytes is the size at which the embedded etcd refuses writes.
	EmbeddedEtcdQuotaBytes int64
	// EmbeddedEtcdLogLevel is the embedded etcd's log level.
	EmbeddedEtcdLogLevel string

	// PostgresDSNFile holds the connection string of a PostgreSQL database
	// to keep the data in, instead of etcd.
	PostgresDSNFile string
	// PostgresCompactInterval is how often old revisions are removed from PostgreSQL.
	PostgresCompactInterval time.Duration
	// PostgresConnectTimeout bounds annex's first connection to a PostgreSQL
	// database, before it starts kine on it.
	PostgresConnectTimeout time.Duration
	// PostgresStartTimeout bounds kine's start on a PostgreSQL database.
	PostgresStartTimeout time.Duration
	// PostgresMaxConnections bounds the connections to each PostgreSQL
	// database (--postgres-dsn-file, each StorageBackend).
	PostgresMaxConnections int
	// StorageInsecure lets annex reach its own store (--etcd-servers,
	// --postgres-dsn-file) without TLS over the network, as a
	// StorageBackend's spec.etcd.insecure and spec.postgres.insecure do.
	StorageInsecure bool
	// StorageCompression is how hosted objects are written to their store:
	// compressed (S2) or as they are (None). Both are always read.
	StorageCompression string
	// StorageBackendRetryInterval is the wait before a StorageBackend that
	// failed to start is tried again, doubled with each failure in a row.
	StorageBackendRetryInterval time.Duration
	// StorageBackendProbeInterval is how often each StorageBackend is probed;
	// requests for the types of a backend found unready get a 503 at once.
	StorageBackendProbeInterval time.Duration
	// AdoptionFreezeSettle is how long an adoption waits, once the cluster
	// refuses writes to the type, before it copies the last changes.
	AdoptionFreezeSettle time.Duration
	// AdoptionDeleteBatch is how many of an adopted type's copies in the
	// cluster's etcd one batch deletes (spec.adoption.deleteClusterCopies).
	AdoptionDeleteBatch int
	// AdoptionReleaseStallTimeout is how long a release may go without
	// progress, writes refused, before annex undoes it.
	AdoptionReleaseStallTimeout time.Duration
	// MemoryLimitRatio is the fraction of the container's memory limit
	// given to the Go runtime as its soft memory limit; 0 leaves it alone.
	MemoryLimitRatio float64
	// StorageSecretNamespaces are the namespaces whose Secrets
	// StorageBackends may name; annex reads Secrets nowhere else.
	StorageSecretNamespaces []string
	// StorageKeyPrefix is the key prefix, in every store, of the objects of
	// the hosted types annex creates; empty: <etcd-prefix>/installs/<the
	// --apiservice-managed-by value>, one per install of the Helm chart.
	StorageKeyPrefix string
	// ServingCertSecret is the Secret, as namespace/name, that the serving
	// certificate and key (--tls-cert-file, --tls-private-key-file) come
	// from: no StorageBackend may name it.
	ServingCertSecret string

	// APIService says how the cluster reaches annex; aggregated mode registers
	// each hosted group/version with it.
	APIService APIServiceOptions
	// LeaderElect makes one replica at a time run the controllers.
	LeaderElect bool
	// Retention says how often and how fast retention policies are enforced.
	Retention retention.Options

	// LeanEncodedLists answers JSON lists of the types kept lean from their
	// cached encodings.
	LeanEncodedLists bool
	// LeanEncodedGets answers JSON gets of the types kept lean from their
	// cached encodings when the cache is current.
	LeanEncodedGets bool
	// LeanReuseWrittenObjects lets the creates and updates of the types
	// kept lean return the object they wrote instead of decoding it again.
	LeanReuseWrittenObjects bool
	// LeanCacheBudget bounds the memory of all the lean caches, and
	// LeanCacheBudgetPerType that of each type's (quantities; "0" is no
	// bound). An empty LeanCacheBudget is half the Go runtime's memory
	// limit, none without one.
	LeanCacheBudget        string
	LeanCacheBudgetPerType string
	// LeanCacheBudgetInterval is how often the lean caches are measured.
	LeanCacheBudgetInterval time.Duration

	// StandaloneInPod lets standalone mode run where the in-cluster
	// environment says there is a cluster (see Validate).
	StandaloneInPod bool

	// flags are the parsed flags, to tell a default from a value given.
	flags *pflag.FlagSet
	// standaloneAuthorization holds the authorization options that standalone
	// mode takes out of RecommendedOptions (see completeStandalone).
	standaloneAuthorization *genericoptions.DelegatingAuthorizationOptions

	// store is what annex keeps its own data in, decided by Complete from
	// the flags, before Run points --etcd-servers at the store it starts.
	store backend.Store
	// runtimeDir is the runtime directory in use: --runtime-dir, or the one
	// startStores made.
	runtimeDir string
}

// APIServiceOptions describe the Service through which the cluster's aggregator reaches annex.
type APIServiceOptions struct {
	Namespace, Name string
	Port            int32
	// CABundleFile holds the CA that verifies annex's serving certificate.
	CABundleFile string
	// ManagedBy is the value of the label v1alpha1.ManagedByLabel on the
	// APIServices this install registers, unique per install.
	ManagedBy string
}

// NewOptions returns the default options.
func NewOptions() *Options {
	o := &Options{
		ServerRunOptions: genericoptions.NewServerRunOptions(),
		RecommendedOptions: genericoptions.NewRecommendedOptions(
			defaultEtcdPathPrefix,
			apiserver.Codecs.LegacyCodec(v1alpha1.SchemeGroupVersion),
		),
		Mode:                        ModeAuto,
		DataDir:                     "/var/lib/annex",
		EmbeddedEtcdQuotaBytes:      8 << 30,
		EmbeddedEtcdLogLevel:        "error",
		PostgresCompactInterval:     5 * time.Minute,
		PostgresMaxConnections:      postgres.DefaultMaxConnections,
		PostgresConnectTimeout:      postgres.DefaultConnectTimeout,
		PostgresStartTimeout:        postgres.DefaultStartTimeout,
		StorageCompression:          string(compression.S2),
		StorageBackendRetryInterval: backend.DefaultRetryInterval,
		StorageBackendProbeInterval: storagebackend.DefaultProbeInterval,
		AdoptionFreezeSettle:        adoption.DefaultFreezeSettle,
		AdoptionDeleteBatch:         adoption.DefaultDeleteBatch,
		AdoptionReleaseStallTimeout: adoption.DefaultReleaseStallTimeout,
		MemoryLimitRatio:            defaultMemoryLimitRatio,
		StorageSecretNamespaces:     []string{secretpolicy.DefaultNamespace},
		APIService:                  APIServiceOptions{Namespace: "annex-system", Name: "annex", Port: 443, ManagedBy: v1alpha1.DefaultManagedByValue},
		LeanEncodedLists:            true,
		LeanEncodedGets:             true,
		LeanReuseWrittenObjects:     true,
		LeanCacheBudgetInterval:     lean.DefaultBudgetInterval,
	}
	o.RecommendedOptions.Etcd.StorageConfig.EncodeVersioner = runtime.NewMultiGroupVersioner(
		v1alpha1.SchemeGroupVersion, schema.GroupKind{Group: v1alpha1.GroupName})
	o.RecommendedOptions.SecureServing.BindPort = 8443
	o.Retention = retention.Options{
		Interval:         retention.DefaultInterval,
		BatchSize:        retention.DefaultBatchSize,
		DeletesPerSecond: retention.DefaultDeletesPerSecond,
	}
	// The plugins are made once the flags are parsed: the install is known then.
	hostedgroups.Register(o.RecommendedOptions.Admission.Plugins, func() clustergroups.Install {
		return clustergroups.Install{Namespace: o.APIService.Namespace, Name: o.APIService.Name, ManagedBy: o.APIService.ManagedBy}
	})
	backendchange.Register(o.RecommendedOptions.Admission.Plugins)
	dryrunsize.Register(o.RecommendedOptions.Admission.Plugins, o.RecommendedOptions.Etcd.StorageConfig.Codec)
	o.RecommendedOptions.Admission.RecommendedPluginOrder = append(o.RecommendedOptions.Admission.RecommendedPluginOrder,
		hostedgroups.PluginName, backendchange.PluginName, dryrunsize.PluginName)
	// The loopback client configuration exists once SecureServing is
	// applied, which RecommendedOptions.ApplyTo does before admission. It
	// reaches every plugin that wants it (backendchange, dryrunsize).
	o.RecommendedOptions.ExtraAdmissionInitializers = func(c *genericapiserver.RecommendedConfig) ([]admission.PluginInitializer, error) {
		return []admission.PluginInitializer{backendchange.Initializer{Loopback: c.LoopbackClientConfig}}, nil
	}
	return o
}

// AddFlags adds the options' flags to fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.flags = fs
	o.ServerRunOptions.AddUniversalFlags(fs)
	o.RecommendedOptions.AddFlags(fs)
	fs.StringVar(&o.Mode, "mode", o.Mode, "How annex runs: 'aggregated' behind a cluster's aggregation layer, 'standalone' with no cluster, "+
		"or 'auto': aggregated when a kubeconfig flag or the in-cluster environment gives a cluster, standalone otherwise.")
	fs.BoolVar(&o.StandaloneInPod, "standalone-in-pod", o.StandaloneInPod, "Allow --mode=standalone inside a pod. Standalone mode "+
		"trusts no cluster and authorizes by itself; in a cluster, run it aggregated (the default there) unless a sandbox is meant.")
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir, "Directory of the embedded etcd's data and of the certificates annex issues itself. "+
		"Unused for data when --etcd-servers is given.")
	fs.StringVar(&o.RuntimeDir, "runtime-dir", o.RuntimeDir, "Directory of what annex needs only while it runs: the client certificates and keys "+
		"of StorageBackends' etcd clusters (files only annex can read) and the sockets of kine. It must be outside --data-dir, whose volume keeps data; "+
		"best a memory-backed one. Default: a new directory under the system's temporary directory, removed when annex stops.")
	fs.StringVar(&o.AdminKubeconfig, "admin-kubeconfig", o.AdminKubeconfig, "Standalone mode: where to write the admin's kubeconfig "+
		"(default <data-dir>/admin.kubeconfig).")
	fs.Int64Var(&o.EmbeddedEtcdQuotaBytes, "embedded-etcd-quota-backend-bytes", o.EmbeddedEtcdQuotaBytes,
		"Size of the embedded etcd's database at which it refuses writes.")
	fs.StringVar(&o.EmbeddedEtcdLogLevel, "embedded-etcd-log-level", o.EmbeddedEtcdLogLevel, "Log level of the embedded etcd (debug, info, warn, error).")
	fs.StringVar(&o.PostgresDSNFile, "postgres-dsn-file", o.PostgresDSNFile, "File holding the connection string of a PostgreSQL database "+
		"(postgres://user:password@host:port/database?sslmode=verify-full) to keep the data in instead of etcd. Exclusive with --etcd-servers.")
	fs.StringVar(&o.StorageCompression, "storage-compression", o.StorageCompression, "How hosted objects are written to their store, "+
		"on every backend: S2 compresses each object (a report of about 2 KiB of JSON keeps about a third of it), None writes it as it is. "+
		"Both forms are always read, so the setting can change at any time; an object is rewritten in the new form on its next update. "+
		"With --encryption-provider-config, objects are never compressed: the size of a compressed value would tell something of its content.")
	fs.BoolVar(&o.StorageInsecure, "storage-insecure", o.StorageInsecure, "Allow annex's own store to be reached without TLS: an http:// "+
		"--etcd-servers endpoint, or a --postgres-dsn-file whose sslmode (disable, allow, prefer, or none, which is prefer) lets the connection go "+
		"unencrypted. Anyone on the path could read and change every object. Unix sockets and loopback IP addresses (127.0.0.0/8, ::1) "+
		"never leave the machine or pod and need no flag; host names, localhost included, do.")
	fs.DurationVar(&o.PostgresCompactInterval, "postgres-compact-interval", o.PostgresCompactInterval, "How often old revisions are removed from PostgreSQL.")
	fs.DurationVar(&o.PostgresConnectTimeout, "postgres-connect-timeout", o.PostgresConnectTimeout, "How long annex waits for a PostgreSQL database "+
		"(--postgres-dsn-file or a StorageBackend) to accept a connection before it reports it unreachable and tries again later.")
	fs.IntVar(&o.PostgresMaxConnections, "postgres-max-connections", o.PostgresMaxConnections, "The most connections annex keeps open to each "+
		"PostgreSQL database (--postgres-dsn-file, and each StorageBackend's), per replica; a request that finds them all busy waits for one. "+
		"Keep replicas times this below the server's max_connections (100 by default), with room for its other clients.")
	fs.DurationVar(&o.PostgresStartTimeout, "postgres-start-timeout", o.PostgresStartTimeout, "How long kine may take to start on a PostgreSQL database "+
		"that accepted annex's connection; at most "+postgres.MaxStartTimeout.String()+".")
	fs.DurationVar(&o.StorageBackendRetryInterval, "storage-backend-retry-interval", o.StorageBackendRetryInterval, "How long after a failed start a StorageBackend "+
		"is tried again; the wait doubles with each failure in a row, up to 2m or this interval, whichever is longer. Meanwhile the types on it answer 503 with the reason.")
	fs.DurationVar(&o.StorageBackendProbeInterval, "storage-backend-probe-interval", o.StorageBackendProbeInterval, "How often each StorageBackend is probed. "+
		"Requests for the types of a backend found unready are answered 503 at once; until the next probe notices an outage they wait for the store.")
	fs.DurationVar(&o.AdoptionFreezeSettle, "adoption-freeze-settle", o.AdoptionFreezeSettle, "How long the adoption of a CRD (or its release) waits, once one of the "+
		"cluster's API servers refuses writes to the type, before it copies (or writes back) the last changes: time for the cluster's other API servers to refuse them too, "+
		"and for writes admitted just before to finish. Writes are refused for about this long plus the time to copy the last changes. "+
		"Raise it for a cluster whose API servers are slow to see admission policies.")
	fs.IntVar(&o.AdoptionDeleteBatch, "adoption-delete-batch", o.AdoptionDeleteBatch, "How many objects of an adopted type one batch deletes from the cluster's etcd "+
		"when its HostedResource sets spec.adoption.deleteClusterCopies: one list of them, then their deletions (8 at a time), then the progress in the status. "+
		"Lower it to spread the load on the cluster's etcd; between 1 and 5000.")
	fs.DurationVar(&o.AdoptionReleaseStallTimeout, "adoption-release-stall-timeout", o.AdoptionReleaseStallTimeout, "How long the release of an adopted CRD "+
		"(kubectl annex release) may go without progress before annex undoes it: the type stays adopted, writes are "+
		"accepted (again, if the release refused them), and status.adoption says ReleaseFailed with the last error. Progress is each page of objects written back and each phase.")
	fs.Float64Var(&o.MemoryLimitRatio, "memory-limit-ratio", o.MemoryLimitRatio, "The fraction of the container's memory limit (its cgroup's) "+
		"that the Go runtime keeps the heap under (its GOMEMLIMIT), so that the collector works harder as the heap nears the limit instead of the "+
		"container being killed for memory. Checked again every minute. 0 leaves the runtime's limit alone; a GOMEMLIMIT in the environment wins.")
	fs.StringVar(&o.StorageKeyPrefix, "storage-key-prefix", o.StorageKeyPrefix, "Key prefix, in every store, of the objects of the hosted types "+
		"annex creates from now on; each type keeps the prefix it was created with, and types created before prefixes were per install keep --etcd-prefix. "+
		"Installs that share a store (an external etcd, a PostgreSQL database) must have different ones. "+
		"Default: <--etcd-prefix>/installs/<--apiservice-managed-by>, which the Helm chart makes unique per install.")
	fs.StringSliceVar(&o.StorageSecretNamespaces, "storage-secret-namespaces", o.StorageSecretNamespaces, "Namespaces whose Secrets StorageBackends may name "+
		"(etcd client certificates, PostgreSQL connection strings); annex reads no other Secret, and a StorageBackend naming one is refused. "+
		"Keep them apart from annex's own namespace and its serving key. Empty: StorageBackends may name no Secret.")
	fs.StringVar(&o.ServingCertSecret, "serving-cert-secret", o.ServingCertSecret, "Aggregated mode: the Secret, as namespace/name, that --tls-cert-file "+
		"and --tls-private-key-file are mounted from; a StorageBackend naming it is refused. A Secret holding the certificate annex serves with "+
		"is refused whatever its name.")
	fs.StringVar(&o.APIService.Namespace, "apiservice-namespace", o.APIService.Namespace, "Aggregated mode: namespace of annex's Service, and of the controllers' leader-election Lease.")
	fs.StringVar(&o.APIService.Name, "apiservice-service-name", o.APIService.Name, "Aggregated mode: name of annex's Service, which the APIServices of hosted groups point at.")
	fs.Int32Var(&o.APIService.Port, "apiservice-service-port", o.APIService.Port, "Aggregated mode: port of annex's Service.")
	fs.StringVar(&o.APIService.CABundleFile, "apiservice-ca-bundle-file", o.APIService.CABundleFile, "Aggregated mode: PEM file with the CA that verifies annex's serving certificate; "+
		"it becomes the caBundle of the APIServices of hosted groups. Without it, hosted groups are not registered with the cluster.")
	fs.StringVar(&o.APIService.ManagedBy, "apiservice-managed-by", o.APIService.ManagedBy, "Aggregated mode: the value of the label "+
		v1alpha1.ManagedByLabel+" on the APIServices of hosted groups, one per install (the Helm chart sets <namespace>.<fullname>). "+
		"annex changes and deletes only the APIServices that point at its Service and carry this value, or carry the default, "+
		v1alpha1.DefaultManagedByValue+", which every install used before; those it relabels with this value.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Aggregated mode: run the controllers in one replica at a time, elected with a Lease in the cluster. Set it when running more than one replica.")
	fs.BoolVar(&o.LeanEncodedLists, "lean-encoded-lists", o.LeanEncodedLists, "Answer the JSON lists of hosted types kept lean "+
		"(spec.storage.cache: Lean) by writing their cached encodings, byte for byte what the upstream list handler answers, at a fraction of its cost. "+
		"false sends every list to the upstream handler: the way back if an answer ever differs.")
	fs.BoolVar(&o.LeanEncodedGets, "lean-encoded-gets", o.LeanEncodedGets, "Answer the JSON gets of the latest state of objects of hosted types kept lean "+
		"by writing their cached encodings, when the cache has already received the store's current revision (the store is still asked for it), "+
		"byte for byte what the upstream get handler answers after reading the object from the store. "+
		"false sends every get to the upstream handler: the way back if an answer ever differs.")
	fs.BoolVar(&o.LeanReuseWrittenObjects, "lean-reuse-written-objects", o.LeanReuseWrittenObjects, "Let a create or an update of a hosted type kept lean "+
		"return the object it wrote, with the write's resourceVersion, instead of decoding again what it stored, when that decoding gives the same object: "+
		"the object is in the type's stored version, the stored version's schema sets no defaults, and CBOR is off. "+
		"The answer and the watch event are byte for byte the same, for less CPU per write. "+
		"false decodes every write: the way back if an answer ever differs.")
	fs.StringVar(&o.LeanCacheBudget, "lean-cache-budget", o.LeanCacheBudget, "The memory all hosted types' lean caches may hold together "+
		"(a quantity such as 4Gi; 0: no bound). Once they hold it, creates of every hosted type kept lean are refused with 507 Insufficient Storage "+
		"until objects are deleted; reads, updates and deletes go on. Empty: half the Go runtime's memory limit (see --memory-limit-ratio), "+
		"no bound without one.")
	fs.StringVar(&o.LeanCacheBudgetPerType, "lean-cache-budget-per-type", o.LeanCacheBudgetPerType, "The memory the lean caches of one hosted type "+
		"may hold, all its versions together (a quantity such as 1Gi; 0 or empty: no bound but --lean-cache-budget). Past it, the type's creates are refused "+
		"with 507 Insufficient Storage.")
	fs.DurationVar(&o.LeanCacheBudgetInterval, "lean-cache-budget-interval", o.LeanCacheBudgetInterval, "How often the lean caches are measured "+
		"against their budgets (annex_lean_cache_bytes); between two measures a type can outgrow its budget by what is created meanwhile.")
	fs.DurationVar(&o.Retention.Interval, "retention-interval", o.Retention.Interval, "How often the objects of each hosted type with spec.storage.retention are checked against it.")
	fs.IntVar(&o.Retention.BatchSize, "retention-batch-size", o.Retention.BatchSize, "The most objects of one hosted type that a retention pass deletes; "+
		"the rest are deleted by the next pass, a second later.")
	fs.Float64Var(&o.Retention.DeletesPerSecond, "retention-deletes-per-second", o.Retention.DeletesPerSecond, "The rate of retention's deletes, all hosted types together.")
}

// Complete resolves the mode and fills in what depends on it.
func (o *Options) Complete() error {
	// The flags are parsed: settle the feature gates and the emulated version
	// now, before anything reads them.
	if err := o.ServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	if o.Mode == ModeAuto {
		o.Mode = ModeStandalone
		if o.clusterGiven() {
			o.Mode = ModeAggregated
		}
	}
	if o.AdminKubeconfig == "" {
		o.AdminKubeconfig = filepath.Join(o.DataDir, "admin.kubeconfig")
	}
	if o.Mode == ModeStandalone {
		o.completeStandalone()
	}
	switch {
	case o.PostgresDSNFile != "":
		o.store = backend.StorePostgres
	case len(o.RecommendedOptions.Etcd.StorageConfig.Transport.ServerList) > 0:
		o.store = backend.StoreEtcd
	default:
		o.store = backend.StoreEmbeddedEtcd
	}
	return o.ServerRunOptions.Complete()
}

func (o *Options) clusterGiven() bool {
	ro := o.RecommendedOptions
	return ro.CoreAPI.CoreAPIKubeconfigPath != "" ||
		ro.Authentication.RemoteKubeConfigFile != "" ||
		ro.Authorization.RemoteKubeConfigFile != "" ||
		inPod()
}

// inPod says whether annex runs in a pod of a cluster: the kubelet sets
// KUBERNETES_SERVICE_HOST in every container.
func inPod() bool { return os.Getenv("KUBERNETES_SERVICE_HOST") != "" }

// Validate reports every invalid option.
func (o *Options) Validate() error {
	var errs []error
	switch o.Mode {
	case ModeAggregated, ModeStandalone:
	default:
		errs = append(errs, fmt.Errorf("--mode must be auto, aggregated or standalone, not %q", o.Mode))
	}
	if o.Mode == ModeStandalone && inPod() && !o.StandaloneInPod {
		errs = append(errs, errors.New("--mode=standalone inside a pod: standalone mode ignores the cluster's authentication, "+
			"authorization and admission; run aggregated (--mode=auto or aggregated), or pass --standalone-in-pod to mean it"))
	}
	if o.Mode == ModeStandalone && o.LeaderElect {
		errs = append(errs, errors.New("--leader-elect needs a cluster: standalone mode runs one replica"))
	}
	if err := compression.Mode(o.StorageCompression).Valid(); err != nil {
		errs = append(errs, fmt.Errorf("--storage-compression: %w", err))
	}
	for flag, value := range map[string]string{"--lean-cache-budget": o.LeanCacheBudget, "--lean-cache-budget-per-type": o.LeanCacheBudgetPerType} {
		if _, err := parseBudget(value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", flag, err))
		}
	}
	if o.LeanCacheBudgetInterval <= 0 {
		errs = append(errs, fmt.Errorf("--lean-cache-budget-interval must be positive, not %s", o.LeanCacheBudgetInterval))
	}
	if o.MemoryLimitRatio < 0 || o.MemoryLimitRatio > 1 {
		errs = append(errs, fmt.Errorf("--memory-limit-ratio must be between 0 (off) and 1, not %g", o.MemoryLimitRatio))
	}
	if o.APIService.Port < 1 || o.APIService.Port > 65535 {
		errs = append(errs, fmt.Errorf("--apiservice-service-port must be between 1 and 65535, not %d", o.APIService.Port))
	}
	if o.APIService.ManagedBy == "" {
		errs = append(errs, errors.New("--apiservice-managed-by must not be empty"))
	} else if msgs := validation.IsValidLabelValue(o.APIService.ManagedBy); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--apiservice-managed-by=%s is not a label value: %s", o.APIService.ManagedBy, strings.Join(msgs, "; ")))
	}
	if o.AdoptionReleaseStallTimeout < 10*time.Second {
		errs = append(errs, fmt.Errorf("--adoption-release-stall-timeout must be at least 10s, not %s", o.AdoptionReleaseStallTimeout))
	}
	if o.AdoptionDeleteBatch < 1 || o.AdoptionDeleteBatch > 5000 {
		errs = append(errs, fmt.Errorf("--adoption-delete-batch must be between 1 and 5000, not %d", o.AdoptionDeleteBatch))
	}
	if o.AdoptionFreezeSettle < 0 || o.AdoptionFreezeSettle > 5*time.Minute {
		errs = append(errs, fmt.Errorf("--adoption-freeze-settle must be between 0s and 5m, not %s", o.AdoptionFreezeSettle))
	}
	if o.StorageBackendProbeInterval < time.Second {
		errs = append(errs, fmt.Errorf("--storage-backend-probe-interval must be at least 1s, not %s", o.StorageBackendProbeInterval))
	}
	if o.PostgresConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--postgres-connect-timeout must be positive, not %s", o.PostgresConnectTimeout))
	}
	if o.PostgresStartTimeout <= 0 || o.PostgresStartTimeout > postgres.MaxStartTimeout {
		errs = append(errs, fmt.Errorf("--postgres-start-timeout must be positive and at most %s, not %s", postgres.MaxStartTimeout, o.PostgresStartTimeout))
	}
	if o.StorageBackendRetryInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("--storage-backend-retry-interval must be at least 100ms, not %s", o.StorageBackendRetryInterval))
	}
	if o.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	} else if err := runtimeDirApart(o.RuntimeDir, o.DataDir); err != nil {
		errs = append(errs, err)
	}
	if err := validateKeyPrefix(o.StorageKeyPrefix); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range o.StorageSecretNamespaces {
		for _, msg := range validation.IsDNS1123Label(ns) {
			errs = append(errs, fmt.Errorf("--storage-secret-namespaces: %q is not a namespace: %s", ns, msg))
		}
	}
	if _, err := o.servingCertSecret(); err != nil {
		errs = append(errs, err)
	}
	if o.Retention.Interval < time.Second {
		errs = append(errs, fmt.Errorf("--retention-interval must be at least 1s, not %s", o.Retention.Interval))
	}
	if o.Retention.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("--retention-batch-size must be at least 1, not %d", o.Retention.BatchSize))
	}
	if !(o.Retention.DeletesPerSecond > 0) {
		errs = append(errs, fmt.Errorf("--retention-deletes-per-second must be greater than zero, not %v", o.Retention.DeletesPerSecond))
	}
	errs = append(errs, o.ServerRunOptions.Validate()...)
	ro := o.RecommendedOptions
	if o.PostgresDSNFile != "" && len(ro.Etcd.StorageConfig.Transport.ServerList) > 0 {
		errs = append(errs, errors.New("--postgres-dsn-file and --etcd-servers exclude each other: choose one store"))
	}
	if o.PostgresDSNFile != "" && o.PostgresCompactInterval <= 0 {
		errs = append(errs, errors.New("--postgres-compact-interval must be positive: without compaction the database grows without bound"))
	}
	if o.PostgresMaxConnections <= 0 {
		errs = append(errs, fmt.Errorf("--postgres-max-connections must be at least 1, not %d", o.PostgresMaxConnections))
	}
	errs = append(errs, o.validateEtcd()...)
	if !o.StorageInsecure {
		errs = append(errs, o.validatePlaintext()...)
	}
	errs = append(errs, ro.SecureServing.Validate()...)
	errs = append(errs, ro.Authentication.Validate()...)
	errs = append(errs, ro.Authorization.Validate()...)
	errs = append(errs, ro.Audit.Validate()...)
	errs = append(errs, ro.Features.Validate()...)
	errs = append(errs, ro.CoreAPI.Validate()...)
	errs = append(errs, ro.Admission.Validate()...)
	errs = append(errs, ro.EgressSelector.Validate()...)
	errs = append(errs, ro.Traces.Validate()...)
	return utilerrors.NewAggregate(errs)
}

// storageKeyPrefix is the key prefix of the hosted types created from now
// on: --storage-key-prefix, or one of this install's own under --etcd-prefix.
func (o *Options) storageKeyPrefix() string {
	if o.StorageKeyPrefix != "" {
		return o.StorageKeyPrefix
	}
	return strings.TrimRight(o.RecommendedOptions.Etcd.StorageConfig.Prefix, "/") + "/installs/" + o.APIService.ManagedBy
}

// validateKeyPrefix checks a --storage-key-prefix given: an absolute key
// path, without empty, "." or ".." segments, that the store joins the
// types' keys to.
func validateKeyPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if !strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("--storage-key-prefix=%s must start with / and not end with one", prefix)
	}
	for _, segment := range strings.Split(prefix[1:], "/") {
		if segment == "" || segment == "." || segment == ".." {
			return fmt.Errorf("--storage-key-prefix=%s has an empty, . or .. segment", prefix)
		}
	}
	return nil
}

// runtimeDirApart checks that the runtime directory and the data directory
// are apart, neither inside the other, so that the etcd client keys written
// to the one never land on the volume of the other. The default runtime
// directory is a new one under the system's temporary directory, which must
// then not be inside the data directory.
func runtimeDirApart(runtimeDir, dataDir string) error {
	d, err := filepath.Abs(dataDir)
	if err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	within := func(dir, parent string) bool {
		rel, err := filepath.Rel(parent, dir)
		return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
	}
	if runtimeDir == "" {
		if t, err := filepath.Abs(os.TempDir()); err == nil && within(t, d) {
			return fmt.Errorf("the system's temporary directory (%s), where annex makes its runtime directory unless --runtime-dir is given, is inside --data-dir (%s): "+
				"give a --runtime-dir outside it, for the client keys of StorageBackends must not reach the data's volume", t, d)
		}
		return nil
	}
	r, err := filepath.Abs(runtimeDir)
	if err != nil {
		return fmt.Errorf("--runtime-dir: %w", err)
	}
	if within(r, d) || within(d, r) {
		return fmt.Errorf("--runtime-dir (%s) and --data-dir (%s) must be apart, neither inside the other: "+
			"the client keys of StorageBackends are written to the one and must not reach the data's volume", r, d)
	}
	return nil
}

// servingCertSecret parses --serving-cert-secret; the zero name when it is not given.
func (o *Options) servingCertSecret() (types.NamespacedName, error) {
	if o.ServingCertSecret == "" {
		return types.NamespacedName{}, nil
	}
	namespace, name, ok := strings.Cut(o.ServingCertSecret, "/")
	if !ok || len(validation.IsDNS1123Label(namespace)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return types.NamespacedName{}, fmt.Errorf("--serving-cert-secret must be namespace/name, not %q", o.ServingCertSecret)
	}
	return types.NamespacedName{Namespace: namespace, Name: name}, nil
}

// validateEtcd checks the etcd options. The address of an embedded etcd or
// of kine is known only once it runs (Config sets it), so for those stores
// the rest of the options is checked.
func (o *Options) validateEtcd() []error {
	etcd := *o.RecommendedOptions.Etcd
	if o.store != backend.StoreEtcd {
		etcd.StorageConfig.Transport.ServerList = []string{string(o.store)}
	}
	return etcd.Validate()
}

// validatePlaintext refuses a command-line store that annex would reach
// without TLS over the network, as a StorageBackend without insecure is
// refused (--storage-insecure allows it). What does not leave the machine or
// the pod is not plaintext in this sense: a unix socket, and a loopback IP
// address. A host name is, even localhost: it is resolved when annex
// connects. The errors never carry a password.
func (o *Options) validatePlaintext() []error {
	var errs []error
	switch o.store {
	case backend.StoreEtcd:
		transport := o.RecommendedOptions.Etcd.StorageConfig.Transport
		withTLS := transport.CertFile != "" || transport.KeyFile != "" || transport.TrustedCAFile != ""
		for _, server := range transport.ServerList {
			if shown, plaintext := etcdPlaintext(server, withTLS); plaintext {
				errs = append(errs, fmt.Errorf("--etcd-servers: %s is plaintext: annex would send its objects and etcd's credentials unencrypted, "+
					"readable and changeable by anyone on the path; use https:// (with --etcd-cafile, --etcd-certfile and --etcd-keyfile), "+
					"or pass --storage-insecure to allow plaintext", shown))
			}
		}
	case backend.StorePostgres:
		dsn, err := os.ReadFile(o.PostgresDSNFile)
		if err != nil {
			// Reported again, and retried, when annex starts its store.
			return []error{fmt.Errorf("reading --postgres-dsn-file: %w", err)}
		}
		hosts, err := postgres.PlaintextHosts(strings.TrimSpace(string(dsn)))
		if err != nil {
			return []error{fmt.Errorf("--postgres-dsn-file %s: %w", o.PostgresDSNFile, err)}
		}
		var remote []string
		for _, host := range hosts {
			if !isLoopbackIP(host) {
				remote = append(remote, host)
			}
		}
		if len(remote) > 0 {
			errs = append(errs, fmt.Errorf("--postgres-dsn-file %s: the connection string lets annex connect to %s without TLS "+
				"(sslmode disable, allow or prefer, or no sslmode, which is prefer): anyone on the path could read and change the objects; "+
				"require TLS (sslmode=verify-full), or pass --storage-insecure to allow plaintext", o.PostgresDSNFile, strings.Join(remote, ", ")))
		}
	}
	return errs
}

// etcdPlaintext says whether annex would reach an --etcd-servers endpoint
// without TLS over the network, and how to show it (without user
// information). https:// and unixs:// use TLS, and unix:// is a socket.
// http:// is plaintext, TLS files or not, unless its host is a loopback IP
// address. host:port without a scheme uses TLS when the etcd client is given
// TLS files (--etcd-cafile, --etcd-certfile, --etcd-keyfile), as withTLS says.
func etcdPlaintext(server string, withTLS bool) (string, bool) {
	switch {
	case strings.HasPrefix(server, "unix://"), strings.HasPrefix(server, "unixs://"):
		return server, false
	case strings.HasPrefix(server, "https://"):
		return server, false
	case strings.HasPrefix(server, "http://"):
		u, err := url.Parse(server)
		if err != nil {
			return "an http:// endpoint that does not parse", true
		}
		return u.Redacted(), !isLoopbackIP(u.Hostname())
	}
	u, err := url.Parse("//" + server)
	if err != nil || u.Host == "" {
		return "an endpoint that does not parse", !withTLS
	}
	return u.Redacted(), !withTLS && !isLoopbackIP(u.Hostname())
}

// isLoopbackIP says whether host is a loopback IP address (127.0.0.0/8,
// ::1); names are not, localhost included.
func isLoopbackIP(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Config builds the server's configuration. It starts annex's own store
// (the embedded etcd, or kine on PostgreSQL), the only thing it starts: the
// etcd options point at it once it runs. The configuration's Stores close
// it.
func (o *Options) Config(ctx context.Context) (_ *apiserver.Config, err error) {
	var standalone *standaloneIdentity
	if o.Mode == ModeStandalone {
		if standalone, err = o.standaloneCertificates(); err != nil {
			return nil, fmt.Errorf("issuing standalone certificates in %s: %w", o.pkiDir(), err)
		}
	}
	stores, err := o.startStores(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			stores.Close()
		}
	}()

	serverConfig := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	if err := o.ServerRunOptions.ApplyTo(&serverConfig.Config); err != nil {
		return nil, err
	}
	// GET /version answers annex's release; the APIs and feature gates stay
	// those of the Kubernetes version annex is built on.
	serverConfig.EffectiveVersion = version.ServedBy(serverConfig.EffectiveVersion)

	// One OpenAPI document describes both servers of the chain.
	namer := openapi.NewDefinitionNamer(apiserver.Scheme, apiextensionsapiserver.Scheme, core.OpenAPIScheme)
	serverConfig.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(generatedopenapi.GetOpenAPIDefinitions, namer)
	serverConfig.OpenAPIConfig.Info.Title = "annex"
	serverConfig.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(generatedopenapi.GetOpenAPIDefinitions, namer)
	serverConfig.OpenAPIV3Config.Info.Title = "annex"

	if err := o.RecommendedOptions.ApplyTo(serverConfig); err != nil {
		return nil, err
	}
	// annex.dev's objects (and standalone mode's namespaces) are held to
	// the limit of the hosted types' objects. The internal CRDs are not:
	// they are annex's own writes, each from a HostedResource that was.
	serverConfig.RESTOptionsGetter = objectsize.RESTOptionsGetter(serverConfig.RESTOptionsGetter)
	// Their store, unavailable, is answered as the hosted types' is.
	serverConfig.RESTOptionsGetter = unavailable.RESTOptionsGetter(serverConfig.RESTOptionsGetter)
	config := &apiserver.Config{GenericConfig: serverConfig, Stores: stores, Standalone: o.Mode == ModeStandalone, LeanEncodedLists: o.LeanEncodedLists, LeanEncodedGets: o.LeanEncodedGets}
	if config.LeanCacheBudget, err = o.leanCacheBudget(debug.SetMemoryLimit(-1)); err != nil {
		return nil, err
	}
	if standalone != nil {
		authz, err := standaloneAuthorizer(o.standaloneAuthorization)
		if err != nil {
			return nil, err
		}
		serverConfig.Authorization.Authorizer = authz
		if err := applyStandaloneAdmission(serverConfig, o.RecommendedOptions.Etcd.StorageConfig.Codec); err != nil {
			return nil, err
		}
		config.AdminKubeconfig = func(addr net.Addr) error {
			if err := writeAdminKubeconfig(o.AdminKubeconfig, standalone.ca, standalone.admin, addr); err != nil {
				return err
			}
			klog.FromContext(ctx).Info("Standalone mode: point kubectl at annex", "kubeconfig", o.AdminKubeconfig, "address", addr.String())
			return nil
		}
	}
	// Which Secrets StorageBackends may name: checked when one is written,
	// and where the backends read them.
	if config.StorageSecrets, err = o.secretPolicy(serverConfig.SecureServing); err != nil {
		return nil, err
	}
	// After admission: the hosted-resource server shares the chain.
	var backends *backend.Factory
	config.HostedResources, config.Router, backends, err = o.hostedResourcesConfig(serverConfig, config.StorageSecrets)
	if err != nil {
		return nil, err
	}
	if config.Controllers, err = o.controllerOptions(ctx, serverConfig.ClientConfig, backends); err != nil {
		return nil, err
	}
	return config, nil
}
