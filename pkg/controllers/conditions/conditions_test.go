package conditions

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/managedfields"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	openapibuilder3 "k8s.io/kube-openapi/pkg/builder3"
	openapiutil "k8s.io/kube-openapi/pkg/util"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	generatedopenapi "annex.dev/annex/pkg/generated/openapi"
)

// newClient returns a fake client holding hr that merges server-side applies
// as annex does: from annex's OpenAPI schema, in which status.conditions is
// a list keyed by type. (The fake client's default schema would treat the
// list as one value, and hide what Owner must get right.)
func newClient(t *testing.T, hr *v1alpha1.HostedResource) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	config := genericapiserver.DefaultOpenAPIV3Config(generatedopenapi.GetOpenAPIDefinitions, openapinamer.NewDefinitionNamer(scheme))
	schemas, err := openapibuilder3.BuildOpenAPIDefinitionsForResources(config, openapiutil.GetCanonicalTypeName(&v1alpha1.HostedResource{}))
	if err != nil {
		t.Fatal(err)
	}
	converter, err := managedfields.NewTypeConverter(schemas, false)
	if err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(hr).WithStatusSubresource(hr).
		WithTypeConverters(converter).Build()
}

func get(t *testing.T, c client.Client, name string) *v1alpha1.HostedResource {
	t.Helper()
	hr := &v1alpha1.HostedResource{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, hr); err != nil {
		t.Fatal(err)
	}
	return hr
}

func TestApply(t *testing.T) {
	ctx := context.Background()
	const name = "things.example.com"
	c := newClient(t, &v1alpha1.HostedResource{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 3}})
	types := Owner{FieldManager: "types", Types: []string{"NamesAccepted", "Established"}, ObservedGeneration: true}
	backends := Owner{FieldManager: "backends", Types: []string{"StorageBackendReady"}}

	// Each owner applies its own conditions; the other's stay.
	if err := types.Apply(ctx, c, get(t, c, name),
		metav1.Condition{Type: "NamesAccepted", Status: metav1.ConditionTrue, Reason: "NoConflicts", Message: "no conflicts found"},
		metav1.Condition{Type: "Established", Status: metav1.ConditionFalse, Reason: "Installing", Message: "the type is being installed"},
	); err != nil {
		t.Fatal(err)
	}
	if err := backends.Apply(ctx, c, get(t, c, name),
		metav1.Condition{Type: "StorageBackendReady", Status: metav1.ConditionTrue, Reason: "DefaultStore", Message: "default"},
	); err != nil {
		t.Fatal(err)
	}
	hr := get(t, c, name)
	for _, want := range []metav1.Condition{
		{Type: "NamesAccepted", Status: metav1.ConditionTrue, Reason: "NoConflicts"},
		{Type: "Established", Status: metav1.ConditionFalse, Reason: "Installing"},
		{Type: "StorageBackendReady", Status: metav1.ConditionTrue, Reason: "DefaultStore"},
	} {
		got := meta.FindStatusCondition(hr.Status.Conditions, want.Type)
		if got == nil || got.Status != want.Status || got.Reason != want.Reason || got.ObservedGeneration != 3 {
			t.Errorf("condition %s = %+v, want status %s, reason %s, observedGeneration 3", want.Type, got, want.Status, want.Reason)
		}
	}
	if hr.Status.ObservedGeneration != 3 {
		t.Errorf("status.observedGeneration = %d, want 3 (the types owner sets it)", hr.Status.ObservedGeneration)
	}

	// An owner that applies only some of its conditions keeps the others.
	if err := types.Apply(ctx, c, get(t, c, name),
		metav1.Condition{Type: "Established", Status: metav1.ConditionTrue, Reason: "InitialNamesAccepted", Message: "accepted"},
	); err != nil {
		t.Fatal(err)
	}
	hr = get(t, c, name)
	if got := meta.FindStatusCondition(hr.Status.Conditions, "NamesAccepted"); got == nil || got.Reason != "NoConflicts" {
		t.Errorf("NamesAccepted = %+v after an apply that did not mention it, want it kept", got)
	}
	if got := meta.FindStatusCondition(hr.Status.Conditions, "Established"); got == nil || got.Reason != "InitialNamesAccepted" {
		t.Errorf("Established = %+v, want reason InitialNamesAccepted", got)
	}
	if meta.FindStatusCondition(hr.Status.Conditions, "StorageBackendReady") == nil {
		t.Errorf("another owner's apply removed StorageBackendReady: %+v", hr.Status.Conditions)
	}
}

