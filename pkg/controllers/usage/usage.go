// Package usage reports in each HostedResource's status how many objects
// its type has and how much room they take, from the counts that annex's
// storage keeps for every resource (the apiserver's object count tracker,
// refreshed every --etcd-count-metric-poll-period).
package usage

import (
	"context"
	"time"

	"k8s.io/apiserver/pkg/storage"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	annexac "annex.dev/annex/pkg/generated/applyconfiguration/annex/v1alpha1"
)

// fieldManager owns status.objectCount and status.estimatedSizeBytes only.
const fieldManager = "annex-usage-controller"

// DefaultInterval is how often each type's count is read again.
const DefaultInterval = 30 * time.Second

// Reconciler copies each hosted type's object count into its HostedResource.
type Reconciler struct {
	Client client.Client
	// Stats returns the storage's latest count for a resource, named
	// plural.group; an error while it has none.
	Stats func(resource string) (storage.Stats, error)
	// Interval between two reads of one type's count; DefaultInterval when zero.
	Interval time.Duration
}

// SetupWithManager registers the reconciler.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("usage").
		For(&v1alpha1.HostedResource{}).
		Complete(r)
}

func (r *Reconciler) interval() time.Duration {
	if r.Interval > 0 {
		return r.Interval
	}
	return DefaultInterval
}

// Reconcile writes one type's count when it changed.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	hr := &v1alpha1.HostedResource{}
	if err := r.Client.Get(ctx, req.NamespacedName, hr); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !hr.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}
	// The name of a HostedResource is the resource's, plural.group.
	stats, err := r.Stats(hr.Name)
	if err != nil {
		// Not counted yet (the type's storage has not opened), or stale.
		return reconcile.Result{RequeueAfter: r.interval()}, nil
	}
	count := stats.ObjectCount
	var size *int64
	if stats.EstimatedAverageObjectSizeBytes > 0 || count == 0 {
		size = ptr.To(stats.EstimatedAverageObjectSizeBytes * count)
	}
	if ptr.Equal(hr.Status.ObjectCount, &count) && ptr.Equal(hr.Status.EstimatedSizeBytes, size) {
		return reconcile.Result{RequeueAfter: r.interval()}, nil
	}
	status := annexac.HostedResourceStatus().WithObjectCount(count)
	if size != nil {
		status.WithEstimatedSizeBytes(*size)
	}
	apply := annexac.HostedResource(hr.Name).WithStatus(status)
	if err := r.Client.Status().Apply(ctx, apply, client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	return reconcile.Result{RequeueAfter: r.interval()}, nil
}
