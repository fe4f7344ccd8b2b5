// Package hostedresource reconciles each HostedResource into the internal
// CustomResourceDefinition that the embedded apiextensions server serves,
// and reports the CRD's progress in the HostedResource's status.
package hostedresource

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/controllers/adoption"
	"annex.dev/annex/pkg/controllers/conditions"
	"annex.dev/annex/pkg/storage/routing"
)

// fieldManager owns the CRDs this controller writes, and the HostedResource
// conditions it applies.
const fieldManager = "annex-hostedresource-controller"

// Reconciler creates, updates and deletes the internal CRD of each HostedResource.
type Reconciler struct {
	Client client.Client
	// Objects lists hosted objects through annex, uncached, to tell whether a
	// type can move to another backend.
	Objects metadata.Interface
	// KeyPrefix is the key prefix in the store of the types this install
	// creates, recorded on each CRD it creates (v1alpha1.
	// StorageKeyPrefixAnnotation) and never changed after: installs that
	// share a store keep apart. Empty: none is recorded, and the type's
	// objects are under the store's own prefix.
	KeyPrefix string
	// MoveSettle is how long after a move is first seen annex looks for the
	// type's objects for the last time, so that every replica has seen the
	// move and refuses the type's writes; DefaultMoveSettle when zero.
	MoveSettle time.Duration
	// Clock tells the time; the real clock when nil.
	Clock clock.PassiveClock
}

// DefaultMoveSettle is the wait between the first sight of a move and the
// last look for the type's objects: replicas learn of the change from their
// informers, which follow a write within a second or so.
const DefaultMoveSettle = 5 * time.Second

// SetupWithManager registers the reconciler: it runs on every change of a
// HostedResource and of the CRD it owns.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("hostedresource").
		For(&v1alpha1.HostedResource{}).
		Watches(&apiextensionsv1.CustomResourceDefinition{},
			handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
				// CRDs and HostedResources share their names.
				return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: obj.GetName()}}}
			}),
			builder.WithPredicates(predicate.NewPredicateFuncs(func(obj client.Object) bool {
				_, ok := obj.GetLabels()[v1alpha1.HostedResourceLabel]
				return ok
			}))).
		Complete(r)
}

// Reconcile brings the CRD of one HostedResource in line with it.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	logger := ctrl.LoggerFrom(ctx)
	hr := &v1alpha1.HostedResource{}
	if err := r.Client.Get(ctx, req.NamespacedName, hr); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !hr.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, hr)
	}
	if controllerutil.AddFinalizer(hr, v1alpha1.HostedResourceFinalizer) {
		if err := r.Client.Update(ctx, hr); err != nil {
			return reconcile.Result{}, err
		}
	}

	crd := &apiextensionsv1.CustomResourceDefinition{}
	err := r.Client.Get(ctx, req.NamespacedName, crd)
	switch {
	case apierrors.IsNotFound(err):
		crd = desiredCRD(hr)
		if r.KeyPrefix != "" {
			// Only here: a CRD created before keeps the keys it has.
			crd.Annotations[v1alpha1.StorageKeyPrefixAnnotation] = r.KeyPrefix
		}
		if err := r.Client.Create(ctx, crd, client.FieldOwner(fieldManager)); err != nil {
			return reconcile.Result{}, r.reportError(ctx, hr, err)
		}
		logger.Info("Created the hosted type", "group", hr.Spec.Group, "kind", hr.Spec.Names.Kind)
	case err != nil:
		return reconcile.Result{}, err
	case crd.Labels[v1alpha1.HostedResourceLabel] != hr.Name:
		// Someone created this CRD on annex directly; it is not ours to change.
		return reconcile.Result{}, r.setStatus(ctx, hr, metav1.Condition{
			Type: v1alpha1.HostedResourceEstablished, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonCRDConflict,
			Message: fmt.Sprintf("a CustomResourceDefinition %s that this HostedResource does not own exists on annex; delete it to let annex serve the type", crd.Name),
		})
	case routing.BackendOf(crd) != routing.BackendOfHostedResource(hr):
		return r.moveBackend(ctx, hr, crd)
	default:
		desired := desiredCRD(hr)
		cache := desired.Annotations[v1alpha1.StorageCacheAnnotation]
		budget, budgeted := desired.Annotations[v1alpha1.CacheBudgetAnnotation]
		currentBudget, currentlyBudgeted := crd.Annotations[v1alpha1.CacheBudgetAnnotation]
		// Never off a CRD already deleted for a move: its objects would go.
		_, moveMarked := crd.Annotations[v1alpha1.MoveObservedAnnotation]
		moveMarked = moveMarked && crd.DeletionTimestamp.IsZero()
		if !apiequality.Semantic.DeepEqual(crd.Spec, desired.Spec) || crd.Annotations[v1alpha1.StorageCacheAnnotation] != cache ||
			budget != currentBudget || budgeted != currentlyBudgeted || moveMarked {
			crd.Spec = desired.Spec
			metav1.SetMetaDataAnnotation(&crd.ObjectMeta, v1alpha1.StorageCacheAnnotation, cache)
			if budgeted {
				metav1.SetMetaDataAnnotation(&crd.ObjectMeta, v1alpha1.CacheBudgetAnnotation, budget)
			} else {
				delete(crd.Annotations, v1alpha1.CacheBudgetAnnotation)
			}
			// A move given up (the HostedResource names the type's backend
			// again): deleting the CRD must delete its objects again.
			if moveMarked {
				delete(crd.Annotations, v1alpha1.MoveObservedAnnotation)
			}
			if err := r.Client.Update(ctx, crd, client.FieldOwner(fieldManager)); err != nil {
				return reconcile.Result{}, r.reportError(ctx, hr, err)
			}
			logger.Info("Updated the hosted type", "group", hr.Spec.Group, "kind", hr.Spec.Names.Kind)
		}
	}
	return reconcile.Result{}, r.setStatus(ctx, hr, conditionsFrom(crd)...)
}

