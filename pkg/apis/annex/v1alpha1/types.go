package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// HostedResource declares a custom resource type that annex serves from its own
// storage instead of the cluster's etcd. A CustomResourceDefinition manifest
// becomes a HostedResource by changing only its apiVersion and kind.
type HostedResource struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object metadata. The name must be spec.names.plural+"."+spec.group.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec describes the hosted type and where its objects are stored.
	Spec HostedResourceSpec `json:"spec"`
	// status is the observed state of the hosted type.
	// +optional
	Status HostedResourceStatus `json:"status,omitempty"`
}

// HostedResourceSpec is a CustomResourceDefinition v1 spec plus a storage policy.
type HostedResourceSpec struct {
	// group is the API group of the hosted type (for example "reports.example.com").
	// It must contain a dot and must not belong to the cluster's built-in APIs.
	Group string `json:"group"`
	// names are the resource and kind names of the hosted type.
	Names apiextensionsv1.CustomResourceDefinitionNames `json:"names"`
	// scope is Cluster or Namespaced.
	Scope apiextensionsv1.ResourceScope `json:"scope"`
	// versions are the served versions of the type; exactly one is the storage version.
	// +listType=atomic
	Versions []apiextensionsv1.CustomResourceDefinitionVersion `json:"versions"`
	// conversion says how objects are converted between versions.
	// +optional
	Conversion *apiextensionsv1.CustomResourceConversion `json:"conversion,omitempty"`
	// preserveUnknownFields is accepted for compatibility with CRD manifests and must be false;
	// use x-kubernetes-preserve-unknown-fields in the schema instead.
	// +optional
	PreserveUnknownFields bool `json:"preserveUnknownFields,omitempty"`

	// storage says where and for how long the type's objects are kept.
	// +optional
	Storage HostedResourceStorage `json:"storage,omitempty"`

	// adoption, when set, takes over a CustomResourceDefinition that the
	// cluster serves, with its objects: annex copies them, pauses the
	// type's writes for a moment, switches the type's APIServices to itself
	// and stops the CRD's versions from being served. The rest of the spec
	// must be the CRD's own (kubectl annex adopt writes it). The objects stay
	// in the cluster's etcd until they are deleted there deliberately. It
	// cannot be added or changed once the HostedResource exists, but for
	// adoption.release.
	// +optional
	Adoption *Adoption `json:"adoption,omitempty"`
}

// Adoption names the cluster's CustomResourceDefinition whose type and
// objects annex takes over.
type Adoption struct {
	// customResourceDefinition is the name of the cluster's CRD
	// (<plural>.<group>); its group and names must be the HostedResource's.
	CustomResourceDefinition string `json:"customResourceDefinition"`
	// release, set true once the adoption is Adopted, gives the type back
	// to the cluster: annex refuses writes to the group for the time it
	// writes its objects back into the cluster's etcd through the CRD, then
	// points the APIServices back at the cluster, serves the CRD's versions
	// again and accepts writes (phase RollingBack, then Released). It may
	// be set false again only while the phase is Adopted: before the
	// release began, or after one that failed (reason ReleaseFailed), to
	// try again by setting it true once more.
	// +optional
	Release bool `json:"release,omitempty"`
	// deleteClusterCopies, set true once the adoption is Adopted, deletes
	// the objects that the cluster's etcd still holds of the type (as they
	// were at the switch; nothing reads them): annex deletes them through
	// the cluster, in batches, finalizers or not, while it goes on serving
	// the type (status.adoption.clusterCopies counts them). annex's objects
	// are not touched. It cannot be unset, and release cannot be set
	// until the deletion is complete; a release after it creates every
	// object in the cluster anew, with a new uid and creationTimestamp.
	// +optional
	DeleteClusterCopies bool `json:"deleteClusterCopies,omitempty"`
}

// AdoptionPhase is how far the adoption of a CustomResourceDefinition went.
type AdoptionPhase string

