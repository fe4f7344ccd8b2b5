package clustergroups

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

func apiService(name string, labels map[string]string, withService bool) apiregistrationv1.APIService {
	svc := apiregistrationv1.APIService{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if withService {
		svc.Spec.Service = &apiregistrationv1.ServiceReference{Namespace: "ns", Name: "svc"}
	}
	return svc
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
			// A group annex registered: annex's own.
			apiService("v1.hosted.example.com", map[string]string{v1alpha1.ManagedByLabel: v1alpha1.DefaultManagedByValue}, true),
			// Both annex's and another server's version of one group.
			apiService("v1.mixed.example.com", map[string]string{v1alpha1.ManagedByLabel: v1alpha1.DefaultManagedByValue}, true),
			apiService("v2.mixed.example.com", nil, true),
		},
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
