package annex

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultStorageBackend names the backend given on annex's command line. A
// HostedResource that names no backend is stored there.
const DefaultStorageBackend = "default"

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// HostedResource declares a custom resource type that annex serves from its own
// storage. Its spec is a CustomResourceDefinition spec plus a storage policy.
type HostedResource struct {
	metav1.TypeMeta
	metav1.ObjectMeta

	Spec   HostedResourceSpec
	Status HostedResourceStatus
}

// HostedResourceSpec is the CustomResourceDefinition v1 spec plus a storage
// policy. The CRD parts are the upstream v1 types, not copies: a HostedResource
// is handed to the embedded apiextensions server as a v1 CRD, and validating it
// with the upstream CRD validation keeps both in step.
type HostedResourceSpec struct {
	Group                 string
	Names                 apiextensionsv1.CustomResourceDefinitionNames
	Scope                 apiextensionsv1.ResourceScope
	Versions              []apiextensionsv1.CustomResourceDefinitionVersion
	Conversion            *apiextensionsv1.CustomResourceConversion
	PreserveUnknownFields bool

	Storage HostedResourceStorage
	// Adoption, when set, takes over a CustomResourceDefinition the
	// cluster serves, with its objects.
	Adoption *Adoption
}

// Adoption names the cluster's CustomResourceDefinition whose type and
// objects annex takes over.
type Adoption struct {
	CustomResourceDefinition string
	// Release gives the type back to the cluster.
	Release bool
	// DeleteClusterCopies deletes the objects the cluster's etcd still
	// holds of the type, once it is adopted.
	DeleteClusterCopies bool
}

// AdoptionPhase is how far the adoption of a CustomResourceDefinition went.
type AdoptionPhase string

// Adoption phases.
const (
	AdoptionCopying     AdoptionPhase = "Copying"
	AdoptionFrozen      AdoptionPhase = "Frozen"
	AdoptionSwitched    AdoptionPhase = "Switched"
	AdoptionAdopted     AdoptionPhase = "Adopted"
	AdoptionRollingBack AdoptionPhase = "RollingBack"
	AdoptionReleased    AdoptionPhase = "Released"
	AdoptionFailed      AdoptionPhase = "Failed"
)

// AdoptionStatus is the progress of an adoption.
type AdoptionStatus struct {
	Phase         AdoptionPhase
	Copied, Total int64
	StartTime     *metav1.Time
	FrozenTime    *metav1.Time
	SwitchedTime  *metav1.Time
	AdoptedTime   *metav1.Time
	Freeze        *metav1.Duration
	Reason        string
	Message       string

	ReleaseStartTime  *metav1.Time
	ReleaseFrozenTime *metav1.Time
	ReleasedTime      *metav1.Time
	Recreated         int64
	RecreatedObjects  []string

	// ClusterCopies is the deletion that DeleteClusterCopies asks for.
	ClusterCopies *ClusterCopiesStatus
}

// ClusterCopiesStatus is the progress of the deletion of the objects the
// cluster's etcd held of an adopted type.
type ClusterCopiesStatus struct {
	Total, Deleted int64
	StartTime      *metav1.Time
	CompletionTime *metav1.Time
}

// HostedResourceStorage says where and for how long a hosted type's objects are kept.
type HostedResourceStorage struct {
	// Backend is the name of a StorageBackend, or "default".
	Backend string
	// Retention bounds how many objects are kept and for how long.
	Retention *RetentionPolicy
	// Cache is what annex keeps in memory of the type's objects.
	Cache StorageCache
	// CacheBudget bounds the memory of the type's lean caches.
	CacheBudget *resource.Quantity
}

// StorageCache is what annex keeps in memory of a hosted type's objects.
type StorageCache string

// Storage caches.
const (
	StorageCacheWatchCache StorageCache = "WatchCache"
	StorageCacheLean       StorageCache = "Lean"
	StorageCacheNone       StorageCache = "None"
)

// RetentionPolicy bounds the objects of a high-volume type.
type RetentionPolicy struct {
	// MaxAge is how long an object is kept after its creation.
	MaxAge *metav1.Duration
	// MaxObjectsPerNamespace is how many objects a namespace keeps; the oldest go first.
	MaxObjectsPerNamespace *int64
}

// HostedResourceStatus is the observed state of a HostedResource.
type HostedResourceStatus struct {
	ObservedGeneration int64
	Conditions         []metav1.Condition
	// ObjectCount and EstimatedSizeBytes are the type's objects as its
	// storage last counted them.
	ObjectCount        *int64
	EstimatedSizeBytes *int64
	// Adoption is the progress of spec.adoption.
	Adoption *AdoptionStatus
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// HostedResourceList is a list of HostedResources.
type HostedResourceList struct {
	metav1.TypeMeta
	metav1.ListMeta

	Items []HostedResource
}

// StorageBackendType is the kind of store a StorageBackend describes.
type StorageBackendType string

// Storage backend types.
const (
	StorageBackendEmbedded StorageBackendType = "Embedded"
	StorageBackendEtcd     StorageBackendType = "Etcd"
	StorageBackendPostgres StorageBackendType = "Postgres"
)

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// StorageBackend describes a store that hosted resources can live in.
type StorageBackend struct {
	metav1.TypeMeta
	metav1.ObjectMeta

	Spec   StorageBackendSpec
	Status StorageBackendStatus
}

// StorageBackendSpec is a discriminated union on Type.
type StorageBackendSpec struct {
	Type     StorageBackendType
	Etcd     *EtcdStorage
	Postgres *PostgresStorage
}

// EtcdStorage is an external etcd cluster.
type EtcdStorage struct {
	// Endpoints are the client URLs of the cluster's members.
	Endpoints []string
	// TLSSecretRef names a Secret with tls.crt, tls.key and ca.crt.
	TLSSecretRef *SecretReference
	// Insecure allows http:// endpoints.
	Insecure bool
}

// PostgresStorage is a PostgreSQL database.
type PostgresStorage struct {
	// DSNSecretRef names the Secret key that holds the connection string.
	DSNSecretRef SecretKeySelector
	// Insecure allows a connection string that lets the connection go
	// without TLS.
	Insecure bool
}

// SecretReference names a Secret.
type SecretReference struct {
	Namespace string
	Name      string
}

// SecretKeySelector names one key of a Secret.
type SecretKeySelector struct {
	Namespace string
	Name      string
	Key       string
}

// StorageBackendStatus is the observed state of a StorageBackend.
type StorageBackendStatus struct {
	ObservedGeneration int64
	Conditions         []metav1.Condition
	// SizeBytes is the store's database size as the store reports it.
	SizeBytes *int64
	// ObjectCount is the number of objects of the types kept in the backend.
	ObjectCount *int64
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// StorageBackendList is a list of StorageBackends.
type StorageBackendList struct {
	metav1.TypeMeta
	metav1.ListMeta

	Items []StorageBackend
}
