package adoption

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

var widgets = schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}

func widgetCRD(status bool) *apiextensionsv1.CustomResourceDefinition {
	v := apiextensionsv1.CustomResourceDefinitionVersion{Name: "v1", Storage: true}
	if status {
		v.Subresources = &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}}
	}
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "widgets.example.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "example.com", Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "widgets", Kind: "Widget", ListKind: "WidgetList"},
			Scope: apiextensionsv1.NamespaceScoped, Versions: []apiextensionsv1.CustomResourceDefinitionVersion{v},
		},
	}
}

// heldWidget is an object as annex holds it: in the storage version, with
// what the cluster set when it was created, and its managedFields.
func heldWidget(name string, uid types.UID, size int64) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1", "kind": "Widget",
		"metadata": map[string]any{
			"name": name, "namespace": "ns", "uid": string(uid), "resourceVersion": "42", "generation": int64(3),
			"creationTimestamp": "2026-12-01T10:00:00Z",
			"labels":            map[string]any{"app": "demo"},
			"finalizers":        []any{"example.com/keep"},
			"managedFields": []any{map[string]any{
				"manager": "their-controller", "operation": "Update", "apiVersion": "example.com/v1", "time": "2026-12-01T10:00:00Z",
				"fieldsType": "FieldsV1", "fieldsV1": map[string]any{"f:spec": map[string]any{"f:size": map[string]any{}}},
			}},
		},
		"spec":   map[string]any{"size": size},
		"status": map[string]any{"ready": true},
	}}
}

// inCluster is obj as the cluster holds it through ReleaseVersion.
func inCluster(obj *unstructured.Unstructured) *unstructured.Unstructured {
	obj = obj.DeepCopy()
	obj.SetAPIVersion("example.com/" + ReleaseVersion)
	obj.SetResourceVersion("7")
	return obj
}

func newWriteBack(t *testing.T, status bool, objs ...runtime.Object) (*adoption, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	release := widgets
	release.Version = ReleaseVersion
	fake := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{release: "WidgetList"}, objs...)
	if status {
		// As the cluster does for a type with the status subresource, a
		// create or update of the object leaves status alone.
		strip := func(action clienttesting.Action) (bool, runtime.Object, error) {
			if action.GetSubresource() == "" {
				if o, ok := action.(interface{ GetObject() runtime.Object }); ok {
					delete(o.GetObject().(*unstructured.Unstructured).Object, "status")
				}
			}
			return false, nil, nil
		}
		fake.PrependReactor("create", "*", strip)
		fake.PrependReactor("update", "*", strip)
	}
	a := &adoption{Reconciler: &Reconciler{Dynamic: fake}, crd: widgetCRD(status), gvr: widgets}
	return a, fake
}

// writes lists the verbs (and subresources) of the requests that wrote.
func writes(fake *dynamicfake.FakeDynamicClient) []string {
	var verbs []string
	for _, action := range fake.Actions() {
		if action.GetVerb() == "get" || action.GetVerb() == "list" {
			continue
		}
		verb := action.GetVerb()
		if action.GetSubresource() != "" {
			verb += "/" + action.GetSubresource()
		}
		verbs = append(verbs, verb)
	}
	return verbs
}

func TestWriteBackCreatesWhatTheClusterLacks(t *testing.T) {
	a, fake := newWriteBack(t, true)
	held := heldWidget("new", "uid-annex", 5)
	if _, err := a.writeBackOne(context.Background(), held, false); err != nil {
		t.Fatal(err)
	}
	if got, want := writes(fake), []string{"create", "update/status", "patch"}; !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("writes %v, want %v", got, want)
	}
	create := fake.Actions()[0].(clienttesting.CreateAction).GetObject().(*unstructured.Unstructured)
	if create.GetAPIVersion() != "example.com/"+ReleaseVersion {
		t.Errorf("created through %s, want %s", create.GetAPIVersion(), ReleaseVersion)
	}
	for _, f := range systemFields {
		if _, ok, _ := unstructured.NestedFieldNoCopy(create.Object, "metadata", f); ok {
			t.Errorf("the create carries metadata.%s, which the cluster sets", f)
		}
	}
	if !equality.Semantic.DeepEqual(create.GetFinalizers(), held.GetFinalizers()) || !equality.Semantic.DeepEqual(create.GetLabels(), held.GetLabels()) {
		t.Errorf("the create lost finalizers or labels: %v", create.Object["metadata"])
	}
	// managedFields end as annex held them: none names ReleaseVersion.
	patch := fake.Actions()[len(fake.Actions())-1].(clienttesting.PatchAction)
	if patch.GetPatchType() != types.MergePatchType || !strings.Contains(string(patch.GetPatch()), `"manager":"their-controller"`) {
		t.Errorf("the last write is %s %s, want annex's managedFields back", patch.GetPatchType(), patch.GetPatch())
	}
}

