// Package controllers assembles annex's in-process controllers into one
// controller-runtime manager that talks to annex through its loopback client.
package controllers

import (
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/controllers/adoption"
	"annex.dev/annex/pkg/controllers/apiservice"
	"annex.dev/annex/pkg/controllers/backendready"
	"annex.dev/annex/pkg/controllers/hostedresource"
	"annex.dev/annex/pkg/controllers/retention"
	"annex.dev/annex/pkg/controllers/storagebackend"
	"annex.dev/annex/pkg/controllers/usage"
	"annex.dev/annex/pkg/storage/backend"
	"annex.dev/annex/pkg/storage/routing"
)

// Scheme holds the types annex's controllers read and write.
var Scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(v1alpha1.AddToScheme(Scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(Scheme))
}

// clusterScheme holds the cluster's types that annex reads and writes.
var clusterScheme = runtime.NewScheme()

func init() {
	utilruntime.Must(apiregistrationv1.AddToScheme(clusterScheme))
	utilruntime.Must(admissionregistrationv1.AddToScheme(clusterScheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(clusterScheme))
	utilruntime.Must(corev1.AddToScheme(clusterScheme))
}

// Options say which controllers run and how.
type Options struct {
	// Cluster reaches the cluster in aggregated mode; nil in standalone mode.
	Cluster *rest.Config
	// APIService is where the cluster sends hosted requests. With Cluster,
	// it turns on the apiservice controller.
	APIService *apiservice.Target
	// LeaderElection makes one replica at a time run the controllers, with a
	// Lease in the cluster, in APIService.Namespace.
	LeaderElection bool
	// Backends probes StorageBackends, with the Secrets of the cluster
	// they name.
	Backends *backend.Factory
	// Retention says how often and how fast retention policies are enforced.
	Retention retention.Options
	// ProbeInterval is how often each StorageBackend is probed.
	ProbeInterval time.Duration
	// StorageKeyPrefix is the key prefix recorded on the CRDs of the types
	// created from now on; empty: none, the store's own.
	StorageKeyPrefix string
	// ObjectStats returns the storage's latest count of a resource
	// (plural.group); nil turns the usage controller off.
	ObjectStats func(resource string) (storage.Stats, error)
	// Objects opens the store of a hosted type, for the adoption of the
	// cluster's CRDs; nil turns the adoption controller off.
	Objects func(schema.GroupResource) (*routing.RawObjects, error)
	// AdoptionFreezeSettle is adoption.Reconciler.FreezeSettle.
	AdoptionFreezeSettle time.Duration
	// AdoptionDeleteBatch is adoption.Reconciler.DeleteBatch.
	AdoptionDeleteBatch int
	// AdoptionReleaseStallTimeout is adoption.Reconciler.ReleaseStallTimeout.
	AdoptionReleaseStallTimeout time.Duration
}

// NewManager returns a manager with every controller registered. loopback
// reaches annex itself.
func NewManager(loopback *rest.Config, opts Options) (ctrl.Manager, error) {
	mgrOptions := ctrl.Options{
		Scheme: Scheme,
		Logger: klog.Background().WithName("controllers"),
		// annex serves its own /metrics and /readyz; the manager must not open ports.
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// A manager that stopped is replaced by a new one, with controllers
		// of the same names, in the same process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	}
	if opts.LeaderElection {
		if opts.Cluster == nil || opts.APIService == nil {
			return nil, fmt.Errorf("leader election needs a cluster and the namespace of annex's Service")
		}
		mgrOptions.LeaderElection = true
		mgrOptions.LeaderElectionID = "annex-controllers"
		mgrOptions.LeaderElectionNamespace = opts.APIService.Namespace
		mgrOptions.LeaderElectionConfig = opts.Cluster
		// A stopping replica hands the lease over at once.
		mgrOptions.LeaderElectionReleaseOnCancel = true
	}
	mgr, err := ctrl.NewManager(loopback, mgrOptions)
	if err != nil {
		return nil, fmt.Errorf("creating the controller manager: %w", err)
	}
	objects, err := metadata.NewForConfig(loopback)
	if err != nil {
		return nil, fmt.Errorf("building the loopback metadata client: %w", err)
	}
	if err := (&hostedresource.Reconciler{Client: mgr.GetClient(), Objects: objects, KeyPrefix: opts.StorageKeyPrefix}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the hostedresource controller: %w", err)
	}
	if err := (&storagebackend.Reconciler{Client: mgr.GetClient(), Prober: opts.Backends, Interval: opts.ProbeInterval}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the storagebackend controller: %w", err)
	}
	if err := (&backendready.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the hostedresource-storagebackend controller: %w", err)
	}
	if opts.ObjectStats != nil {
		if err := (&usage.Reconciler{Client: mgr.GetClient(), Stats: opts.ObjectStats}).SetupWithManager(mgr); err != nil {
			return nil, fmt.Errorf("setting up the usage controller: %w", err)
		}
	}
	if err := (&retention.Reconciler{Client: mgr.GetClient(), Options: opts.Retention}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the retention controller: %w", err)
	}
	if opts.Cluster != nil && opts.APIService != nil {
		clusterCluster, err := cluster.New(opts.Cluster, func(o *cluster.Options) { o.Scheme = clusterScheme })
		if err != nil {
			return nil, fmt.Errorf("connecting to the cluster: %w", err)
		}
		if err := mgr.Add(clusterCluster); err != nil {
			return nil, err
		}
		r := &apiservice.Reconciler{Annex: mgr.GetClient(), Cluster: clusterCluster.GetClient(), Target: *opts.APIService}
		if err := r.SetupWithManager(mgr, clusterCluster); err != nil {
			return nil, fmt.Errorf("setting up the apiservice controller: %w", err)
		}
		if opts.Objects != nil {
			if err := setupAdoption(mgr, clusterCluster, opts); err != nil {
				return nil, fmt.Errorf("setting up the adoption controller: %w", err)
			}
		}
	}
	return mgr, nil
}

func setupAdoption(mgr ctrl.Manager, clusterCluster cluster.Cluster, opts Options) error {
	// The copy reads the cluster page after page, and the last changes one
	// object after another while writes are refused: client-go's default
	// limit of 5 requests a second would stretch the freeze. The cluster's
	// own flow control still applies.
	cfg := rest.CopyConfig(opts.Cluster)
	cfg.QPS, cfg.Burst = 200, 400
	objects, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	objectsMetadata, err := metadata.NewForConfig(cfg)
	if err != nil {
		return err
	}
	target := opts.APIService
	r := &adoption.Reconciler{
		Annex:               mgr.GetClient(),
		AnnexReader:         mgr.GetAPIReader(),
		Cluster:             clusterCluster.GetClient(),
		ClusterReader:       clusterCluster.GetAPIReader(),
		Dynamic:             objects,
		Metadata:            objectsMetadata,
		Objects:             opts.Objects,
		ServiceNamespace:    target.Namespace,
		ServiceName:         target.Name,
		Port:                target.Port,
		CABundle:            target.CABundle,
		ManagedBy:           target.Install().ManagedByValue(),
		FreezeSettle:        opts.AdoptionFreezeSettle,
		DeleteBatch:         opts.AdoptionDeleteBatch,
		ReleaseStallTimeout: opts.AdoptionReleaseStallTimeout,
	}
	return r.SetupWithManager(mgr, clusterCluster)
}
