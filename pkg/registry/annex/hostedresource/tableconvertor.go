package hostedresource

import (
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/rest"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/registry/table"
)

var columns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "Name is plural.group."},
	{Name: "Group", Type: "string", Description: "API group of the hosted type."},
	{Name: "Kind", Type: "string", Description: "Kind of the hosted type."},
	{Name: "Scope", Type: "string", Description: "Cluster or Namespaced."},
	{Name: "Versions", Type: "string", Description: "Served versions; the storage version is marked with *."},
	{Name: "Backend", Type: "string", Description: "StorageBackend that holds the objects."},
	{Name: "Established", Type: "string", Description: "Whether annex serves the type."},
	{Name: "Objects", Type: "string", Description: "Objects of the type, as its storage last counted them."},
	{Name: "Age", Type: "string", Description: "Time since creation."},
}

// NewTableConvertor returns the table kubectl get prints.
func NewTableConvertor() rest.TableConvertor {
	return table.NewConvertor(columns, func(obj runtime.Object, name, age string) []interface{} {
		hr := obj.(*annex.HostedResource)
		return []interface{}{name, hr.Spec.Group, hr.Spec.Names.Kind, string(hr.Spec.Scope), versions(hr), hr.Spec.Storage.Backend, condition(hr.Status.Conditions, v1alpha1.HostedResourceEstablished), table.Count(hr.Status.ObjectCount), age}
	})
}

func versions(hr *annex.HostedResource) string {
	var vs []string
	for _, v := range hr.Spec.Versions {
		if !v.Served {
			continue
		}
		if v.Storage {
			vs = append(vs, v.Name+"*")
		} else {
			vs = append(vs, v.Name)
		}
	}
	return strings.Join(vs, ",")
}

func condition(conditions []metav1.Condition, conditionType string) string {
	if c := meta.FindStatusCondition(conditions, conditionType); c != nil {
		return string(c.Status)
	}
	return "Unknown"
}