// Adoption phases, in order; Failed ends an adoption that cannot go on.
const (
	// AdoptionCopying: annex copies the objects from the cluster, then
	// copies what changed meanwhile until little does.
	AdoptionCopying AdoptionPhase = "Copying"
	// AdoptionFrozen: the cluster refuses writes to the type while annex
	// copies the last changes.
	AdoptionFrozen AdoptionPhase = "Frozen"
	// AdoptionSwitched: the type's APIServices point at annex; writes are
	// still refused until the CRD's versions are no longer served.
	AdoptionSwitched AdoptionPhase = "Switched"
	// AdoptionAdopted: annex serves the type and its objects.
	AdoptionAdopted AdoptionPhase = "Adopted"
	// AdoptionRollingBack: spec.adoption.release gives the type back;
	// writes to it are refused while annex writes its objects back into
	// the cluster (copied of total), then the APIServices point at the
	// cluster again.
	AdoptionRollingBack AdoptionPhase = "RollingBack"
	// AdoptionReleased: the cluster serves the type and the objects annex
	// held; annex no longer serves it. Delete the HostedResource (kubectl
	// annex release does) to delete annex's copies.
	AdoptionReleased AdoptionPhase = "Released"
	// AdoptionFailed: the adoption stopped; reason and message say why. The
	// cluster still serves the type.
	AdoptionFailed AdoptionPhase = "Failed"
)

// AdoptionStatus is the progress of an adoption.
type AdoptionStatus struct {
	// phase is how far the adoption went.
	// +optional
	Phase AdoptionPhase `json:"phase,omitempty"`
	// copied is how many objects the first copy wrote, of total.
	// +optional
	Copied int64 `json:"copied,omitempty"`
	// total is how many objects the cluster held when the first copy began.
	// +optional
	Total int64 `json:"total,omitempty"`
	// startTime is when the adoption began.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// frozenTime is when the cluster began refusing writes to the type.
	// +optional
	FrozenTime *metav1.Time `json:"frozenTime,omitempty"`
	// switchedTime is when the APIServices were switched to annex.
	// +optional
	SwitchedTime *metav1.Time `json:"switchedTime,omitempty"`
	// adoptedTime is when the adoption ended and writes were accepted again.
	// +optional
	AdoptedTime *metav1.Time `json:"adoptedTime,omitempty"`
	// freeze is how long writes to the type were refused.
	// +optional
	Freeze *metav1.Duration `json:"freeze,omitempty"`
	// reason is a CamelCase word for why the adoption failed or waits.
	// +optional
	Reason string `json:"reason,omitempty"`
	// message says what the adoption does or why it failed.
	// +optional
	Message string `json:"message,omitempty"`

	// releaseStartTime is when the release began.
	// +optional
	ReleaseStartTime *metav1.Time `json:"releaseStartTime,omitempty"`
	// releaseFrozenTime is when the cluster began refusing writes to the
	// type for the release's last changes; until then it accepted them.
	// +optional
	ReleaseFrozenTime *metav1.Time `json:"releaseFrozenTime,omitempty"`
	// releasedTime is when the cluster served the type again and writes
	// were accepted again.
	// +optional
	ReleasedTime *metav1.Time `json:"releasedTime,omitempty"`
	// recreated counts the objects that the release had to create in the
	// cluster (created while annex served the type, or deleted and created
	// again): the cluster gave them a new uid and creationTimestamp, which
	// no client can set.
	// +optional
	Recreated int64 `json:"recreated,omitempty"`
	// recreatedObjects names the first 100 of them, as namespace/name (or
	// name, for a cluster-scoped type).
	// +optional
	// +listType=atomic
	RecreatedObjects []string `json:"recreatedObjects,omitempty"`

	// clusterCopies is the progress of the deletion that
	// spec.adoption.deleteClusterCopies asks for.
	// +optional
	ClusterCopies *ClusterCopiesStatus `json:"clusterCopies,omitempty"`
}