func TestWriteBackUpdatesInPlace(t *testing.T) {
	before := heldWidget("w", "uid-cluster", 1)
	a, fake := newWriteBack(t, true, inCluster(before))
	held := heldWidget("w", "uid-cluster", 2)
	held.SetLabels(map[string]string{"app": "demo", "changed": "yes"})
	held.Object["status"] = map[string]any{"ready": false}
	if _, err := a.writeBackOne(context.Background(), held, true); err != nil {
		t.Fatal(err)
	}
	if got, want := writes(fake), []string{"update", "update/status", "patch"}; !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("writes %v, want %v", got, want)
	}
	update := fake.Actions()[1].(clienttesting.UpdateAction).GetObject().(*unstructured.Unstructured)
	if update.GetUID() != "uid-cluster" || update.GetResourceVersion() != "7" || update.GetLabels()["changed"] != "yes" {
		t.Errorf("the update is %v, want the cluster's uid and resourceVersion with annex's labels", update.Object["metadata"])
	}
	status := fake.Actions()[2].(clienttesting.UpdateAction).GetObject().(*unstructured.Unstructured)
	if ready, ok, _ := unstructured.NestedBool(status.Object, "status", "ready"); !ok || ready {
		t.Errorf("the status written back is %v, want annex's", status.Object["status"])
	}
}

func TestWriteBackLeavesWhatDidNotChange(t *testing.T) {
	held := heldWidget("w", "uid-cluster", 1)
	a, fake := newWriteBack(t, true, inCluster(held))
	if _, err := a.writeBackOne(context.Background(), held, true); err != nil {
		t.Fatal(err)
	}
	if got := writes(fake); len(got) != 0 {
		t.Errorf("an object that did not change was written: %v", got)
	}
}

func TestWriteBackWithoutStatusSubresource(t *testing.T) {
	before := heldWidget("w", "uid-cluster", 1)
	a, fake := newWriteBack(t, false, inCluster(before))
	held := heldWidget("w", "uid-cluster", 1)
	held.Object["status"] = map[string]any{"ready": false}
	if _, err := a.writeBackOne(context.Background(), held, true); err != nil {
		t.Fatal(err)
	}
	if got, want := writes(fake), []string{"update", "patch"}; !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("writes %v, want %v: status goes with the object", got, want)
	}
}

func TestWriteBackDeletesWhatAnnexIsDeleting(t *testing.T) {
	before := heldWidget("w", "uid-cluster", 1)
	a, fake := newWriteBack(t, true, inCluster(before))
	held := before.DeepCopy()
	now := metav1.Now()
	held.SetDeletionTimestamp(&now)
	if _, err := a.writeBackOne(context.Background(), held, true); err != nil {
		t.Fatal(err)
	}
	if got, want := writes(fake), []string{"delete"}; !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("writes %v, want %v", got, want)
	}
}

// TestWriteBackSomeCountsRecreatedOnce writes back, twice, an object the
// cluster holds by annex's uid, one it holds by another (deleted and
// created again in annex) and one it lacks: the last two are recreated,
// counted once each, and each is noted with the cluster's uid.
func TestWriteBackSomeCountsRecreatedOnce(t *testing.T) {
	a, fake := newWriteBack(t, true, inCluster(heldWidget("kept", "uid-kept", 1)), inCluster(heldWidget("renewed", "uid-old", 1)))
	// As the cluster does, a create gives the object a uid of its own.
	fake.PrependReactor("create", "*", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() == "" {
			action.(clienttesting.CreateAction).GetObject().(*unstructured.Unstructured).SetUID("uid-cluster-new")
		}
		return false, nil, nil
	})
	a.status = &v1alpha1.AdoptionStatus{}
	a.written, a.inCluster, a.recreated = map[string]string{}, map[string]string{"ns/kept": "uid-kept", "ns/renewed": "uid-old"}, map[string]bool{}
	for size := int64(2); size <= 3; size++ {
		objs := []*unstructured.Unstructured{heldWidget("kept", "uid-kept", size), heldWidget("renewed", "uid-new", size), heldWidget("new", "uid-annex", size)}
		for _, obj := range objs {
			obj.SetResourceVersion(fmt.Sprint(size))
		}
		if err := a.writeBackSome(context.Background(), objs); err != nil {
			t.Fatal(err)
		}
	}
	if a.status.Recreated != 2 || !equality.Semantic.DeepEqual(a.status.RecreatedObjects, []string{"ns/new", "ns/renewed"}) {
		t.Errorf("recreated %d %v, want 2 [ns/new ns/renewed]", a.status.Recreated, a.status.RecreatedObjects)
	}
	wantUIDs := map[string]string{"ns/kept": "uid-kept", "ns/renewed": "uid-old", "ns/new": "uid-cluster-new"}
	if !equality.Semantic.DeepEqual(a.inCluster, wantUIDs) {
		t.Errorf("noted the cluster's uids %v, want %v", a.inCluster, wantUIDs)
	}
	if want := map[string]string{"ns/kept": "3", "ns/renewed": "3", "ns/new": "3"}; !equality.Semantic.DeepEqual(a.written, want) {
		t.Errorf("noted as written %v, want %v", a.written, want)
	}
}

