package kubectlannex

import (
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// hostedResourceFor builds a HostedResource as a user declares one; the
// first version given is the storage version.
func hostedResourceFor(kind, plural, group string, scope apiextensionsv1.ResourceScope, shortNames []string, versions ...string) v1alpha1.HostedResource {
	hr := v1alpha1.HostedResource{
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + group},
		Spec: v1alpha1.HostedResourceSpec{
			Group: group,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Kind: kind, Plural: plural, Singular: strings.ToLower(kind), ShortNames: shortNames,
			},
			Scope: scope,
		},
	}
	for i, v := range versions {
		hr.Spec.Versions = append(hr.Spec.Versions, apiextensionsv1.CustomResourceDefinitionVersion{
			Name: v, Served: true, Storage: i == 0,
			Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
		})
	}
	return hr
}

func testTypes() []v1alpha1.HostedResource {
	return []v1alpha1.HostedResource{
		hostedResourceFor("PolicyReport", "policyreports", "reports.example.com", apiextensionsv1.NamespaceScoped, []string{"polr"}, "v1", "v1beta1"),
		hostedResourceFor("ClusterPolicyReport", "clusterpolicyreports", "reports.example.com", apiextensionsv1.ClusterScoped, []string{"cpolr"}, "v1"),
		hostedResourceFor("Widget", "widgets", "a.example.com", apiextensionsv1.NamespaceScoped, nil, "v1"),
		hostedResourceFor("Widget", "widgets", "b.example.com", apiextensionsv1.NamespaceScoped, nil, "v2", "v1"),
	}
}

func TestFindTypeByEveryName(t *testing.T) {
	hrs := testTypes()
	for _, arg := range []string{
		"policyreports", "policyreport", "PolicyReport", "polr", "POLR",
		"policyreports.reports.example.com", "policyreport.reports.example.com",
		"policyreports.v1.reports.example.com", "polr.v1beta1.reports.example.com",
	} {
		got, err := findType(hrs, arg)
		if err != nil {
			t.Errorf("findType(%q): %v", arg, err)
			continue
		}
		if got.Name() != "policyreports.reports.example.com" {
			t.Errorf("findType(%q) = %s, want policyreports.reports.example.com", arg, got.Name())
		}
	}
}

func TestFindTypeRefusesUnknownAndAmbiguousNames(t *testing.T) {
	hrs := testTypes()
	for arg, want := range map[string][]string{
		"gadgets":                              {`annex hosts no type named "gadgets"`, "kubectl annex status"},
		"policyreports.other.example.com":      {`annex hosts no type named "policyreports.other.example.com"`},
		"policyreports.v2.reports.example.com": {`no type named`},
		"widgets":                              {`"widgets" names more than one hosted type: widgets.a.example.com, widgets.b.example.com`, "resource.group"},
	} {
		_, err := findType(hrs, arg)
		if err == nil {
			t.Errorf("findType(%q) found a type, want an error", arg)
			continue
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("findType(%q): error %q lacks %q", arg, err, w)
			}
		}
	}
	if got, err := findType(hrs, "widgets.b.example.com"); err != nil || got.Name() != "widgets.b.example.com" {
		t.Errorf("findType(widgets.b.example.com) = %v, %v; want the type of group b.example.com", got.Name(), err)
	}
}

func TestExportVersionIsTheServedStorageVersion(t *testing.T) {
	hrs := testTypes()
	widgets := hostedType{hr: &hrs[3]}
	if got := widgets.exportVersion(); got != "v2" {
		t.Errorf("export version of widgets.b = %q, want the storage version v2", got)
	}
	// With the storage version not served, the preferred served version.
	hr := hostedResourceFor("Widget", "widgets", "c.example.com", apiextensionsv1.NamespaceScoped, nil, "v1alpha1", "v1beta1", "v1")
	hr.Spec.Versions[0].Served = false
	if got := (hostedType{hr: &hr}).exportVersion(); got != "v1" {
		t.Errorf("export version with the storage version unserved = %q, want the preferred served version v1", got)
	}
	hr.Spec.Versions[1].Served, hr.Spec.Versions[2].Served = false, false
	if got := (hostedType{hr: &hr}).exportVersion(); got != "" {
		t.Errorf("export version with no served version = %q, want none", got)
	}
}

func TestTypeOf(t *testing.T) {
	hrs := testTypes()
	got, err := typeOf(hrs, schema.GroupVersionKind{Group: "reports.example.com", Version: "v1beta1", Kind: "PolicyReport"})
	if err != nil || got.Name() != "policyreports.reports.example.com" {
		t.Errorf("typeOf(PolicyReport v1beta1) = %q, %v", got.Name(), err)
	}
	for gvk, want := range map[schema.GroupVersionKind]string{
		{Version: "v1", Kind: "ConfigMap"}:                                  "annex hosts no kind ConfigMap of apiVersion v1",
		{Group: "reports.example.com", Version: "v2", Kind: "PolicyReport"}: "annex does not serve version v2 of policyreports.reports.example.com (served: v1, v1beta1)",
	} {
		if _, err := typeOf(hrs, gvk); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("typeOf(%v): error %v, want %q", gvk, err, want)
		}
	}
}
