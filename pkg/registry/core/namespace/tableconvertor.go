package namespace

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/rest"

	"annex.dev/annex/pkg/registry/table"
)

var columns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
	{Name: "Status", Type: "string", Description: "The status of the namespace: Active or Terminating."},
	{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
}

// NewTableConvertor returns the table kubectl get prints: NAME STATUS AGE.
func NewTableConvertor() rest.TableConvertor {
	return table.NewConvertor(columns, func(obj runtime.Object, name, age string) []interface{} {
		return []interface{}{name, string(obj.(*corev1.Namespace).Status.Phase), age}
	})
}
