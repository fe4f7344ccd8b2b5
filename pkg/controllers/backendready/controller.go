// Package backendready sets the StorageBackendReady condition of each
// HostedResource from the StorageBackend it names, so that a user sees on
// the HostedResource whether its objects have somewhere to go.
package backendready

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/controllers/conditions"
)

// fieldManager owns the StorageBackendReady condition and
// nothing else, so that its server-side applies never conflict with the
// other writers of a HostedResource's status.
const fieldManager = "annex-storagebackend-controller"

// Reconciler sets the StorageBackendReady condition of each
// HostedResource from the StorageBackend it names.
type Reconciler struct {
	Client client.Client
}

// SetupWithManager registers the reconciler: it runs on every change of a
// HostedResource, and of a StorageBackend for the HostedResources naming it.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("hostedresource-storagebackend").
		For(&v1alpha1.HostedResource{}).
		Watches(&v1alpha1.StorageBackend{}, handler.EnqueueRequestsFromMapFunc(r.namingBackend)).
		Complete(r)
}

// namingBackend lists the HostedResources that name a StorageBackend. It
// filters the cached list rather than using a field index: an index must be
// registered before the manager starts, when annex does not serve yet, and
// HostedResources are few.
func (r *Reconciler) namingBackend(ctx context.Context, obj client.Object) []reconcile.Request {
	list := &v1alpha1.HostedResourceList{}
	if err := r.Client.List(ctx, list); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the HostedResources of a StorageBackend", "storageBackend", obj.GetName())
		return nil
	}
	requests := make([]reconcile.Request, 0, len(list.Items))
	for _, hr := range list.Items {
		if hr.Spec.Storage.Backend != obj.GetName() {
			continue
		}
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKey{Name: hr.Name}})
	}
	return requests
}

// Reconcile applies one HostedResource's StorageBackendReady condition when it changed.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	hr := &v1alpha1.HostedResource{}
	if err := r.Client.Get(ctx, req.NamespacedName, hr); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !hr.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}
	desired, err := r.condition(ctx, hr.Spec.Storage.Backend)
	if err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, statusOwner.Apply(ctx, r.Client, hr, desired)
}

// statusOwner applies StorageBackendReady, the one condition this controller owns.
var statusOwner = conditions.Owner{
	FieldManager: fieldManager,
	Types:        []string{v1alpha1.HostedResourceStorageBackendReady},
}

// condition is the StorageBackendReady condition of a HostedResource that names backend.
func (r *Reconciler) condition(ctx context.Context, backend string) (metav1.Condition, error) {
	c := metav1.Condition{Type: v1alpha1.HostedResourceStorageBackendReady, Status: metav1.ConditionFalse}
	if backend == annex.DefaultStorageBackend {
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonDefaultStore
		c.Message = "annex stores this type in its default store, the one given on its command line"
		return c, nil
	}
	sb := &v1alpha1.StorageBackend{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: backend}, sb); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return c, err
		}
		c.Reason = v1alpha1.ReasonStorageBackendNotFound
		c.Message = fmt.Sprintf("StorageBackend %q does not exist", backend)
		return c, nil
	}
	ready := meta.FindStatusCondition(sb.Status.Conditions, v1alpha1.StorageBackendReady)
	switch {
	case ready == nil || ready.Status == metav1.ConditionUnknown:
		c.Status, c.Reason = metav1.ConditionUnknown, v1alpha1.ReasonStorageBackendPending
		c.Message = fmt.Sprintf("StorageBackend %q has not been probed yet", backend)
	case ready.Status != metav1.ConditionTrue:
		c.Reason = v1alpha1.ReasonStorageBackendNotReady
		c.Message = fmt.Sprintf("StorageBackend %q is not ready (%s): %s", backend, ready.Reason, ready.Message)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonStorageBackendReady
		c.Message = fmt.Sprintf("annex stores this type in StorageBackend %q: %s", backend, ready.Message)
	}
	return c, nil
}
