package v1alpha1

// Labels and annotations that annex sets on the objects it manages.
const (
	// HostedResourceLabel on an internal CustomResourceDefinition names the
	// HostedResource that declares it. annex changes and deletes only the
	// CRDs that carry it.
	HostedResourceLabel = "annex.dev/hosted-resource"
	// StorageBackendAnnotation on an internal CustomResourceDefinition names
	// the StorageBackend that holds the type's objects, for the CRD's life.
	// A CRD without it lives on the default backend.
	StorageBackendAnnotation = "annex.dev/storage-backend"
	// StorageCacheAnnotation on an internal CustomResourceDefinition is the
	// cache (spec.storage.cache, or DefaultStorageCache) of the type's
	// storage, read when annex builds it. A CRD without it was made when the
	// watch cache was the default, and has a WatchCache.
	StorageCacheAnnotation = "annex.dev/storage-cache"
	// CacheBudgetAnnotation on an internal CustomResourceDefinition is the
	// budget of the type's lean caches in bytes (spec.storage.cacheBudget),
	// read at each measure of the caches; without it the type has annex's
	// --lean-cache-budget-per-type.
	CacheBudgetAnnotation = "annex.dev/cache-budget"
	// DeletionRetriedAtAnnotation on an internal CustomResourceDefinition
	// records when annex last woke the deletion of the type's objects after
	// it failed.
	DeletionRetriedAtAnnotation = "annex.dev/deletion-retried-at"
	// StorageKeyPrefixAnnotation on an internal CustomResourceDefinition is
	// the key prefix of the type's objects in its store, recorded when annex
	// creates the CRD and kept for the CRD's life. A CRD without it was made
	// before installs had prefixes of their own, and its objects are under
	// the store's --etcd-prefix.
	StorageKeyPrefixAnnotation = "annex.dev/storage-key-prefix"
	// MoveObservedAnnotation on an internal CustomResourceDefinition records
	// when annex first saw its HostedResource name another StorageBackend:
	// "<the HostedResource's generation> <RFC 3339 time>". A CRD deleted
	// while it carries it is being moved, and its deletion deletes none of
	// the type's objects: any written meanwhile stay in the old store.
	MoveObservedAnnotation = "annex.dev/move-observed"

	// AdoptedByAnnotation on a CustomResourceDefinition of the cluster
	// names the install of annex (its v1alpha1.ManagedByLabel value) that
	// adopted it: annex serves the type, and the CRD's versions are kept
	// unserved. Such a CRD does not make its group the cluster's for that
	// install.
	AdoptedByAnnotation = "annex.dev/adopted-by"

	// ConversionAnnotation on an adopted CustomResourceDefinition keeps,
	// as JSON, its spec.conversion (a webhook) while annex has set it to
	// None: while the cluster serves the version that annex writes back or
	// deletes the cluster's copies through, which the webhook would not
	// know. annex puts the conversion back when it removes that version.
	ConversionAnnotation = "annex.dev/adopted-conversion"

	// ManagedByLabel marks the APIServices that annex registers in the
	// cluster. Its value names the install (--apiservice-managed-by; the
	// Helm chart sets <namespace>.<fullname>), so that one install never
	// changes or deletes another's APIServices.
	ManagedByLabel = "annex.dev/managed-by"
	// DefaultManagedByValue is the value of ManagedByLabel when
	// --apiservice-managed-by is not given, and the one every install used
	// before the flag existed. An install with a value of its own adopts
	// the APIServices that carry this one and point at its own Service.
	DefaultManagedByValue = "annex-apiserver"
)

// Finalizers.
const (
	// HostedResourceFinalizer holds a HostedResource until its objects and
	// its type are gone.
	HostedResourceFinalizer = "annex.dev/hosted-objects"
	// StorageBackendInUseFinalizer holds a StorageBackend while a
	// HostedResource keeps objects in it: deleting it then would strand them.
	StorageBackendInUseFinalizer = "annex.dev/storage-backend-in-use"
)

