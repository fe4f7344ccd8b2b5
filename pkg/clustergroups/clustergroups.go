// Package clustergroups tells which API groups a Kubernetes cluster serves
// by itself, and which of its APIServices an install of annex owns. annex
// leaves a group the cluster serves to the cluster: two servers for one
// group would split it. The hostedgroups admission plugin refuses a
// HostedResource of such a group, and the apiservice controller registers
// no APIService for it.
package clustergroups

import (
	"sort"
	"strings"

	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// Install is one install of annex in a cluster: the Service its
// APIServices point at, and its value of v1alpha1.ManagedByLabel.
type Install struct {
	// Namespace and Name of the install's Service.
	Namespace, Name string
	// ManagedBy is the value of v1alpha1.ManagedByLabel on the install's
	// APIServices, one of its own (the chart's is <namespace>.<fullname>).
	// Empty means v1alpha1.DefaultManagedByValue.
	ManagedBy string
}

// Ownership is what an install may do with an existing APIService.
type Ownership int

const (
	// NotOwned: another install's, or not annex's at all; leave it alone.
	NotOwned Ownership = iota
	// Owned: the install's; it may update it, and delete it when no
	// HostedResource serves its group/version.
	Owned
	// Legacy: owned, but labelled v1alpha1.DefaultManagedByValue by an
	// install from before per-install values; the install relabels it with
	// its own value.
	Legacy
)

// ManagedByValue is the label value of the install's APIServices.
func (i Install) ManagedByValue() string {
	if i.ManagedBy == "" {
		return v1alpha1.DefaultManagedByValue
	}
	return i.ManagedBy
}

// Ownership says whether the install owns apiService. It does when
// apiService points at the install's own Service and carries the install's
// label value (Owned), or the default value that every install used before
// it had one of its own (Legacy). A label alone is never enough: another
// install, or anyone who may label an APIService, could set it.
func (i Install) Ownership(apiService *apiregistrationv1.APIService) Ownership {
	if !i.IsService(apiService.Spec.Service) {
		return NotOwned
	}
	switch apiService.Labels[v1alpha1.ManagedByLabel] {
	case i.ManagedByValue():
		return Owned
	case v1alpha1.DefaultManagedByValue:
		return Legacy
	}
	return NotOwned
}

// Owns says whether the install owns apiService, and so may change and
// delete it (see Ownership).
func (i Install) Owns(apiService *apiregistrationv1.APIService) bool {
	return i.Ownership(apiService) != NotOwned
}

// IsService says whether ref names the install's own Service (its port may
// differ: the Service is still the install's).
func (i Install) IsService(ref *apiregistrationv1.ServiceReference) bool {
	return ref != nil && ref.Namespace == i.Namespace && ref.Name == i.Name
}

// Groups indexes by group what a cluster serves itself.
type Groups struct {
	crds        map[string][]string
	apiServices map[string][]apiregistrationv1.APIService
	install     Install
}

// New indexes the names of the cluster's CustomResourceDefinitions and its
// APIServices, as install sees them: its own APIServices are not the
// cluster's.
func New(crdNames []string, apiServices []apiregistrationv1.APIService, install Install) *Groups {
	g := &Groups{crds: map[string][]string{}, apiServices: map[string][]apiregistrationv1.APIService{}, install: install}
	for _, name := range crdNames {
		// A CRD's name is <plural>.<group>.
		if _, group, ok := strings.Cut(name, "."); ok {
			g.crds[group] = append(g.crds[group], name)
		}
	}
	for _, svc := range apiServices {
		// An APIService's name is <version>.<group>.
		_, group, _ := strings.Cut(svc.Name, ".")
		g.apiServices[group] = append(g.apiServices[group], svc)
	}
	for _, names := range g.crds {
		sort.Strings(names)
	}
	return g
}

// CRDs names, sorted, the cluster's CustomResourceDefinitions of group.
func (g *Groups) CRDs(group string) []string {
	return g.crds[group]
}

// Owners names, sorted, what serves group in the cluster: its
// CustomResourceDefinitions ("CustomResourceDefinition <name>"), and its
// APIServices ("APIService <name>") but those the install owns (another
// install's count as the cluster's). The aggregator registers a local
// APIService (one with no service) for each group of CRDs; it is left out
// when the CRDs are named.
func (g *Groups) Owners(group string) []string {
	var owners []string
	for _, name := range g.crds[group] {
		owners = append(owners, "CustomResourceDefinition "+name)
	}
	for _, svc := range g.apiServices[group] {
		if g.install.Owns(&svc) {
			continue
		}
		if svc.Spec.Service == nil && len(g.crds[group]) > 0 {
			continue
		}
		owners = append(owners, "APIService "+svc.Name)
	}
	sort.Strings(owners)
	return owners
}
