// Package controller keeps the Compliant condition of PolicyReports: the
// example controller that runs against a type annex hosts, through the
// ordinary controller-runtime client and cache.
package controller

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	reportsv1 "annex.dev/annex/examples/reports/api/v1"
)

// Name is the controller's name in logs and metrics.
const Name = "policyreport-compliance"

// Reconciler writes status.conditions[Compliant] and
// status.observedGeneration of each PolicyReport through the status
// subresource. It is level-triggered: every reconcile computes the condition
// from the object as it is now, and writes only when that differs from the
// status.
type Reconciler struct {
	client client.Client
}

// SetupWithManager registers the reconciler with mgr, whose scheme must hold
// the reports.example.com/v1 types (reportsv1.AddToScheme). The reports are
// read from mgr's cache, which an informer on PolicyReports keeps.
func SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named(Name).
		For(&reportsv1.PolicyReport{}).
		Complete(&Reconciler{client: mgr.GetClient()})
}

// Reconcile brings the status of one PolicyReport up to date.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)

	report := &reportsv1.PolicyReport{}
	if err := r.client.Get(ctx, req.NamespacedName, report); err != nil {
		// A deleted report has no status to keep.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	cond := ComplianceCondition(report)
	changed := meta.SetStatusCondition(&report.Status.Conditions, cond)
	if !changed && report.Status.ObservedGeneration == report.Generation {
		return ctrl.Result{}, nil
	}
	report.Status.ObservedGeneration = report.Generation

	// Update, not patch: the resourceVersion makes the write conditional on
	// the report being the one the condition was computed from.
	if err := r.client.Status().Update(ctx, report); err != nil {
		if apierrors.IsConflict(err) {
			// The report changed since the cache saw it; the watch event
			// of that change brings it back here.
			log.V(1).Info("Report changed while updating its status; waiting for the newer version")
			return ctrl.Result{}, nil
		}
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("updating the status of PolicyReport %s: %w", req.NamespacedName, err)
	}
	log.V(1).Info("Updated the Compliant condition", "status", cond.Status, "reason", cond.Reason, "generation", report.Generation)
	return ctrl.Result{}, nil
}