func TestDeleteFromClusterRemovesFinalizersFirst(t *testing.T) {
	gone := heldWidget("gone", "uid-cluster", 1)
	a, fake := newWriteBack(t, true, inCluster(gone))
	meta := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: "ns", UID: "uid-cluster", Finalizers: []string{"example.com/keep"}}}
	if err := a.deleteFromCluster(context.Background(), meta); err != nil {
		t.Fatal(err)
	}
	if got, want := writes(fake), []string{"patch", "delete"}; !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("writes %v, want %v", got, want)
	}
	// Gone already: nothing to do.
	if err := a.deleteFromCluster(context.Background(), meta); err != nil {
		t.Errorf("deleting an object already gone: %v", err)
	}
}

func TestWriteBackErrors(t *testing.T) {
	gr := widgets.GroupResource()
	for _, tc := range []struct {
		err       error
		permanent bool
	}{
		{apierrors.NewInvalid(schema.GroupKind{Group: "example.com", Kind: "Widget"}, "w", nil), true},
		{apierrors.NewForbidden(gr, "w", errors.New("refused")), true},
		// An API server enforces a deleted freeze until it refreshes its
		// policies.
		{apierrors.NewForbidden(gr, "w", errors.New("ValidatingAdmissionPolicy 'annex-adoption-freeze.example.com' with binding "+
			"'annex-adoption-freeze.example.com' denied request: annex is adopting the resources of example.com")), false},
		{apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "ns"), true},
		{apierrors.NewConflict(gr, "w", errors.New("changed")), false},
		{apierrors.NewServiceUnavailable("restarting"), false},
		{apierrors.NewTimeoutError("slow", 1), false},
	} {
		err := writeBackFailed("ns/w", tc.err)
		var f *failed
		if errors.As(err, &f) != tc.permanent {
			t.Errorf("writeBackFailed(%v) = %v, want permanent %v", tc.err, err, tc.permanent)
		}
	}
}

func TestReleaseRequested(t *testing.T) {
	member := func(release bool, phase v1alpha1.AdoptionPhase, reason string) *adoption {
		hr := &v1alpha1.HostedResource{Spec: v1alpha1.HostedResourceSpec{Adoption: &v1alpha1.Adoption{CustomResourceDefinition: "x", Release: release}}}
		return &adoption{hr: hr, status: &v1alpha1.AdoptionStatus{Phase: phase, Reason: reason}}
	}
	for _, tc := range []struct {
		name    string
		members []*adoption
		all     bool
		asking  int
	}{
		{"one asks", []*adoption{member(true, v1alpha1.AdoptionAdopted, "")}, true, 1},
		{"one of two asks", []*adoption{member(true, v1alpha1.AdoptionAdopted, ""), member(false, v1alpha1.AdoptionAdopted, "")}, false, 1},
		{"both ask", []*adoption{member(true, v1alpha1.AdoptionAdopted, ""), member(true, v1alpha1.AdoptionAdopted, ReasonGroupNotReleased)}, true, 2},
		{"not adopted yet", []*adoption{member(true, v1alpha1.AdoptionSwitched, "")}, false, 0},
		{"failed, still asked", []*adoption{member(true, v1alpha1.AdoptionAdopted, ReasonReleaseFailed)}, false, 0},
		{"none asks", []*adoption{member(false, v1alpha1.AdoptionAdopted, "")}, false, 0},
	} {
		g := &group{members: tc.members}
		all, asking := g.releaseRequested()
		if all != tc.all || len(asking) != tc.asking {
			t.Errorf("%s: releaseRequested() = %v, %d asking; want %v, %d", tc.name, all, len(asking), tc.all, tc.asking)
		}
	}
}

func TestHasStatusSubresource(t *testing.T) {
	a := &adoption{crd: widgetCRD(true)}
	if !a.hasStatusSubresource() {
		t.Error("a storage version with status: want true")
	}
	a.crd = widgetCRD(false)
	if a.hasStatusSubresource() {
		t.Error("a storage version without status: want false")
	}
}

// TestForbiddenMessage: RBAC's refusal gets the chart's hint; a policy's or
// a webhook's says its own reason, and gets none.
func TestForbiddenMessage(t *testing.T) {
	crds := []string{"widgets.example.com"}
	gr := schema.GroupResource{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}
	rbac := apierrors.NewForbidden(gr, "widgets.example.com", fmt.Errorf(`User "system:serviceaccount:annex-system:annex" cannot update resource "customresourcedefinitions"`))
	if got := forbiddenMessage(rbac, crds); !strings.HasSuffix(got, "; with the Helm chart, name widgets.example.com in adoption.customResourceDefinitions") {
		t.Errorf("RBAC's refusal: %q, want the chart's hint", got)
	}
	policy := apierrors.NewForbidden(gr, "widgets.example.com", fmt.Errorf("ValidatingAdmissionPolicy 'hold' with binding 'hold' denied request: the test holds the release"))
	if got := forbiddenMessage(policy, crds); strings.Contains(got, "Helm chart") || !strings.Contains(got, "the test holds the release") {
		t.Errorf("a policy's refusal: %q, want its reason and no hint", got)
	}
}