// Condition types of a HostedResource.
const (
	// HostedResourceNamesAccepted and HostedResourceEstablished follow the
	// conditions of the same names of the type's CustomResourceDefinition.
	HostedResourceNamesAccepted = "NamesAccepted"
	HostedResourceEstablished   = "Established"
	// HostedResourceAPIServiceAvailable says whether the cluster's
	// aggregation layer sends the type's requests to annex.
	HostedResourceAPIServiceAvailable = "APIServiceAvailable"
	// HostedResourceStorageBackendReady says whether the StorageBackend that
	// spec.storage.backend names can hold the type's objects.
	HostedResourceStorageBackendReady = "StorageBackendReady"
)

// Reasons of a HostedResource's NamesAccepted and Established conditions,
// besides those copied from the type's CustomResourceDefinition.
const (
	// ReasonAdopting: the type's CRD in the cluster is being adopted, and
	// its APIServices are the cluster's until the switch.
	ReasonAdopting = "Adopting"
	// ReasonPending: the hosted-resource server has not looked at the type yet.
	ReasonPending = "Pending"
	// ReasonInvalid: the type's CustomResourceDefinition could not be written.
	ReasonInvalid = "Invalid"
	// ReasonTerminating: the type's objects, then the type, are being deleted.
	ReasonTerminating = "Terminating"
	// ReasonCRDConflict: a CustomResourceDefinition of the same name that no
	// HostedResource owns exists on annex.
	ReasonCRDConflict = "CustomResourceDefinitionConflict"
	// ReasonMovingStorageBackend: the type is re-created on the backend its
	// HostedResource now names.
	ReasonMovingStorageBackend = "MovingStorageBackend"
	// ReasonStorageBackendChangeRefused: the type has objects on the backend
	// it was created on, which annex does not move.
	ReasonStorageBackendChangeRefused = "StorageBackendChangeRefused"
)

// Reasons of a HostedResource's APIServiceAvailable condition; it is
// ReasonPending while an APIService is not available yet.
const (
	// ReasonGroupServedByCluster: the cluster serves the group itself, with
	// CustomResourceDefinitions.
	ReasonGroupServedByCluster = "GroupServedByCluster"
	// ReasonAPIServiceConflict: the cluster has an APIService of the same
	// name that annex does not manage.
	ReasonAPIServiceConflict = "APIServiceConflict"
	// ReasonAPIServiceRefused: the cluster refused annex's write of the
	// APIService, for example by the Helm chart's admission policy on
	// the groups annex may register.
	ReasonAPIServiceRefused = "APIServiceRefused"
	// ReasonRegistered: every served version is registered and available.
	ReasonRegistered = "Registered"
)

// Reasons of a HostedResource's StorageBackendReady condition.
const (
	ReasonDefaultStore           = "DefaultStore"
	ReasonStorageBackendNotFound = "StorageBackendNotFound"
	ReasonStorageBackendNotReady = "StorageBackendNotReady"
	ReasonStorageBackendPending  = "StorageBackendPending"
	ReasonStorageBackendReady    = "StorageBackendReady"
)

// Condition types of a StorageBackend.
const (
	// StorageBackendReady says whether a backend serves requests.
	StorageBackendReady = "Ready"
	// StorageBackendDeleting is set on a StorageBackend whose deletion waits
	// until no HostedResource keeps objects in it.
	StorageBackendDeleting = "Deleting"
	// StorageBackendSecure says whether annex reaches the store over TLS
	// only. It is False for a backend whose spec allows plaintext
	// (insecure) and whose store annex may reach without TLS.
	StorageBackendSecure = "Secure"
)

// Reasons of a StorageBackend's Secure condition.
const (
	// ReasonTLS: every connection to the store uses TLS.
	ReasonTLS = "TLS"
	// ReasonPlaintext: annex may reach the store without TLS.
	ReasonPlaintext = "Plaintext"
	// ReasonNotChecked: annex has not read the store's connection settings
	// (its Secret, say); the Ready condition says why.
	ReasonNotChecked = "NotChecked"
)

// ReasonInUse is the reason of a StorageBackend's Deleting condition.
const ReasonInUse = "InUse"
