package hostedresource

import (
	"context"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	metadatafake "k8s.io/client-go/metadata/fake"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

const name = "things.example.com"

var thingsV1 = schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "things"}

func hostedResource(backend string) *v1alpha1.HostedResource {
	return &v1alpha1.HostedResource{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec: v1alpha1.HostedResourceSpec{
			Group: "example.com",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "things", Singular: "thing", Kind: "Thing", ListKind: "ThingList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object"}},
			}},
			Storage: v1alpha1.HostedResourceStorage{Backend: backend},
		},
	}
}

// ownedCRD is the CRD annex made of hr earlier, on backend ("" for the
// default one), established.
func ownedCRD(hr *v1alpha1.HostedResource, backend string) *apiextensionsv1.CustomResourceDefinition {
	crd := desiredCRD(hr)
	if backend == "" {
		delete(crd.Annotations, v1alpha1.StorageBackendAnnotation)
	} else {
		crd.Annotations[v1alpha1.StorageBackendAnnotation] = backend
	}
	crd.Status.Conditions = []apiextensionsv1.CustomResourceDefinitionCondition{
		{Type: apiextensionsv1.NamesAccepted, Status: apiextensionsv1.ConditionTrue, Reason: "NoConflicts", Message: "no conflicts found"},
		{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue, Reason: "InitialNamesAccepted", Message: "the initial names have been accepted"},
	}
	return crd
}

// fixture is the reconciler over a fake annex: HostedResources and CRDs in
// a fake client, the hosted objects in a fake metadata client.
type fixture struct {
	t       *testing.T
	r       *Reconciler
	objects *metadatafake.FakeMetadataClient
}

func newFixture(t *testing.T, objs ...client.Object) *fixture {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mdScheme := metadatafake.NewTestScheme()
	mdScheme.AddKnownTypeWithName(schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Thing"}, &metav1.PartialObjectMetadata{})
	mdScheme.AddKnownTypeWithName(schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "ThingList"}, &metav1.PartialObjectMetadataList{})
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(&v1alpha1.HostedResource{}).Build()
	return &fixture{t: t, r: &Reconciler{Client: c}, objects: metadatafake.NewSimpleMetadataClient(mdScheme)}
}

// withObject stores one object of the type things.example.com/v1.
func (f *fixture) withObject() *fixture {
	f.t.Helper()
	obj := &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "example.com/v1", Kind: "Thing"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "one"},
	}
	if err := f.objects.Tracker().Create(thingsV1, obj, "a"); err != nil {
		f.t.Fatal(err)
	}
	return f
}

