//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestInternalCRDAPIIsAnnexs sends requests for annex's internal
// CustomResourceDefinitions straight to annex, as identities the cluster
// allows to do anything with CRDs. annex refuses each with a 403 saying
// hosted types are managed through HostedResource, and the hosted type and
// its objects are still there afterwards. (Patching the storage-backend
// annotation to a missing backend, or deleting the CRD, would delete every
// object of the type.)
func TestInternalCRDAPIIsAnnexs(t *testing.T) {
	ctx := testContext(t)
	admin := adminClient(t)
	ns := createNamespace(t, "internal-crds")
	group := uniqueName("internal") + ".example.com"
	gvr := serveHostedType(t, "Gizmo", "gizmos", group, ns)
	crdName := gvr.Resource + "." + group
	objects := []string{"g1", "g2"}
	for _, name := range objects {
		if _, err := admin.Resource(gvr).Namespace(ns).Create(ctx, hostedObject(gvr, "Gizmo", name, 1), metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating gizmo %s: %v", name, err)
		}
	}

	crdAdmin := uniqueName("crd-admin")
	bindClusterRole(t, crdAdmin, rbacv1.PolicyRule{
		APIGroups: []string{"apiextensions.k8s.io"},
		Resources: []string{"customresourcedefinitions", "customresourcedefinitions/status"},
		Verbs:     []string{"*"},
	})
	waitUntilClusterAllows(t, crdAdmin, nil, "delete", "customresourcedefinitions")
	crdAdminConfig, err := env.AnnexUserConfig(crdAdmin)
	if err != nil {
		t.Fatal(err)
	}
	masters, err := env.AnnexAdminConfig(uniqueName("masters"))
	if err != nil {
		t.Fatal(err)
	}
	identities := []struct {
		name string
		cfg  *rest.Config
	}{
		{"a user with every verb on customresourcedefinitions in the cluster", crdAdminConfig},
		{"a cluster admin (system:masters)", masters},
		{"a cluster admin asserted by the front proxy", env.AnnexFrontProxyConfig(uniqueName("proxied-admin"), "system:masters")},
		{"annex's loopback user name asserted by the front proxy", env.AnnexFrontProxyConfig("system:apiserver", "system:masters")},
	}
	for _, id := range identities {
		t.Run(id.name, func(t *testing.T) {
			expectInternalCRDAPIRefused(t, id.cfg, crdName, group)
		})
	}

	// The type still serves every object, and goes on doing so: what the
	// refused requests would have started (the hostedresource controller
	// deleting the CRD, the CRD finalizer deleting the objects) takes a
	// moment, so watch for a while.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		list, err := admin.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("after the refused requests: listing gizmos through the cluster: %v", err)
		}
		if len(list.Items) != len(objects) {
			t.Fatalf("after the refused requests: %d gizmos listed through the cluster, want %d", len(list.Items), len(objects))
		}
	}
	// The refused creates declared nothing.
	things := schema.GroupVersionResource{Group: "created-" + group, Version: "v1", Resource: "things"}
	if _, err := dynamicFor(t, masters).Resource(things).List(ctx, metav1.ListOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("listing %s straight from annex as a cluster admin after the refused creates: want 404 NotFound, got %v", things, err)
	}
	waitForCondition(t, crdName, "Established", metav1.ConditionTrue)
}

// expectInternalCRDAPIRefused sends every kind of request for the internal
// CRD API as cfg's identity and fails unless each is refused with a 403
// that points at HostedResource.
func expectInternalCRDAPIRefused(t *testing.T, cfg *rest.Config, crdName, group string) {
	t.Helper()
	ctx := testContext(t)
	crds := dynamicFor(t, cfg).Resource(crdsGVR)
	newCRD := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": "things.created-" + group},
		"spec": map[string]any{
			"group": "created-" + group,
			"names": map[string]any{"plural": "things", "kind": "Thing"},
			"scope": "Cluster",
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
			}},
		},
	}}
	replaced := newCRD.DeepCopy()
	replaced.SetName(crdName)
	missingBackend := []byte(`{"metadata":{"annotations":{"annex.dev/storage-backend":"does-not-exist"}}}`)

	requests := []struct {
		verb string
		do   func() error
	}{
		{"get", func() error { _, err := crds.Get(ctx, crdName, metav1.GetOptions{}); return err }},
		{"list", func() error { _, err := crds.List(ctx, metav1.ListOptions{}); return err }},
		{"watch", func() error {
			w, err := crds.Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		}},
		{"patch the storage-backend annotation", func() error {
			_, err := crds.Patch(ctx, crdName, types.MergePatchType, missingBackend, metav1.PatchOptions{})
			return err
		}},
		{"patch status", func() error {
			_, err := crds.Patch(ctx, crdName, types.MergePatchType, []byte(`{"status":{"conditions":[]}}`), metav1.PatchOptions{}, "status")
			return err
		}},
		{"update", func() error { _, err := crds.Update(ctx, replaced, metav1.UpdateOptions{}); return err }},
		{"delete", func() error { return crds.Delete(ctx, crdName, metav1.DeleteOptions{}) }},
		{"deletecollection", func() error { return crds.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}) }},
		{"create", func() error { _, err := crds.Create(ctx, newCRD, metav1.CreateOptions{}); return err }},
	}
	for _, r := range requests {
		err := r.do()
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s of the internal CRD %s: want 403 Forbidden, got %v", r.verb, crdName, err)
			continue
		}
		if !strings.Contains(err.Error(), "hostedresources.annex.dev") {
			t.Errorf("%s: the 403 does not say hosted types are managed through HostedResource: %v", r.verb, err)
		}
	}
}

// bindClusterRole grants user the rule through a ClusterRole and a
// ClusterRoleBinding of the cluster, removed when the test ends.
func bindClusterRole(t *testing.T, user string, rule rbacv1.PolicyRule) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: []rbacv1.PolicyRule{rule}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ClusterRole: %v", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ClusterRoleBinding: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = cs.RbacV1().ClusterRoleBindings().Delete(ctx, user, metav1.DeleteOptions{})
		_ = cs.RbacV1().ClusterRoles().Delete(ctx, user, metav1.DeleteOptions{})
	})
}

// waitUntilClusterAllows waits until the cluster's authorizer answers a
// SubjectAccessReview for user on the apiextensions.k8s.io resource with
// allowed, as it answers annex.
func waitUntilClusterAllows(t *testing.T, user string, groups []string, verb, resource string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Group: "apiextensions.k8s.io", Resource: resource, Verb: verb},
	}}
	var last string
	err = wait.PollUntilContextTimeout(testContext(t), 250*time.Millisecond, rbacTimeout, true, func(ctx context.Context) (bool, error) {
		got, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = got.Status.Reason
		return got.Status.Allowed, nil
	})
	if err != nil {
		t.Fatalf("the cluster does not allow %s to %s %s after %s: %s", user, verb, resource, rbacTimeout, last)
	}
}
