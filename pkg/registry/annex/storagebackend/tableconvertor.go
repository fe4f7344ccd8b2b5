package storagebackend

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
	{Name: "Name", Type: "string", Format: "name", Description: "Name of the backend, as HostedResources refer to it."},
	{Name: "Type", Type: "string", Description: "Embedded, Etcd or Postgres."},
	{Name: "Ready", Type: "string", Description: "Whether the backend serves requests."},
	{Name: "Reason", Type: "string", Priority: 1, Description: "Why the backend is or is not ready."},
	{Name: "Objects", Type: "string", Description: "Objects of the hosted types kept in the backend."},
	{Name: "Size", Type: "string", Description: "Size of the store's database, as it reports it."},
	{Name: "Endpoints", Type: "string", Priority: 1, Description: "Client URLs of an external etcd."},
	{Name: "Age", Type: "string", Description: "Time since creation."},
}

// NewTableConvertor returns the table kubectl get prints.
func NewTableConvertor() rest.TableConvertor {
	return table.NewConvertor(columns, func(obj runtime.Object, name, age string) []interface{} {
		sb := obj.(*annex.StorageBackend)
		ready, reason := "Unknown", ""
		if c := meta.FindStatusCondition(sb.Status.Conditions, v1alpha1.StorageBackendReady); c != nil {
			ready, reason = string(c.Status), c.Reason
		}
		var endpoints string
		if sb.Spec.Etcd != nil {
			endpoints = strings.Join(sb.Spec.Etcd.Endpoints, ",")
		}
		return []interface{}{name, string(sb.Spec.Type), ready, reason, table.Count(sb.Status.ObjectCount), table.Bytes(sb.Status.SizeBytes), endpoints, age}
	})
}
