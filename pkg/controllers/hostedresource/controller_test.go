package hostedresource

import (
	"context"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// terminatingCRD is a CRD being deleted, whose objects the apiextensions
// server's finalizer last tried to delete with the given outcome.
func terminatingCRD(reason string) *apiextensionsv1.CustomResourceDefinition {
	now := metav1.Now()
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{
			Name: "thingies.example.com", Labels: map[string]string{v1alpha1.HostedResourceLabel: "thingies.example.com"},
			DeletionTimestamp: &now, Finalizers: []string{apiextensionsv1.CustomResourceCleanupFinalizer},
		},
		Status: apiextensionsv1.CustomResourceDefinitionStatus{Conditions: []apiextensionsv1.CustomResourceDefinitionCondition{{
			Type: apiextensionsv1.Terminating, Status: apiextensionsv1.ConditionTrue, Reason: reason, Message: "could not list instances: storage is (re)initializing",
		}}},
	}
}

func TestRetryStalledDeletion(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		reason string
		woken  bool
	}{
		// The finalizer failed and may not come back by itself: annex
		// changes the CRD, which wakes it.
		{"InstanceDeletionFailed", true},
		{"InstanceDeletionCheck", true},
		// The finalizer is at work, or done: nothing to wake.
		{"InstanceDeletionInProgress", false},
		{"InstanceDeletionCompleted", false},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			crd := terminatingCRD(tc.reason)
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(crd).Build()
			r := &Reconciler{Client: c}
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(crd), crd); err != nil {
				t.Fatal(err)
			}
			if err := r.retryStalledDeletion(context.Background(), crd); err != nil {
				t.Fatalf("waking the deletion: %v", err)
			}
			got := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(crd), got); err != nil {
				t.Fatal(err)
			}
			_, woken := got.Annotations[v1alpha1.DeletionRetriedAtAnnotation]
			if woken != tc.woken {
				t.Errorf("a terminating CRD whose deletion is %s was changed: %v, want %v (annotations %v)", tc.reason, woken, tc.woken, got.Annotations)
			}
			if got.DeletionTimestamp == nil || len(got.Finalizers) != 1 {
				t.Errorf("waking the deletion changed the deletion itself: %v, finalizers %v", got.DeletionTimestamp, got.Finalizers)
			}
		})
	}
	t.Run("gone meanwhile", func(t *testing.T) {
		c := fake.NewClientBuilder().WithScheme(scheme).Build()
		r := &Reconciler{Client: c}
		if err := r.retryStalledDeletion(context.Background(), terminatingCRD("InstanceDeletionFailed")); err != nil {
			t.Errorf("a CRD deleted meanwhile: %v, want nothing to do", err)
		}
	})
}