// ClusterCopiesStatus is the progress of the deletion of the objects that
// the cluster's etcd held of an adopted type.
type ClusterCopiesStatus struct {
	// total is how many objects the cluster held when the deletion began.
	// +optional
	Total int64 `json:"total,omitempty"`
	// deleted is how many of them are deleted.
	// +optional
	Deleted int64 `json:"deleted,omitempty"`
	// startTime is when the deletion began.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// completionTime is when the cluster held none of them any more.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// HostedResourceStorage says where and for how long a hosted type's objects are kept.
type HostedResourceStorage struct {
	// backend is the name of the StorageBackend that holds the objects;
	// "default" (the default) is the backend given on annex's command line.
	// +optional
	Backend string `json:"backend,omitempty"`
	// retention bounds how many objects are kept and for how long.
	// +optional
	Retention *RetentionPolicy `json:"retention,omitempty"`
	// cache says what annex keeps in memory of the type's objects to serve
	// its lists and watches: "Lean" (the default), "WatchCache" or "None". A
	// change takes effect when annex next builds the type's storage: when
	// annex restarts, or when the type's versions or names change.
	// +optional
	Cache StorageCache `json:"cache,omitempty"`
	// cacheBudget bounds the memory of the type's Lean cache, all its
	// versions together, in place of annex's --lean-cache-budget-per-type
	// (larger or smaller). Once the cache holds that much, creates of the
	// type are refused with 507 Insufficient Storage until objects are
	// deleted or the budget is raised; reads, updates and deletes go on.
	// A change takes effect at annex's next measure of its caches
	// (--lean-cache-budget-interval, 30s by default). Only for the Lean
	// cache.
	// +optional
	CacheBudget *resource.Quantity `json:"cacheBudget,omitempty"`
}

// StorageCache is what annex keeps in memory of a hosted type's objects.
// +enum
type StorageCache string

// DefaultStorageCache is the cache of a type whose HostedResource names
// none.
const DefaultStorageCache = StorageCacheLean

// Storage caches.
const (
	// StorageCacheWatchCache keeps every object decoded in memory, as the
	// kube-apiserver does for a CustomResourceDefinition: lists, and watches
	// from a recent resourceVersion, are served from memory.
	StorageCacheWatchCache StorageCache = "WatchCache"
	// StorageCacheLean is the watch cache holding each object as its
	// encoding rather than decoded: a fraction of WatchCache's memory, the
	// same semantics and answers. Lists in JSON are written from the
	// encodings; other answers decode the objects they return.
	StorageCacheLean StorageCache = "Lean"
	// StorageCacheNone keeps nothing in memory: every list and get reads the
	// store, each watch is a watch of the store, and a watch or paged list
	// from a resourceVersion older than the store's compaction gets 410
	// Gone. For large types that are seldom listed.
	StorageCacheNone StorageCache = "None"
)

// RetentionPolicy bounds the objects of a high-volume type.
type RetentionPolicy struct {
	// maxAge is how long an object is kept after its creation, for example "168h".
	// +optional
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`
	// maxObjectsPerNamespace is how many objects a namespace keeps; the oldest are deleted first.
	// +optional
	MaxObjectsPerNamespace *int64 `json:"maxObjectsPerNamespace,omitempty"`
}

// HostedResourceStatus is the observed state of a HostedResource.
type HostedResourceStatus struct {
	// observedGeneration is the generation of the spec that the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// conditions say whether the names were accepted and the type is served.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// objectCount is the number of objects of the type, as its storage last counted
	// them (every --etcd-count-metric-poll-period, a minute by default).
	// +optional
	ObjectCount *int64 `json:"objectCount,omitempty"`
	// estimatedSizeBytes is the estimated size of the type's objects in its store,
	// from the sizes of the objects annex last read.
	// +optional
	EstimatedSizeBytes *int64 `json:"estimatedSizeBytes,omitempty"`
	// adoption is the progress of spec.adoption.
	// +optional
	Adoption *AdoptionStatus `json:"adoption,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// HostedResourceList is a list of HostedResources.
type HostedResourceList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`

	// items are the HostedResources.
	Items []HostedResource `json:"items"`
}

// StorageBackendType is the kind of store a StorageBackend describes.
// +enum
type StorageBackendType string

// Storage backend types.
const (
	// StorageBackendEmbedded is the etcd that annex runs in its own process.
	StorageBackendEmbedded StorageBackendType = "Embedded"
	// StorageBackendEtcd is an external etcd cluster.
	StorageBackendEtcd StorageBackendType = "Etcd"
	// StorageBackendPostgres is a PostgreSQL database.
	StorageBackendPostgres StorageBackendType = "Postgres"
)

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// StorageBackend describes a store that hosted resources can live in.
type StorageBackend struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object metadata. The name must be a DNS label.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says what kind of store this is and how to reach it.
	Spec StorageBackendSpec `json:"spec"`
	// status is the observed state of the store.
	// +optional
	Status StorageBackendStatus `json:"status,omitempty"`
}

// StorageBackendSpec is a discriminated union on type: the member named by type
// is required and the others are forbidden.
// +union
type StorageBackendSpec struct {
	// type is Embedded, Etcd or Postgres.
	// +unionDiscriminator
	Type StorageBackendType `json:"type"`
	// etcd is an external etcd cluster; required when type is Etcd.
	// +optional
	Etcd *EtcdStorage `json:"etcd,omitempty"`
	// postgres is a PostgreSQL database; required when type is Postgres.
	// +optional
	Postgres *PostgresStorage `json:"postgres,omitempty"`
}

// EtcdStorage is an external etcd cluster.
type EtcdStorage struct {
	// endpoints are the client URLs of the cluster's members, for example "https://etcd-0.etcd:2379".
	// +listType=atomic
	Endpoints []string `json:"endpoints"`
	// tlsSecretRef names a Secret with the keys tls.crt, tls.key and ca.crt for client authentication.
	// +optional
	TLSSecretRef *SecretReference `json:"tlsSecretRef,omitempty"`
	// insecure allows http:// endpoints, whose connections carry the objects and
	// etcd's credentials unencrypted and let anyone on the path read or change
	// them. Without it an http:// endpoint is refused. It never turns off the
	// verification of an https:// endpoint's certificate. status.conditions
	// reports a backend that connects in plaintext (Secure is False).
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// PostgresStorage is a PostgreSQL database.
type PostgresStorage struct {
	// dsnSecretRef names the Secret key that holds the connection string.
	DSNSecretRef SecretKeySelector `json:"dsnSecretRef"`
	// insecure allows a connection string that lets the connection go without
	// TLS: sslmode disable, allow or prefer, or no sslmode (which is prefer).
	// Anyone on the path of such a connection can read and change the objects.
	// Without it, a backend whose connection string allows plaintext is not
	// Ready (reason PlaintextNotAllowed); annex reads the connection string
	// from the Secret, so it cannot refuse it when the StorageBackend is
	// written. Connections over a unix socket stay on the machine and are not
	// plaintext in this sense. status.conditions reports a backend that may
	// connect in plaintext (Secure is False).
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// SecretReference names a Secret.
type SecretReference struct {
	// namespace of the Secret.
	Namespace string `json:"namespace"`
	// name of the Secret.
	Name string `json:"name"`
}

// SecretKeySelector names one key of a Secret.
type SecretKeySelector struct {
	// namespace of the Secret.
	Namespace string `json:"namespace"`
	// name of the Secret.
	Name string `json:"name"`
	// key within the Secret's data.
	Key string `json:"key"`
}

// StorageBackendStatus is the observed state of a StorageBackend.
type StorageBackendStatus struct {
	// observedGeneration is the generation of the spec that the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// conditions say whether the store is reachable.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// sizeBytes is the size of the store's database as the store reports it at each
	// probe: for etcd, the largest member's database; for PostgreSQL, the database's.
	// +optional
	SizeBytes *int64 `json:"sizeBytes,omitempty"`
	// objectCount is the number of objects of the hosted types kept in this backend,
	// the sum of their HostedResources' status.objectCount.
	// +optional
	ObjectCount *int64 `json:"objectCount,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// StorageBackendList is a list of StorageBackends.
type StorageBackendList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`

	// items are the StorageBackends.
	Items []StorageBackend `json:"items"`
}
