// Package storagebackend keeps each StorageBackend's Ready condition in line
// with a real probe of its store, and holds a StorageBackend that is deleted
// while a HostedResource keeps objects in it.
package storagebackend

import (
	"context"
	"fmt"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/backend"
	"annex.dev/annex/pkg/storage/routing"
)

// DefaultProbeInterval is how often a StorageBackend is probed again, so
// that its status follows the store.
const DefaultProbeInterval = 10 * time.Second

// Prober checks the store a StorageBackend describes; backend.Factory is one.
type Prober interface {
	Probe(ctx context.Context, sb *v1alpha1.StorageBackend) backend.Result
}

// Reconciler probes each StorageBackend and records the result in its Ready
// condition.
type Reconciler struct {
	Client client.Client
	Prober Prober
	// Interval between probes of one backend; DefaultProbeInterval when zero.
	Interval time.Duration
}

// SetupWithManager registers the reconciler. Status writes do not trigger
// it (only creations and spec changes do); the periodic requeue follows the
// store and the Secrets, which are not watched so that annex needs no list
// or watch permission on the cluster's Secrets.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("storagebackend").
		For(&v1alpha1.StorageBackend{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A HostedResource that comes to a backend holds it; one that
		// leaves it, or goes, may release it.
		Watches(&v1alpha1.HostedResource{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
			hr, ok := obj.(*v1alpha1.HostedResource)
			if !ok {
				return nil
			}
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: routing.BackendOfHostedResource(hr)}}}
		}), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A probe of a dead store waits for its timeout; let others proceed.
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

func (r *Reconciler) interval() time.Duration {
	if r.Interval > 0 {
		return r.Interval
	}
	return DefaultProbeInterval
}

// objectCount sums the object counts of the types kept in the backend; nil
// when none of them has been counted.
func objectCount(backend string, hrs []v1alpha1.HostedResource) *int64 {
	var total *int64
	for _, hr := range hrs {
		if routing.BackendOfHostedResource(&hr) != backend || hr.Status.ObjectCount == nil {
			continue
		}
		total = ptr.To(ptr.Deref(total, 0) + *hr.Status.ObjectCount)
	}
	return total
}

// secureCondition says whether annex reaches the store over TLS only.
func secureCondition(connection *backend.Connection, generation int64) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.StorageBackendSecure, ObservedGeneration: generation}
	switch {
	case connection == nil:
		c.Status, c.Reason = metav1.ConditionUnknown, v1alpha1.ReasonNotChecked
		c.Message = "annex has not read the backend's connection settings; the Ready condition says why"
	case connection.Plaintext:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1alpha1.ReasonPlaintext, connection.Message
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, v1alpha1.ReasonTLS, connection.Message
	}
	return c
}

// Reconcile holds a StorageBackend that is deleted while in use, probes it,
// and writes its status when the result changed.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	sb := &v1alpha1.StorageBackend{}
	if err := r.Client.Get(ctx, req.NamespacedName, sb); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	var hrs v1alpha1.HostedResourceList
	if err := r.Client.List(ctx, &hrs); err != nil {
		return reconcile.Result{}, err
	}
	var crds apiextensionsv1.CustomResourceDefinitionList
	if err := r.Client.List(ctx, &crds); err != nil {
		return reconcile.Result{}, err
	}
	// A backend in use carries a finalizer, so that deleting it waits for
	// its users; one nobody uses is deleted at once.
	users := routing.BackendUsers(sb.Name, hrs.Items, crds.Items)
	inUse := len(users) > 0
	changed := false
	switch {
	case inUse && sb.DeletionTimestamp.IsZero():
		// No finalizer may be added once the deletion has begun.
		changed = controllerutil.AddFinalizer(sb, v1alpha1.StorageBackendInUseFinalizer)
	case !inUse:
		changed = controllerutil.RemoveFinalizer(sb, v1alpha1.StorageBackendInUseFinalizer)
	}
	if changed {
		if err := r.Client.Update(ctx, sb); err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
		if !sb.DeletionTimestamp.IsZero() {
			ctrl.LoggerFrom(ctx).Info("A deleted StorageBackend is no longer in use: released")
		}
	}
	if !sb.DeletionTimestamp.IsZero() && !inUse {
		return reconcile.Result{}, nil
	}
	var deleting *metav1.Condition
	if !sb.DeletionTimestamp.IsZero() {
		deleting = &metav1.Condition{
			Type: v1alpha1.StorageBackendDeleting, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonInUse, ObservedGeneration: sb.Generation,
			Message: fmt.Sprintf("the deletion waits until no HostedResource keeps objects here; in use by %s", strings.Join(users, ", ")),
		}
	}
	result := r.Prober.Probe(ctx, sb)
	condition := metav1.Condition{
		Type: v1alpha1.StorageBackendReady, Status: metav1.ConditionFalse,
		Reason: result.Reason, Message: result.Message, ObservedGeneration: sb.Generation,
	}
	if result.Ready {
		condition.Status = metav1.ConditionTrue
	}
	updated := sb.DeepCopy()
	updated.Status.ObservedGeneration = sb.Generation
	meta.SetStatusCondition(&updated.Status.Conditions, condition)
	meta.SetStatusCondition(&updated.Status.Conditions, secureCondition(result.Connection, sb.Generation))
	if deleting != nil {
		meta.SetStatusCondition(&updated.Status.Conditions, *deleting)
	}
	if result.SizeBytes != nil {
		updated.Status.SizeBytes = result.SizeBytes
	}
	updated.Status.ObjectCount = objectCount(sb.Name, hrs.Items)
	if !apiequality.Semantic.DeepEqual(updated.Status, sb.Status) {
		previous := meta.FindStatusCondition(sb.Status.Conditions, v1alpha1.StorageBackendReady)
		if previous == nil || previous.Status != condition.Status || previous.Reason != condition.Reason {
			ctrl.LoggerFrom(ctx).Info("StorageBackend readiness changed", "ready", condition.Status, "reason", condition.Reason, "message", condition.Message)
		}
		if err := r.Client.Status().Update(ctx, updated); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				// Changed or deleted meanwhile: probe again on a fresh read.
				return reconcile.Result{RequeueAfter: time.Second}, nil
			}
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{RequeueAfter: r.interval()}, nil
}