// finalize deletes the CRD, which makes the apiextensions server delete every
// object of the type, and releases the HostedResource once the CRD is gone.
func (r *Reconciler) finalize(ctx context.Context, hr *v1alpha1.HostedResource) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(hr, v1alpha1.HostedResourceFinalizer) {
		return reconcile.Result{}, nil
	}
	if adoption.ReleasePending(hr) {
		// Deleting the type now would delete annex's objects before the
		// cluster holds them: the deletion follows the release.
		message := "waiting for the release of the type to end: annex deletes its objects once the cluster holds them"
		if a := hr.Status.Adoption; a.Reason == adoption.ReasonReleaseFailed {
			message = "the release failed (status.adoption.message): release again (kubectl annex release), " +
				"or set spec.adoption.release false to delete the type with annex's objects"
		}
		if err := r.setStatus(ctx, hr, metav1.Condition{
			Type: v1alpha1.HostedResourceEstablished, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonTerminating, Message: message,
		}); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	err := r.Client.Get(ctx, client.ObjectKey{Name: hr.Name}, crd)
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	if err == nil && crd.Labels[v1alpha1.HostedResourceLabel] == hr.Name {
		if crd.DeletionTimestamp.IsZero() {
			// A CRD marked for a move keeps its objects when deleted; the
			// deletion of a HostedResource deletes them.
			var opts []client.DeleteOption
			if _, marked := crd.Annotations[v1alpha1.MoveObservedAnnotation]; marked {
				patch := client.MergeFromWithOptions(crd.DeepCopy(), client.MergeFromWithOptimisticLock{})
				delete(crd.Annotations, v1alpha1.MoveObservedAnnotation)
				if err := r.Client.Patch(ctx, crd, patch); err != nil {
					return reconcile.Result{}, client.IgnoreNotFound(err)
				}
				// The CRD deleted is the one without the mark.
				opts = append(opts, client.Preconditions{UID: &crd.UID, ResourceVersion: &crd.ResourceVersion})
			}
			if err := r.Client.Delete(ctx, crd, opts...); err != nil && !apierrors.IsNotFound(err) {
				return reconcile.Result{}, err
			}
			ctrl.LoggerFrom(ctx).Info("Deleting the hosted type and its objects", "group", hr.Spec.Group, "kind", hr.Spec.Names.Kind)
		}
		message := "deleting the objects of the type, then the type"
		if c := apihelpers.FindCRDCondition(crd, apiextensionsv1.Terminating); c != nil && c.Message != "" {
			message = c.Message
		}
		if err := r.setStatus(ctx, hr, metav1.Condition{
			Type: v1alpha1.HostedResourceEstablished, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonTerminating, Message: message,
		}); err != nil {
			return reconcile.Result{}, err
		}
		if err := r.retryStalledDeletion(ctx, crd); err != nil {
			return reconcile.Result{}, err
		}
		// The CRD's deletion wakes this reconciler; the requeue is a safety net.
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	controllerutil.RemoveFinalizer(hr, v1alpha1.HostedResourceFinalizer)
	return reconcile.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, hr))
}

