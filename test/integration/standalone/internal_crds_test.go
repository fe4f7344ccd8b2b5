//go:build integration

package standalone

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"annex.dev/annex/test/integration/framework"
)

// TestInternalCRDAPIIsAnnexs checks that standalone mode's admin, although
// in system:masters, cannot use annex's internal CRD API: hosted types are
// declared, changed and deleted through HostedResource only.
func TestInternalCRDAPIIsAnnexs(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port)
	a.declare(write(t, dir, "gadgets.yaml", gadgets), 30*time.Second, "gadgets.example.com")
	a.kubectl("apply", "-f", write(t, dir, "g1.yaml", "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {}\n"))

	out, err := a.kubectlErr("get", "customresourcedefinitions")
	if err == nil || !strings.Contains(out, "Forbidden") || !strings.Contains(out, "hostedresources.annex.dev") {
		t.Errorf("kubectl get customresourcedefinitions as the admin: want a 403 pointing at HostedResource, got %v:\n%s", err, out)
	}
	out, err = a.kubectlErr("delete", "customresourcedefinition", "gadgets.example.com")
	if err == nil || !strings.Contains(out, "Forbidden") {
		t.Errorf("kubectl delete customresourcedefinition as the admin: want a 403, got %v:\n%s", err, out)
	}

	ctx := context.Background()
	client, err := dynamic.NewForConfig(a.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	crds := client.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	created := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "things.example.org"},
		"spec": map[string]any{
			"group": "example.org", "scope": "Cluster",
			"names": map[string]any{"plural": "things", "kind": "Thing"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object"}}}},
		},
	}}
	for verb, do := range map[string]func() error{
		"get":  func() error { _, err := crds.Get(ctx, "gadgets.example.com", metav1.GetOptions{}); return err },
		"list": func() error { _, err := crds.List(ctx, metav1.ListOptions{}); return err },
		"patch": func() error {
			_, err := crds.Patch(ctx, "gadgets.example.com", types.MergePatchType,
				[]byte(`{"metadata":{"annotations":{"annex.dev/storage-backend":"does-not-exist"}}}`), metav1.PatchOptions{})
			return err
		},
		"delete": func() error { return crds.Delete(ctx, "gadgets.example.com", metav1.DeleteOptions{}) },
		"create": func() error { _, err := crds.Create(ctx, created, metav1.CreateOptions{}); return err },
	} {
		if err := do(); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "hostedresources.annex.dev") {
			t.Errorf("%s of an internal CRD as the admin: want a 403 pointing at HostedResource, got %v", verb, err)
		}
	}

	if out := a.kubectl("get", "gadgets", "-o", "name"); strings.TrimSpace(out) != "gadget.example.com/g1" {
		t.Errorf("after the refused requests, gadgets: %q, want gadget.example.com/g1", out)
	}
	if out, err := a.kubectlErr("get", "things.example.org"); err == nil {
		t.Errorf("the refused create declared things.example.org:\n%s", out)
	}
}
