package kubectlannex

import (
	"fmt"
	"slices"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// hostedType is one type annex hosts, as its HostedResource declares it.
type hostedType struct {
	hr *v1alpha1.HostedResource
}

// GroupResource is the type's group and plural resource name.
func (t hostedType) GroupResource() schema.GroupResource {
	return schema.GroupResource{Group: t.hr.Spec.Group, Resource: t.hr.Spec.Names.Plural}
}

// Name is the HostedResource's name, resource.group as kubectl spells it.
func (t hostedType) Name() string { return t.hr.Name }

func (t hostedType) namespaced() bool {
	return t.hr.Spec.Scope == apiextensionsv1.NamespaceScoped
}

// servedVersions are the served versions, the one clients prefer first (the
// order of the kube-apiserver's discovery).
func (t hostedType) servedVersions() []string {
	var vs []string
	for _, v := range t.hr.Spec.Versions {
		if v.Served {
			vs = append(vs, v.Name)
		}
	}
	slices.SortStableFunc(vs, func(a, b string) int { return -version.CompareKubeAwareVersionStrings(a, b) })
	return vs
}

// exportVersion is the version export reads: the storage version, which
// holds every field the store keeps, when it is served; else the preferred
// served version. "" when no version is served.
func (t hostedType) exportVersion() string {
	served := t.servedVersions()
	for _, v := range t.hr.Spec.Versions {
		if v.Storage && slices.Contains(served, v.Name) {
			return v.Name
		}
	}
	if len(served) == 0 {
		return ""
	}
	return served[0]
}

// hasStatus says whether the version has a status subresource, whose
// status a create ignores.
func (t hostedType) hasStatus(name string) bool {
	for _, v := range t.hr.Spec.Versions {
		if v.Name == name {
			return v.Subresources != nil && v.Subresources.Status != nil
		}
	}
	return false
}

// GroupVersionResource is the type's resource at version v.
func (t hostedType) GroupVersionResource(v string) schema.GroupVersionResource {
	return t.GroupResource().WithVersion(v)
}

// names are the names a user may call the type by, lower case: plural,
// singular, kind and short names.
func (t hostedType) names() []string {
	n := t.hr.Spec.Names
	names := []string{n.Plural, n.Singular, n.Kind}
	names = append(names, n.ShortNames...)
	for i := range names {
		names[i] = strings.ToLower(names[i])
	}
	return slices.DeleteFunc(names, func(s string) bool { return s == "" })
}

// matches says whether arg names the type as kubectl would resolve it: a
// name alone, name.group or name.version.group.
func (t hostedType) matches(arg string) bool {
	arg = strings.ToLower(arg)
	name, rest, qualified := strings.Cut(arg, ".")
	if !slices.Contains(t.names(), name) {
		return false
	}
	if !qualified {
		return true
	}
	group := strings.ToLower(t.hr.Spec.Group)
	if rest == group {
		return true
	}
	for _, v := range t.servedVersions() {
		if rest == strings.ToLower(v)+"."+group {
			return true
		}
	}
	return false
}

// findType returns the hosted type that arg names (policyreports,
// policyreport, PolicyReport, polr, policyreports.reports.example.com,
// policyreports.v1.reports.example.com).
func findType(hrs []v1alpha1.HostedResource, arg string) (hostedType, error) {
	var found []hostedType
	for i := range hrs {
		t := hostedType{hr: &hrs[i]}
		if t.matches(arg) {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return hostedType{}, fmt.Errorf("annex hosts no type named %q (`kubectl annex status` lists the types it hosts)", arg)
	}
	var names []string
	for _, t := range found {
		names = append(names, t.Name())
	}
	slices.Sort(names)
	return hostedType{}, fmt.Errorf("%q names more than one hosted type: %s; give the full name, resource.group", arg, strings.Join(names, ", "))
}

// typeOf returns the hosted type of objects of gvk, whose version must be
// served.
func typeOf(hrs []v1alpha1.HostedResource, gvk schema.GroupVersionKind) (hostedType, error) {
	for i := range hrs {
		t := hostedType{hr: &hrs[i]}
		if t.hr.Spec.Group != gvk.Group || t.hr.Spec.Names.Kind != gvk.Kind {
			continue
		}
		if !slices.Contains(t.servedVersions(), gvk.Version) {
			return hostedType{}, fmt.Errorf("annex does not serve version %s of %s (served: %s)", gvk.Version, t.Name(), strings.Join(t.servedVersions(), ", "))
		}
		return t, nil
	}
	return hostedType{}, fmt.Errorf("annex hosts no kind %s of apiVersion %s (`kubectl annex status` lists the types it hosts)", gvk.Kind, gvk.GroupVersion())
}