// moveBackend re-creates the CRD of a type whose HostedResource names
// another backend than the one the type was created on: a type's storage is
// bound to a backend for the CRD's life. It does so only for a type with no
// objects (admission refuses the change otherwise), and never deletes an
// object:
//
//   - Requests other than annex's own are refused while the backends differ,
//     but each replica decides that from its informers. annex marks the CRD
//     with the time it first saw the move (MoveObservedAnnotation) and looks
//     for objects for the last time once MoveSettle has passed, when every
//     replica refuses the type's writes.
//   - The mark makes the CRD's deletion keep the type's objects (package
//     routing): one that a late replica accepted after the last look stays
//     in the old store, under the type's key prefix, and is served again if
//     the type moves back.
//
// Each step is written before the next is taken, so a replica that stops
// anywhere is followed by one that picks up from there.
func (r *Reconciler) moveBackend(ctx context.Context, hr *v1alpha1.HostedResource, crd *apiextensionsv1.CustomResourceDefinition) (reconcile.Result, error) {
	from, to := routing.BackendOf(crd), routing.BackendOfHostedResource(hr)
	moving := metav1.Condition{
		Type: v1alpha1.HostedResourceEstablished, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonMovingStorageBackend,
		Message: fmt.Sprintf("re-creating the type, which has no objects, on StorageBackend %q (it was on %q)", to, from),
	}
	if !crd.DeletionTimestamp.IsZero() {
		// The CRD's deletion wakes this reconciler; the requeue is a safety net.
		return reconcile.Result{RequeueAfter: 5 * time.Second}, errors.Join(r.setStatus(ctx, hr, moving), r.retryStalledDeletion(ctx, crd))
	}
	now := r.now()
	since, ok := moveObserved(crd, hr.Generation)
	if !ok {
		// Any change of the HostedResource starts the wait again: a replica
		// may have served the type while it named the type's backend.
		patch := client.MergeFromWithOptions(crd.DeepCopy(), client.MergeFromWithOptimisticLock{})
		metav1.SetMetaDataAnnotation(&crd.ObjectMeta, v1alpha1.MoveObservedAnnotation, fmt.Sprintf("%d %s", hr.Generation, now.UTC().Format(time.RFC3339Nano)))
		if err := r.Client.Patch(ctx, crd, patch); err != nil {
			return reconcile.Result{}, err
		}
		since = now
	}
	if wait := since.Add(r.moveSettle()).Sub(now); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, r.setStatus(ctx, hr, moving)
	}
	has, err := routing.HasObjects(ctx, r.Objects, crd)
	if err != nil {
		statusErr := r.setStatus(ctx, hr, metav1.Condition{
			Type: v1alpha1.HostedResourceEstablished, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonMovingStorageBackend,
			Message: fmt.Sprintf("cannot tell whether the type has objects on StorageBackend %q, so it stays there for now: %v", from, err),
		})
		return reconcile.Result{}, errors.Join(err, statusErr)
	}
	if has {
		return reconcile.Result{}, r.setStatus(ctx, hr, metav1.Condition{
			Type: v1alpha1.HostedResourceEstablished, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonStorageBackendChangeRefused,
			Message: fmt.Sprintf("the type has objects on StorageBackend %q, and annex does not move objects between backends: "+
				"set spec.storage.backend back to %q (requests are refused until then), or delete the objects", from, from),
		})
	}
	// The preconditions make sure the CRD deleted is the one marked, and
	// the one found empty.
	if err := r.Client.Delete(ctx, crd, client.Preconditions{UID: &crd.UID, ResourceVersion: &crd.ResourceVersion}); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	ctrl.LoggerFrom(ctx).Info("Re-creating the hosted type on another storage backend", "group", hr.Spec.Group, "kind", hr.Spec.Names.Kind, "from", from, "to", to)
	return reconcile.Result{RequeueAfter: 5 * time.Second}, r.setStatus(ctx, hr, moving)
}

// moveObserved is when annex first saw the move that the HostedResource's
// generation asks for, from the CRD's mark; false when the mark is missing
// or is of another generation.
func moveObserved(crd *apiextensionsv1.CustomResourceDefinition, generation int64) (time.Time, bool) {
	var markedGeneration int64
	var at string
	if _, err := fmt.Sscanf(crd.Annotations[v1alpha1.MoveObservedAnnotation], "%d %s", &markedGeneration, &at); err != nil || markedGeneration != generation {
		return time.Time{}, false
	}
	since, err := time.Parse(time.RFC3339Nano, at)
	return since, err == nil
}

func (r *Reconciler) now() time.Time {
	if r.Clock != nil {
		return r.Clock.Now()
	}
	return time.Now()
}

func (r *Reconciler) moveSettle() time.Duration {
	if r.MoveSettle > 0 {
		return r.MoveSettle
	}
	return DefaultMoveSettle
}

