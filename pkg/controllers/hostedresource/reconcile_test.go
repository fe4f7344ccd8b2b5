package hostedresource

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
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

// moveFixture is a fixture whose clock the test moves, which records the
// CRD as it was when the reconciler deleted it, and the preconditions of
// the deletion.
type moveFixture struct {
	*fixture
	clock *testingclock.FakePassiveClock
	// deleted is the CRD as the store held it when the reconciler deleted it.
	deleted       *apiextensionsv1.CustomResourceDefinition
	preconditions *metav1.Preconditions
	// onDelete runs before the deletion: what a racing replica does.
	onDelete func()
}

func newMoveFixture(t *testing.T, objs ...client.Object) *moveFixture {
	t.Helper()
	f := newFixture(t, objs...)
	m := &moveFixture{fixture: f, clock: testingclock.NewFakePassiveClock(time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC))}
	f.r.Clock = m.clock
	f.r.Client = interceptor.NewClient(f.r.Client.(client.WithWatch), interceptor.Funcs{
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			if crd, ok := obj.(*apiextensionsv1.CustomResourceDefinition); ok {
				if m.onDelete != nil {
					m.onDelete()
				}
				m.deleted = &apiextensionsv1.CustomResourceDefinition{}
				if err := c.Get(ctx, client.ObjectKeyFromObject(crd), m.deleted); err != nil {
					return err
				}
				deleteOpts := (&client.DeleteOptions{}).ApplyOptions(opts)
				m.preconditions = deleteOpts.Preconditions
			}
			return c.Delete(ctx, obj, opts...)
		},
	})
	return m
}

// After the move is first seen, annex waits for every replica to refuse the
// type's writes, looks for objects once more, and deletes the CRD marked so
// that its deletion keeps any object: the one it checked (UID and
// resourceVersion preconditions). Then it creates the type on the new
// backend, unmarked.
func TestReconcileMovesAnEmptyTypeToAnotherBackend(t *testing.T) {
	hr := hostedResource("fast")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	f := newMoveFixture(t, hr, ownedCRD(hr, ""))
	started := f.clock.Now()
	if res := f.reconcile(); res.RequeueAfter != DefaultMoveSettle {
		t.Errorf("the reconciler comes back after %s, want %s, when the move may go on", res.RequeueAfter, DefaultMoveSettle)
	}
	crd := f.crd()
	if crd == nil || !crd.DeletionTimestamp.IsZero() {
		t.Fatalf("the CRD was deleted as soon as the move was seen: %+v", crd)
	}
	if got, want := crd.Annotations[v1alpha1.MoveObservedAnnotation], "1 2026-12-02T05:00:00Z"; got != want {
		t.Errorf("the CRD's %s is %q, want %q", v1alpha1.MoveObservedAnnotation, got, want)
	}
	c := f.condition(v1alpha1.HostedResourceEstablished)
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonMovingStorageBackend || !strings.Contains(c.Message, `on StorageBackend "fast" (it was on "default")`) {
		t.Errorf("Established = %s/%s %q, want False/%s naming both backends", c.Status, c.Reason, c.Message, v1alpha1.ReasonMovingStorageBackend)
	}

	f.clock.SetTime(started.Add(DefaultMoveSettle - time.Second))
	if res := f.reconcile(); res.RequeueAfter != time.Second || f.crd() == nil {
		t.Errorf("before the wait is over: requeue after %s, CRD %v; want 1s and the CRD kept", res.RequeueAfter, f.crd() != nil)
	}

	f.clock.SetTime(started.Add(DefaultMoveSettle))
	if res := f.reconcile(); res.RequeueAfter == 0 {
		t.Error("the reconciler does not come back to re-create the type")
	}
	if crd := f.crd(); crd != nil {
		t.Fatalf("the type's CRD on the old backend is still there: %+v", crd.ObjectMeta)
	}
	if f.deleted == nil || f.deleted.Annotations[v1alpha1.MoveObservedAnnotation] == "" {
		t.Fatalf("the CRD was deleted without the mark that keeps its objects: %+v", f.deleted)
	}
	if p := f.preconditions; p == nil || p.UID == nil || *p.UID != f.deleted.UID || p.ResourceVersion == nil || *p.ResourceVersion != f.deleted.ResourceVersion {
		t.Errorf("the deletion's preconditions are %+v, want the UID and resourceVersion of the CRD checked", p)
	}

	// The next run creates the type on the new backend.
	f.reconcile()
	crd = f.crd()
	if crd == nil || crd.Annotations[v1alpha1.StorageBackendAnnotation] != "fast" {
		t.Fatalf("CRD = %+v, want it re-created on backend fast", crd)
	}
	if _, marked := crd.Annotations[v1alpha1.MoveObservedAnnotation]; marked {
		t.Errorf("the new CRD carries the mark of the move: %v", crd.Annotations)
	}
}

