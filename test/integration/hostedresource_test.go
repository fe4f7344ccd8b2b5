//go:build integration

package integration

import (
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"annex.dev/annex/test/integration/framework"
)

// widgetSchema is the schema of example.com's Widget in the design's example.
func widgetSchema() map[string]any {
	return map[string]any{
		"type": "object",
		"properties": map[string]any{
			"spec": map[string]any{
				"type": "object",
				"properties": map[string]any{
					"size": map[string]any{"type": "integer"},
				},
			},
		},
	}
}

// widgetHostedResource is a CRD manifest for widgets.<group> with its
// apiVersion and kind changed to HostedResource, as a user would write it.
func widgetHostedResource(group string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": framework.Group + "/" + framework.Version,
		"kind":       "HostedResource",
		"metadata":   map[string]any{"name": "widgets." + group},
		"spec": map[string]any{
			"group": group,
			"names": map[string]any{"plural": "widgets", "kind": "Widget"},
			"scope": "Namespaced",
			"versions": []any{map[string]any{
				"name":    "v1",
				"served":  true,
				"storage": true,
				"schema":  map[string]any{"openAPIV3Schema": widgetSchema()},
			}},
		},
	}}
}

func TestHostedResource(t *testing.T) {
	t.Run("a valid one is created with its defaults", func(t *testing.T) {
		group := uniqueName("valid") + ".example.com"
		got := create(t, adminClient(t), framework.HostedResources, widgetHostedResource(group))

		// Defaults must be visible on what the create returns and on a
		// later read, i.e. they are stored, not only computed on output.
		fetched, err := adminClient(t).Resource(framework.HostedResources).Get(testContext(t), got.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("getting %s: %v", got.GetName(), err)
		}
		for label, obj := range map[string]*unstructured.Unstructured{"create response": got, "get": fetched} {
			for _, d := range []struct {
				path []string
				want string
			}{
				{[]string{"spec", "names", "singular"}, "widget"},
				{[]string{"spec", "names", "listKind"}, "WidgetList"},
				{[]string{"spec", "storage", "backend"}, "default"},
				{[]string{"spec", "conversion", "strategy"}, "None"},
			} {
				v, _, _ := unstructured.NestedString(obj.Object, d.path...)
				if v != d.want {
					t.Errorf("%s: %s = %q, want the default %q", label, strings.Join(d.path, "."), v, d.want)
				}
			}
		}
		if got.GetGeneration() != 1 {
			t.Errorf("metadata.generation = %d, want 1 on create", got.GetGeneration())
		}
	})

	t.Run("an invalid one is rejected naming each bad field", func(t *testing.T) {
		obj := widgetHostedResource("nodot")
		versions := []any{
			// No schema.
			map[string]any{"name": "v1", "served": true, "storage": true},
			// A second storage version.
			map[string]any{"name": "v2", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": widgetSchema()}},
		}
		if err := unstructured.SetNestedSlice(obj.Object, versions, "spec", "versions"); err != nil {
			t.Fatal(err)
		}
		_, err := adminClient(t).Resource(framework.HostedResources).Create(testContext(t), obj, metav1.CreateOptions{})
		if err == nil {
			deleteIfExists(t, framework.HostedResources, obj.GetName())
			t.Fatalf("creating an invalid HostedResource succeeded, want 422")
		}
		if !apierrors.IsInvalid(err) {
			t.Fatalf("want 422 Invalid, got %d: %v", statusCode(err), err)
		}
		expectCauses(t, causeFields(err), "spec.group", "spec.versions", "spec.versions[0].schema.openAPIV3Schema")
		expectAbsent(t, framework.HostedResources, obj.GetName())
	})

	t.Run("metadata.name must be plural.group", func(t *testing.T) {
		obj := widgetHostedResource(uniqueName("name") + ".example.com")
		obj.SetName("gadgets.example.com")
		_, err := adminClient(t).Resource(framework.HostedResources).Create(testContext(t), obj, metav1.CreateOptions{})
		if err == nil {
			deleteIfExists(t, framework.HostedResources, obj.GetName())
			t.Fatalf("creating a HostedResource named unlike <plural>.<group> succeeded, want 422")
		}
		if !apierrors.IsInvalid(err) {
			t.Fatalf("want 422 Invalid, got %d: %v", statusCode(err), err)
		}
		expectCauses(t, causeFields(err), "metadata.name")
	})
}

func statusCode(err error) int32 {
	if s, ok := err.(apierrors.APIStatus); ok {
		return s.Status().Code
	}
	return 0
}