// retryStalledDeletion wakes the apiextensions server's CRD finalizer for
// a type whose last attempt to delete its objects failed. The finalizer
// retries a failure at once, from its informer's copy of the CRD; when that
// copy does not hold the status of the failed attempt yet, the retry's
// status write meets a conflict, which the finalizer drops, expecting the
// CRD's next change to wake it. Its own status writes do not, so the type
// would stay terminating until the informer's resync, minutes later. A
// change of an annotation does wake it. The reconciler comes back every 5
// seconds while the CRD is terminating, which bounds these writes.
func (r *Reconciler) retryStalledDeletion(ctx context.Context, crd *apiextensionsv1.CustomResourceDefinition) error {
	c := apihelpers.FindCRDCondition(crd, apiextensionsv1.Terminating)
	if c == nil || c.Status != apiextensionsv1.ConditionTrue || !deletionFailed[c.Reason] ||
		!controllerutil.ContainsFinalizer(crd, apiextensionsv1.CustomResourceCleanupFinalizer) {
		return nil
	}
	patch := client.MergeFrom(crd.DeepCopy())
	metav1.SetMetaDataAnnotation(&crd.ObjectMeta, v1alpha1.DeletionRetriedAtAnnotation, time.Now().UTC().Format(time.RFC3339))
	if err := r.Client.Patch(ctx, crd, patch); err != nil {
		return client.IgnoreNotFound(err)
	}
	ctrl.LoggerFrom(ctx).Info("Retrying the deletion of the hosted type's objects", "after", c.Message)
	return nil
}

// deletionFailed are the reasons of the CRD finalizer's Terminating
// condition after a failed attempt.
var deletionFailed = map[string]bool{"InstanceDeletionFailed": true, "InstanceDeletionCheck": true}

// reportError records in the status why the CRD could not be written, and
// returns err so that the request is retried.
func (r *Reconciler) reportError(ctx context.Context, hr *v1alpha1.HostedResource, err error) error {
	if statusErr := r.setStatus(ctx, hr, metav1.Condition{
		Type: v1alpha1.HostedResourceEstablished, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonInvalid, Message: err.Error(),
	}); statusErr != nil {
		return fmt.Errorf("%w (and updating the status: %v)", err, statusErr)
	}
	return err
}

// statusOwner applies the conditions this controller owns, and observedGeneration.
var statusOwner = conditions.Owner{
	FieldManager:       fieldManager,
	Types:              []string{v1alpha1.HostedResourceNamesAccepted, v1alpha1.HostedResourceEstablished},
	ObservedGeneration: true,
}

func (r *Reconciler) setStatus(ctx context.Context, hr *v1alpha1.HostedResource, conds ...metav1.Condition) error {
	return statusOwner.Apply(ctx, r.Client, hr, conds...)
}

// desiredCRD is the CRD that a HostedResource declares.
func desiredCRD(hr *v1alpha1.HostedResource) *apiextensionsv1.CustomResourceDefinition {
	spec := hr.Spec.DeepCopy()
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{
			Name:   hr.Name,
			Labels: map[string]string{v1alpha1.HostedResourceLabel: hr.Name},
			// The type's storage is built on this backend, for the CRD's life.
			Annotations: map[string]string{v1alpha1.StorageBackendAnnotation: routing.BackendOfHostedResource(hr)},
		},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group:                 spec.Group,
			Names:                 spec.Names,
			Scope:                 spec.Scope,
			Versions:              spec.Versions,
			Conversion:            spec.Conversion,
			PreserveUnknownFields: spec.PreserveUnknownFields,
		},
	}
	// The cache the apiextensions server builds the type's storage with,
	// always written: a CRD without it was made when the watch cache was
	// the default, and keeps it until annex records the cache.
	cache := hr.Spec.Storage.Cache
	if cache == "" {
		cache = v1alpha1.DefaultStorageCache
	}
	crd.Annotations[v1alpha1.StorageCacheAnnotation] = string(cache)
	if b := hr.Spec.Storage.CacheBudget; b != nil {
		crd.Annotations[v1alpha1.CacheBudgetAnnotation] = strconv.FormatInt(b.Value(), 10)
	}
	return crd
}

// conditionsFrom translates the CRD's NamesAccepted and Established conditions.
func conditionsFrom(crd *apiextensionsv1.CustomResourceDefinition) []metav1.Condition {
	var out []metav1.Condition
	for _, t := range []struct {
		crd apiextensionsv1.CustomResourceDefinitionConditionType
		hr  string
	}{
		{apiextensionsv1.NamesAccepted, v1alpha1.HostedResourceNamesAccepted},
		{apiextensionsv1.Established, v1alpha1.HostedResourceEstablished},
	} {
		c := metav1.Condition{Type: t.hr, Status: metav1.ConditionUnknown, Reason: v1alpha1.ReasonPending, Message: "waiting for the hosted-resource server"}
		if crdCondition := apihelpers.FindCRDCondition(crd, t.crd); crdCondition != nil {
			c.Status = metav1.ConditionStatus(crdCondition.Status)
			c.Reason, c.Message = crdCondition.Reason, crdCondition.Message
			if c.Reason == "" {
				c.Reason = string(crdCondition.Status)
			}
		}
		out = append(out, c)
	}
	return out
}