// A replica that had not seen the move yet created an object meanwhile:
// the last look finds it, and the type stays.
func TestReconcileLooksForObjectsAfterTheWait(t *testing.T) {
	hr := hostedResource("fast")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	f := newMoveFixture(t, hr, ownedCRD(hr, ""))
	f.reconcile()
	f.withObject()
	f.clock.SetTime(f.clock.Now().Add(DefaultMoveSettle))
	f.reconcile()
	if crd := f.crd(); crd == nil || !crd.DeletionTimestamp.IsZero() || f.deleted != nil {
		t.Fatalf("the CRD of a type with objects was deleted to move it: %+v", crd)
	}
	if c := f.condition(v1alpha1.HostedResourceEstablished); c.Reason != v1alpha1.ReasonStorageBackendChangeRefused {
		t.Errorf("Established = %s/%s %q, want False/%s", c.Status, c.Reason, c.Message, v1alpha1.ReasonStorageBackendChangeRefused)
	}
	if len(f.objects.Actions()) > 0 && slices.ContainsFunc(f.objects.Actions(), func(a clienttesting.Action) bool { return a.GetVerb() == "delete" }) {
		t.Errorf("the reconciler deleted objects: %v", f.objects.Actions())
	}
}

// annex stopped after it marked the CRD (a new leader takes over): the next
// reconciler waits only what is left of the wait. A change of the
// HostedResource starts it again.
func TestReconcileMoveResumes(t *testing.T) {
	hr := hostedResource("fast")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	hr.Generation = 3
	crd := ownedCRD(hr, "")
	crd.Annotations[v1alpha1.MoveObservedAnnotation] = "3 2026-12-02T04:59:58Z"
	f := newMoveFixture(t, hr, crd)
	if res := f.reconcile(); res.RequeueAfter != DefaultMoveSettle-2*time.Second || f.crd() == nil {
		t.Errorf("resuming 2s into the wait: requeue after %s, want %s", res.RequeueAfter, DefaultMoveSettle-2*time.Second)
	}

	changed := f.hostedResource()
	changed.Generation = 4
	if err := f.r.Client.Update(context.Background(), changed); err != nil {
		t.Fatal(err)
	}
	f.clock.SetTime(f.clock.Now().Add(DefaultMoveSettle))
	if res := f.reconcile(); res.RequeueAfter != DefaultMoveSettle || f.crd() == nil {
		t.Errorf("after a change of the HostedResource: requeue after %s, CRD kept %v; want the whole wait again", res.RequeueAfter, f.crd() != nil)
	}
	if got := f.crd().Annotations[v1alpha1.MoveObservedAnnotation]; !strings.HasPrefix(got, "4 ") {
		t.Errorf("the mark is %q, want it for generation 4", got)
	}

	// annex stopped after it deleted the CRD: the type is created on the new backend.
	f.clock.SetTime(f.clock.Now().Add(DefaultMoveSettle))
	f.reconcile()
	f.reconcile()
	if crd := f.crd(); crd == nil || crd.Annotations[v1alpha1.StorageBackendAnnotation] != "fast" {
		t.Errorf("CRD = %+v, want it re-created on backend fast", crd)
	}
}

// A move given up (the HostedResource names the old backend again) takes
// the mark off, and so does the deletion of the HostedResource before it
// deletes the CRD: deleting a type deletes its objects.
func TestReconcileClearsTheMoveMark(t *testing.T) {
	hr := hostedResource("fast")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	f := newMoveFixture(t, hr, ownedCRD(hr, ""))
	f.reconcile()
	back := f.hostedResource()
	back.Spec.Storage.Backend = ""
	if err := f.r.Client.Update(context.Background(), back); err != nil {
		t.Fatal(err)
	}
	f.reconcile()
	if got, marked := f.crd().Annotations[v1alpha1.MoveObservedAnnotation]; marked {
		t.Errorf("a move given up leaves the mark %q", got)
	}

	// Given up once the CRD is deleted: the mark stays until it is gone.
	hr = hostedResource("")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	deleting := ownedCRD(hr, "")
	deleting.Finalizers = []string{apiextensionsv1.CustomResourceCleanupFinalizer}
	deleting.DeletionTimestamp = &metav1.Time{Time: f.clock.Now()}
	deleting.Annotations[v1alpha1.MoveObservedAnnotation] = "1 2026-12-02T04:59:00Z"
	f = newMoveFixture(t, hr, deleting)
	f.reconcile()
	if crd := f.crd(); crd == nil || crd.Annotations[v1alpha1.MoveObservedAnnotation] == "" {
		t.Errorf("the mark was taken off a CRD deleted for a move: %+v", crd)
	}

	hr = hostedResource("fast")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	f = newMoveFixture(t, hr, ownedCRD(hr, ""))
	f.reconcile()
	if err := f.r.Client.Delete(context.Background(), f.hostedResource()); err != nil {
		t.Fatal(err)
	}
	f.reconcile()
	if f.deleted == nil {
		t.Fatal("the CRD was not deleted with its HostedResource")
	}
	if got, marked := f.deleted.Annotations[v1alpha1.MoveObservedAnnotation]; marked {
		t.Errorf("the CRD was deleted with the move's mark %q: its objects would be kept", got)
	}
}

func TestReconcileRefusesToMoveObjects(t *testing.T) {
	hr := hostedResource("fast")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	f := newMoveFixture(t, hr, ownedCRD(hr, ""))
	f.withObject()
	f.reconcile()
	f.clock.SetTime(f.clock.Now().Add(DefaultMoveSettle))
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