func (f *fixture) reconcile() reconcile.Result {
	f.t.Helper()
	f.r.Objects = f.objects
	res, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
	if err != nil {
		f.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

func (f *fixture) hostedResource() *v1alpha1.HostedResource {
	f.t.Helper()
	hr := &v1alpha1.HostedResource{}
	if err := f.r.Client.Get(context.Background(), client.ObjectKey{Name: name}, hr); err != nil {
		f.t.Fatal(err)
	}
	return hr
}

// crd returns the CRD, or nil when there is none.
func (f *fixture) crd() *apiextensionsv1.CustomResourceDefinition {
	f.t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	err := f.r.Client.Get(context.Background(), client.ObjectKey{Name: name}, crd)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return crd
}

// condition returns the HostedResource's condition of type t, failing the
// test when it is missing.
func (f *fixture) condition(t string) metav1.Condition {
	f.t.Helper()
	hr := f.hostedResource()
	c := meta.FindStatusCondition(hr.Status.Conditions, t)
	if c == nil {
		f.t.Fatalf("the HostedResource has no %s condition: %+v", t, hr.Status.Conditions)
	}
	return *c
}

func TestReconcileCreatesTheCRD(t *testing.T) {
	hr := hostedResource("fast")
	f := newFixture(t, hr)
	f.reconcile()

	crd := f.crd()
	if crd == nil {
		t.Fatal("no CRD was created for the HostedResource")
	}
	if crd.Labels[v1alpha1.HostedResourceLabel] != name {
		t.Errorf("CRD labels = %v, want %s=%s", crd.Labels, v1alpha1.HostedResourceLabel, name)
	}
	if crd.Annotations[v1alpha1.StorageBackendAnnotation] != "fast" {
		t.Errorf("CRD annotations = %v, want %s=fast", crd.Annotations, v1alpha1.StorageBackendAnnotation)
	}
	if crd.Spec.Group != "example.com" || crd.Spec.Names.Kind != "Thing" || crd.Spec.Scope != apiextensionsv1.NamespaceScoped ||
		!apiequality.Semantic.DeepEqual(crd.Spec.Versions, hr.Spec.Versions) {
		t.Errorf("CRD spec = %+v, want the HostedResource's type", crd.Spec)
	}
	got := f.hostedResource()
	if !slices.Contains(got.Finalizers, v1alpha1.HostedResourceFinalizer) {
		t.Errorf("HostedResource finalizers = %v, want %s", got.Finalizers, v1alpha1.HostedResourceFinalizer)
	}
	if got.Status.ObservedGeneration != 1 {
		t.Errorf("status.observedGeneration = %d, want 1", got.Status.ObservedGeneration)
	}
	// The new CRD has no conditions yet: the HostedResource waits for them.
	for _, typ := range []string{v1alpha1.HostedResourceNamesAccepted, v1alpha1.HostedResourceEstablished} {
		if c := f.condition(typ); c.Status != metav1.ConditionUnknown || c.Reason != v1alpha1.ReasonPending {
			t.Errorf("%s = %s/%s %q, want Unknown/%s", typ, c.Status, c.Reason, c.Message, v1alpha1.ReasonPending)
		}
	}
}

func TestReconcileReportsTheCRDConditions(t *testing.T) {
	hr := hostedResource("")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	f := newFixture(t, hr, ownedCRD(hr, ""))
	f.reconcile()
	if c := f.condition(v1alpha1.HostedResourceEstablished); c.Status != metav1.ConditionTrue || c.Reason != "InitialNamesAccepted" || c.Message != "the initial names have been accepted" {
		t.Errorf("Established = %s/%s %q, want the CRD's: True/InitialNamesAccepted", c.Status, c.Reason, c.Message)
	}
	if c := f.condition(v1alpha1.HostedResourceNamesAccepted); c.Status != metav1.ConditionTrue || c.Reason != "NoConflicts" {
		t.Errorf("NamesAccepted = %s/%s %q, want the CRD's: True/NoConflicts", c.Status, c.Reason, c.Message)
	}
}

func TestReconcileUpdatesTheCRD(t *testing.T) {
	hr := hostedResource("")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	f := newFixture(t, hr, ownedCRD(hr, ""))

	changed := f.hostedResource()
	changed.Spec.Versions = append(changed.Spec.Versions, apiextensionsv1.CustomResourceDefinitionVersion{
		Name: "v2", Served: true,
		Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object"}},
	})
	changed.Spec.Names.ShortNames = []string{"th"}
	if err := f.r.Client.Update(context.Background(), changed); err != nil {
		t.Fatal(err)
	}
	f.reconcile()

	crd := f.crd()
	if !apiequality.Semantic.DeepEqual(crd.Spec.Versions, changed.Spec.Versions) || !apiequality.Semantic.DeepEqual(crd.Spec.Names, changed.Spec.Names) {
		t.Errorf("CRD versions %+v, names %+v: want the HostedResource's new ones", crd.Spec.Versions, crd.Spec.Names)
	}
	if crd.Labels[v1alpha1.HostedResourceLabel] != name {
		t.Errorf("the update lost the CRD's owner label: %v", crd.Labels)
	}
}

func TestReconcileLeavesAForeignCRDAlone(t *testing.T) {
	hr := hostedResource("")
	foreign := ownedCRD(hr, "")
	foreign.Labels = nil
	foreign.Spec.Versions[0].Name = "v1beta1"
	f := newFixture(t, hr, foreign)
	f.reconcile()

	c := f.condition(v1alpha1.HostedResourceEstablished)
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonCRDConflict || !strings.Contains(c.Message, "delete it to let annex serve the type") {
		t.Errorf("Established = %s/%s %q, want False/%s telling how to resolve it", c.Status, c.Reason, c.Message, v1alpha1.ReasonCRDConflict)
	}
	crd := f.crd()
	if crd == nil || crd.Spec.Versions[0].Name != "v1beta1" || crd.Labels[v1alpha1.HostedResourceLabel] != "" {
		t.Errorf("the foreign CRD was changed: %+v", crd)
	}
}

func TestReconcileFinalizes(t *testing.T) {
	hr := hostedResource("")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	crd := ownedCRD(hr, "")
	// The apiextensions server holds the CRD until the type's objects are gone.
	crd.Finalizers = []string{apiextensionsv1.CustomResourceCleanupFinalizer}
	f := newFixture(t, hr, crd)
	if err := f.r.Client.Delete(context.Background(), f.hostedResource()); err != nil {
		t.Fatal(err)
	}

	if res := f.reconcile(); res.RequeueAfter == 0 {
		t.Error("the reconciler does not come back while the type is being deleted")
	}
	if crd := f.crd(); crd == nil || crd.DeletionTimestamp.IsZero() {
		t.Fatalf("CRD = %+v, want it being deleted", crd)
	}
	if c := f.condition(v1alpha1.HostedResourceEstablished); c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonTerminating {
		t.Errorf("Established = %s/%s %q, want False/%s", c.Status, c.Reason, c.Message, v1alpha1.ReasonTerminating)
	}
	if hr := f.hostedResource(); !slices.Contains(hr.Finalizers, v1alpha1.HostedResourceFinalizer) {
		t.Fatalf("the HostedResource was released while its type still exists: finalizers %v", hr.Finalizers)
	}

	// The apiextensions server deletes the objects, then lets the CRD go.
	gone := f.crd()
	gone.Finalizers = nil
	if err := f.r.Client.Update(context.Background(), gone); err != nil {
		t.Fatal(err)
	}
	if f.crd() != nil {
		t.Fatal("the fake client kept a CRD with no finalizer left")
	}
	f.reconcile()
	err := f.r.Client.Get(context.Background(), client.ObjectKey{Name: name}, &v1alpha1.HostedResource{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("the HostedResource is still there once its type is gone: %v", err)
	}
}

func TestReconcileFinalizeLeavesAForeignCRD(t *testing.T) {
	hr := hostedResource("")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	foreign := ownedCRD(hr, "")
	foreign.Labels = nil
	f := newFixture(t, hr, foreign)
	if err := f.r.Client.Delete(context.Background(), f.hostedResource()); err != nil {
		t.Fatal(err)
	}
	f.reconcile()
	if crd := f.crd(); crd == nil || !crd.DeletionTimestamp.IsZero() {
		t.Errorf("deleting the HostedResource deleted a CRD it does not own: %+v", crd)
	}
	err := f.r.Client.Get(context.Background(), client.ObjectKey{Name: name}, &v1alpha1.HostedResource{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("the HostedResource is kept for a CRD it does not own: %v", err)
	}
}

func TestReconcileMovesAnEmptyTypeToAnotherBackend(t *testing.T) {
	hr := hostedResource("fast")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	f := newFixture(t, hr, ownedCRD(hr, ""))
	if res := f.reconcile(); res.RequeueAfter == 0 {
		t.Error("the reconciler does not come back to re-create the type")
	}
	if crd := f.crd(); crd != nil {
		t.Fatalf("the type's CRD on the old backend is still there: %+v", crd.ObjectMeta)
	}
	c := f.condition(v1alpha1.HostedResourceEstablished)
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonMovingStorageBackend || !strings.Contains(c.Message, `on StorageBackend "fast" (it was on "default")`) {
		t.Errorf("Established = %s/%s %q, want False/%s naming both backends", c.Status, c.Reason, c.Message, v1alpha1.ReasonMovingStorageBackend)
	}

	// The next run creates the type on the new backend.
	f.reconcile()
	if crd := f.crd(); crd == nil || crd.Annotations[v1alpha1.StorageBackendAnnotation] != "fast" {
		t.Errorf("CRD = %+v, want it re-created on backend fast", crd)
	}
}

func TestReconcileRefusesToMoveObjects(t *testing.T) {
	hr := hostedResource("fast")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	f := newFixture(t, hr, ownedCRD(hr, "")).withObject()
	f.reconcile()
	crd := f.crd()
	if crd == nil || !crd.DeletionTimestamp.IsZero() {
		t.Fatalf("the CRD of a type with objects was deleted to move it: %+v", crd)
	}
	if _, ok := crd.Annotations[v1alpha1.StorageBackendAnnotation]; ok {
		t.Errorf("the type was rebound: annotations %v", crd.Annotations)
	}
	c := f.condition(v1alpha1.HostedResourceEstablished)
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonStorageBackendChangeRefused || !strings.Contains(c.Message, `set spec.storage.backend back to "default"`) {
		t.Errorf("Established = %s/%s %q, want False/%s saying how to undo it", c.Status, c.Reason, c.Message, v1alpha1.ReasonStorageBackendChangeRefused)
	}
}

// The cache a HostedResource chooses reaches its CRD, where storage routing
// reads it, and the default (the lean cache) is written when it chooses
// none: a CRD without the annotation is one made before, when the watch
// cache was the default.
func TestReconcileRecordsTheStorageCache(t *testing.T) {
	hr := hostedResource("")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	f := newFixture(t, hr, ownedCRD(hr, ""))
	for _, tc := range []struct {
		cache v1alpha1.StorageCache
		want  string
	}{
		{v1alpha1.StorageCacheNone, "None"},
		{v1alpha1.StorageCacheWatchCache, "WatchCache"},
		{v1alpha1.StorageCacheNone, "None"},
		{"", "Lean"},
		{v1alpha1.StorageCacheLean, "Lean"},
	} {
		changed := f.hostedResource()
		changed.Spec.Storage.Cache = tc.cache
		if err := f.r.Client.Update(context.Background(), changed); err != nil {
			t.Fatal(err)
		}
		f.reconcile()
		crd := f.crd()
		if got := crd.Annotations[v1alpha1.StorageCacheAnnotation]; got != tc.want {
			t.Errorf("cache %q: the CRD's %s is %q, want %q", tc.cache, v1alpha1.StorageCacheAnnotation, got, tc.want)
		}
		if crd.DeletionTimestamp != nil {
			t.Errorf("cache %q: the CRD is being deleted: a change of cache keeps the type and its objects", tc.cache)
		}
	}
}

// A new type's CRD records the install's key prefix; a CRD created before
// installs had prefixes never gets one, whatever changes, so its objects
// stay where they are; nor does a recorded one change with the install's.
func TestReconcileRecordsTheKeyPrefixOnCreateOnly(t *testing.T) {
	const prefix = "/annex/installs/team-a.annex"
	hr := hostedResource("")
	f := newFixture(t, hr)
	f.r.KeyPrefix = prefix
	f.reconcile()
	if got := f.crd().Annotations[v1alpha1.StorageKeyPrefixAnnotation]; got != prefix {
		t.Errorf("the new CRD records key prefix %q, want %q", got, prefix)
	}

	// The install's prefix changes (another --storage-key-prefix): the type keeps its own.
	f.r.KeyPrefix = "/elsewhere"
	changed := f.hostedResource()
	changed.Spec.Names.ShortNames = []string{"th"}
	if err := f.r.Client.Update(context.Background(), changed); err != nil {
		t.Fatal(err)
	}
	f.reconcile()
	if got := f.crd().Annotations[v1alpha1.StorageKeyPrefixAnnotation]; got != prefix {
		t.Errorf("after an update the CRD records key prefix %q, want %q still", got, prefix)
	}

	old := hostedResource("")
	old.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	f = newFixture(t, old, ownedCRD(old, ""))
	f.r.KeyPrefix = prefix
	changed = f.hostedResource()
	changed.Spec.Names.ShortNames = []string{"th"}
	changed.Spec.Storage.Cache = v1alpha1.StorageCacheNone
	if err := f.r.Client.Update(context.Background(), changed); err != nil {
		t.Fatal(err)
	}
	f.reconcile()
	crd := f.crd()
	if got, ok := crd.Annotations[v1alpha1.StorageKeyPrefixAnnotation]; ok {
		t.Errorf("a CRD made before key prefixes got %q: its objects would be left under the old one", got)
	}
	if crd.Annotations[v1alpha1.StorageCacheAnnotation] != "None" || len(crd.Spec.Names.ShortNames) != 1 {
		t.Errorf("the CRD was not updated: %+v", crd.ObjectMeta.Annotations)
	}
}
