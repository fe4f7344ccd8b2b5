package clustergroups

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// install is the install of annex the tests see the cluster as: its Service
// is ns/svc.
var install = Install{Namespace: "ns", Name: "svc", ManagedBy: "ns.annex"}

func apiService(name string, labels map[string]string, withService bool) apiregistrationv1.APIService {
	svc := apiregistrationv1.APIService{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if withService {
		svc.Spec.Service = &apiregistrationv1.ServiceReference{Namespace: "ns", Name: "svc"}
	}
	return svc
}

func pointingAt(svc apiregistrationv1.APIService, namespace, name string) apiregistrationv1.APIService {
	svc.Spec.Service = &apiregistrationv1.ServiceReference{Namespace: namespace, Name: name}
	return svc
}

func managedBy(value string) map[string]string {
	return map[string]string{v1alpha1.ManagedByLabel: value}
}

func TestOwnership(t *testing.T) {
	for _, tc := range []struct {
		name       string
		apiService apiregistrationv1.APIService
		want       Ownership
	}{
		{"this install's value and Service", apiService("v1.a.example.com", managedBy("ns.annex"), true), Owned},
		{"the default value, this install's Service", apiService("v1.a.example.com", managedBy(v1alpha1.DefaultManagedByValue), true), Legacy},
		{"another install's value, this install's Service", apiService("v1.a.example.com", managedBy("other.annex"), true), NotOwned},
		{"this install's value, another Service", pointingAt(apiService("v1.a.example.com", managedBy("ns.annex"), true), "other", "annex"), NotOwned},
		{"this install's value, a Service of the same name elsewhere", pointingAt(apiService("v1.a.example.com", managedBy("ns.annex"), true), "default", "svc"), NotOwned},
		{"the default value, another Service", pointingAt(apiService("v1.a.example.com", managedBy(v1alpha1.DefaultManagedByValue), true), "other", "annex"), NotOwned},
		{"this install's value, no Service", apiService("v1.a.example.com", managedBy("ns.annex"), false), NotOwned},
		{"no label, this install's Service", apiService("v1.a.example.com", nil, true), NotOwned},
		{"an empty label, this install's Service", apiService("v1.a.example.com", managedBy(""), true), NotOwned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := install.Ownership(&tc.apiService); got != tc.want {
				t.Errorf("Ownership = %d, want %d", got, tc.want)
			}
			if got := install.Owns(&tc.apiService); got != (tc.want != NotOwned) {
				t.Errorf("Owns = %v, want %v", got, tc.want != NotOwned)
			}
		})
	}
	// An install with no value of its own has the default one.
	plain := Install{Namespace: "ns", Name: "svc"}
	legacy := apiService("v1.a.example.com", managedBy(v1alpha1.DefaultManagedByValue), true)
	if got := plain.Ownership(&legacy); got != Owned {
		t.Errorf("with no value of its own, Ownership(default value, its Service) = %d, want Owned", got)
	}
}

func TestGroups(t *testing.T) {
	g := New(
		[]string{"widgets.crd.example.com", "gadgets.crd.example.com", "noname", "things.other.example.com"},
		[]apiregistrationv1.APIService{
			// The aggregator's local APIService for the CRDs' group.
			apiService("v1.crd.example.com", nil, false),
			// A group another aggregated server serves.
			apiService("v1beta1.metrics.example.com", nil, true),
			// A built-in group, served by the cluster's own server.
			apiService("v1.apps", nil, false),
			// A group this install registered: its own.
			apiService("v1.hosted.example.com", managedBy("ns.annex"), true),
			// Registered before installs had values of their own: its own too.
			apiService("v1.legacy.example.com", managedBy(v1alpha1.DefaultManagedByValue), true),
			// Both this install's and another server's version of one group.
			apiService("v1.mixed.example.com", managedBy("ns.annex"), true),
			apiService("v2.mixed.example.com", nil, true),
			// Another install's APIService: the cluster's, for this install.
			apiService("v1.other.install.example.com", managedBy("other.annex"), true),
			// This install's label on an APIService of another Service.
			pointingAt(apiService("v1.elsewhere.example.com", managedBy("ns.annex"), true), "other", "metrics"),
		},
		install,
	)
	for _, tc := range []struct {
		group  string
		crds   []string
		owners []string
	}{
		{
			group:  "crd.example.com",
			crds:   []string{"gadgets.crd.example.com", "widgets.crd.example.com"},
			owners: []string{"CustomResourceDefinition gadgets.crd.example.com", "CustomResourceDefinition widgets.crd.example.com"},
		},
		{group: "other.example.com", crds: []string{"things.other.example.com"}, owners: []string{"CustomResourceDefinition things.other.example.com"}},
		{group: "metrics.example.com", owners: []string{"APIService v1beta1.metrics.example.com"}},
		{group: "apps", owners: []string{"APIService v1.apps"}},
		{group: "hosted.example.com"},
		{group: "legacy.example.com"},
		{group: "other.install.example.com", owners: []string{"APIService v1.other.install.example.com"}},
		{group: "elsewhere.example.com", owners: []string{"APIService v1.elsewhere.example.com"}},
		{group: "mixed.example.com", owners: []string{"APIService v2.mixed.example.com"}},
		{group: "free.example.com"},
		// A name without a dot is no CRD of any group.
		{group: ""},
	} {
		t.Run(tc.group, func(t *testing.T) {
			if got := g.CRDs(tc.group); !slices.Equal(got, tc.crds) {
				t.Errorf("CRDs(%q) = %q, want %q", tc.group, got, tc.crds)
			}
			if got := g.Owners(tc.group); !slices.Equal(got, tc.owners) {
				t.Errorf("Owners(%q) = %q, want %q", tc.group, got, tc.owners)
			}
		})
	}
}
