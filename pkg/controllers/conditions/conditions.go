// Package conditions writes a HostedResource's status conditions with
// server-side apply, each controller as the owner of its own conditions, so
// that the controllers sharing one status never conflict with each other.
package conditions

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	annexac "annex.dev/annex/pkg/generated/applyconfiguration/annex/v1alpha1"
)

// Owner is a controller that owns some of a HostedResource's conditions.
type Owner struct {
	// FieldManager names the controller in managedFields.
	FieldManager string
	// Types are the condition types it owns. A condition of these types that
	// an Apply call does not mention is applied again as it is: leaving it out
	// would make server-side apply remove it.
	Types []string
	// ObservedGeneration says whether the owner also sets status.observedGeneration.
	ObservedGeneration bool
}

// Apply sets the given conditions, with observedGeneration at the object's
// generation and lastTransitionTime kept while the status stays the same.
// It writes nothing when nothing changes.
func (o Owner) Apply(ctx context.Context, c client.Client, hr *v1alpha1.HostedResource, conditions ...metav1.Condition) error {
	changed := o.ObservedGeneration && hr.Status.ObservedGeneration != hr.Generation
	given := map[string]bool{}
	status := annexac.HostedResourceStatus()
	for _, want := range conditions {
		given[want.Type] = true
		want.ObservedGeneration = hr.Generation
		want.LastTransitionTime = metav1.Now()
		current := meta.FindStatusCondition(hr.Status.Conditions, want.Type)
		if current != nil && current.Status == want.Status {
			want.LastTransitionTime = current.LastTransitionTime
		}
		if current == nil || current.Status != want.Status || current.Reason != want.Reason ||
			current.Message != want.Message || current.ObservedGeneration != want.ObservedGeneration {
			changed = true
		}
		status.WithConditions(condition(want))
	}
	if !changed {
		return nil
	}
	for _, t := range o.Types {
		if current := meta.FindStatusCondition(hr.Status.Conditions, t); current != nil && !given[t] {
			status.WithConditions(condition(*current))
		}
	}
	if o.ObservedGeneration {
		status.WithObservedGeneration(hr.Generation)
	}
	apply := annexac.HostedResource(hr.Name).WithStatus(status)
	return client.IgnoreNotFound(c.Status().Apply(ctx, apply, client.FieldOwner(o.FieldManager), client.ForceOwnership))
}

func condition(c metav1.Condition) *metav1ac.ConditionApplyConfiguration {
	return metav1ac.Condition().
		WithType(c.Type).
		WithStatus(c.Status).
		WithReason(c.Reason).
		WithMessage(c.Message).
		WithObservedGeneration(c.ObservedGeneration).
		WithLastTransitionTime(c.LastTransitionTime)
}