func TestApplyLastTransitionTime(t *testing.T) {
	ctx := context.Background()
	const name = "things.example.com"
	earlier := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	c := newClient(t, &v1alpha1.HostedResource{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 2},
		Status: v1alpha1.HostedResourceStatus{Conditions: []metav1.Condition{
			{Type: "NamesAccepted", Status: metav1.ConditionTrue, Reason: "NoConflicts", Message: "no conflicts found", LastTransitionTime: earlier, ObservedGeneration: 1},
			{Type: "Established", Status: metav1.ConditionFalse, Reason: "Installing", Message: "installing", LastTransitionTime: earlier, ObservedGeneration: 1},
		}},
	})
	owner := Owner{FieldManager: "types", Types: []string{"NamesAccepted", "Established"}, ObservedGeneration: true}
	if err := owner.Apply(ctx, c, get(t, c, name),
		// The same status, for the new generation.
		metav1.Condition{Type: "NamesAccepted", Status: metav1.ConditionTrue, Reason: "NoConflicts", Message: "no conflicts found"},
		// Another status.
		metav1.Condition{Type: "Established", Status: metav1.ConditionTrue, Reason: "InitialNamesAccepted", Message: "accepted"},
	); err != nil {
		t.Fatal(err)
	}
	hr := get(t, c, name)
	accepted := meta.FindStatusCondition(hr.Status.Conditions, "NamesAccepted")
	if !accepted.LastTransitionTime.Equal(&earlier) || accepted.ObservedGeneration != 2 {
		t.Errorf("NamesAccepted = %+v, want lastTransitionTime %v kept and observedGeneration 2", accepted, earlier)
	}
	established := meta.FindStatusCondition(hr.Status.Conditions, "Established")
	if established.Status != metav1.ConditionTrue || !established.LastTransitionTime.After(earlier.Time) {
		t.Errorf("Established = %+v, want True with a lastTransitionTime after %v", established, earlier)
	}
	if hr.Status.ObservedGeneration != 2 {
		t.Errorf("status.observedGeneration = %d, want 2", hr.Status.ObservedGeneration)
	}
}

func TestApplyWritesNothingWithoutChange(t *testing.T) {
	ctx := context.Background()
	const name = "things.example.com"
	c := newClient(t, &v1alpha1.HostedResource{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1}})
	owner := Owner{FieldManager: "types", Types: []string{"Established"}, ObservedGeneration: true}
	want := metav1.Condition{Type: "Established", Status: metav1.ConditionTrue, Reason: "InitialNamesAccepted", Message: "accepted"}
	if err := owner.Apply(ctx, c, get(t, c, name), want); err != nil {
		t.Fatal(err)
	}
	before := get(t, c, name).ResourceVersion
	if err := owner.Apply(ctx, c, get(t, c, name), want); err != nil {
		t.Fatal(err)
	}
	if after := get(t, c, name).ResourceVersion; after != before {
		t.Errorf("applying the same condition again wrote the object (resourceVersion %s -> %s)", before, after)
	}
}

// TestApplyToDeletedObject: the HostedResource was deleted since it was
// read. (The API server answers a status apply of a missing object with
// 404; the fake client would create it, so the answer is intercepted.)
func TestApplyToDeletedObject(t *testing.T) {
	hr := &v1alpha1.HostedResource{ObjectMeta: metav1.ObjectMeta{Name: "things.example.com", Generation: 1}}
	applied := false
	c := interceptor.NewClient(newClient(t, hr).(client.WithWatch), interceptor.Funcs{
		SubResourceApply: func(context.Context, client.Client, string, runtime.ApplyConfiguration, ...client.SubResourceApplyOption) error {
			applied = true
			return apierrors.NewNotFound(v1alpha1.Resource("hostedresources"), hr.Name)
		},
	})
	owner := Owner{FieldManager: "types", Types: []string{"Established"}}
	if err := owner.Apply(context.Background(), c, hr, metav1.Condition{Type: "Established", Status: metav1.ConditionTrue, Reason: "R"}); err != nil {
		t.Errorf("applying to a HostedResource deleted meanwhile: %v, want nothing to do", err)
	}
	if !applied {
		t.Error("the condition was not applied")
	}
}
