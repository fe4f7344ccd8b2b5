// Package clustergroups tells which API groups a Kubernetes cluster serves
// by itself. annex leaves such a group to the cluster: two servers for one
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

// Groups indexes by group what a cluster serves itself.
type Groups struct {
	crds        map[string][]string
	apiServices map[string][]apiregistrationv1.APIService
}

// New indexes the names of the cluster's CustomResourceDefinitions and its
// APIServices.
func New(crdNames []string, apiServices []apiregistrationv1.APIService) *Groups {
	g := &Groups{crds: map[string][]string{}, apiServices: map[string][]apiregistrationv1.APIService{}}
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
// APIServices ("APIService <name>") but those that carry annex's
// ManagedByLabel. The aggregator registers a local APIService (one with no
// service) for each group of CRDs; it is left out when the CRDs are named.
func (g *Groups) Owners(group string) []string {
	var owners []string
	for _, name := range g.crds[group] {
		owners = append(owners, "CustomResourceDefinition "+name)
	}
	for _, svc := range g.apiServices[group] {
		if svc.Labels[v1alpha1.ManagedByLabel] != "" {
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
