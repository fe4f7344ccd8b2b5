package kubectlannex

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func object(apiVersion, kind, namespace, name string) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": map[string]any{}}}
	obj.SetNamespace(namespace)
	obj.SetName(name)
	obj.SetResourceVersion("42")
	obj.SetUID("old-uid")
	return obj
}

func TestPrepare(t *testing.T) {
	hrs := testTypes()
	c := &clients{namespace: "current"}
	explicit := &clients{namespace: "given", explicitNamespace: true}
	pos := position{document: 2}

	// A namespaced object without a namespace goes to the current one.
	item, err := prepare(hrs, c, object("reports.example.com/v1", "PolicyReport", "", "a"), pos)
	if err != nil {
		t.Fatal(err)
	}
	if item.obj.GetNamespace() != "current" || item.obj.GetResourceVersion() != "" || item.obj.GetUID() != "" || item.typ.Name() != "policyreports.reports.example.com" {
		t.Errorf("prepared %v as %s", item.obj.Object, item.typ.Name())
	}
	// One with a namespace keeps it, unless --namespace names another.
	if item, err := prepare(hrs, c, object("reports.example.com/v1", "PolicyReport", "team-a", "a"), pos); err != nil || item.obj.GetNamespace() != "team-a" {
		t.Errorf("an object of namespace team-a was prepared for %q (%v)", item.obj.GetNamespace(), err)
	}
	if item, err := prepare(hrs, explicit, object("reports.example.com/v1", "PolicyReport", "given", "a"), pos); err != nil || item.obj.GetNamespace() != "given" {
		t.Errorf("an object of the namespace --namespace names was prepared for %q (%v)", item.obj.GetNamespace(), err)
	}
	// A cluster-scoped object has no namespace.
	if item, err := prepare(hrs, c, object("reports.example.com/v1", "ClusterPolicyReport", "team-a", "a"), pos); err != nil || item.obj.GetNamespace() != "" {
		t.Errorf("a cluster-scoped object was prepared for namespace %q (%v)", item.obj.GetNamespace(), err)
	}

	for _, tc := range []struct {
		obj  *unstructured.Unstructured
		c    *clients
		want string
	}{
		{object("reports.example.com/v1", "PolicyReport", "team-a", "a"), explicit,
			`document 2 (policyreport.reports.example.com/a in namespace team-a): the namespace of the object "team-a" does not match the namespace "given"`},
		{object("v1", "ConfigMap", "", "a"), c, `document 2 (ConfigMap "a"): annex hosts no kind ConfigMap of apiVersion v1`},
		{object("reports.example.com/v9", "PolicyReport", "", "a"), c, "annex does not serve version v9 of policyreports.reports.example.com"},
		{object("reports.example.com/v1", "PolicyReport", "", ""), c, "document 2 (PolicyReport): the object has no metadata.name"},
		{&unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "a"}}}, c, "document 2: the object has no apiVersion or kind"},
	} {
		_, err := prepare(hrs, tc.c, tc.obj, pos)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("prepare(%v): error %v, want %q", tc.obj.Object, err, tc.want)
		}
	}
}

func TestAnnexNotInstalled(t *testing.T) {
	c := &clients{}
	err := c.annexError(context.Background(), apierrors.NewNotFound(schema.GroupResource{Group: "annex.dev", Resource: "hostedresources"}, ""))
	for _, want := range []string{"annex is not installed in this cluster", "annex.dev/v1alpha1", "helm install annex charts/annex"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error for a cluster without annex %q lacks %q", err, want)
		}
	}
}
