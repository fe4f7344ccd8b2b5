// Package table builds the tables that kubectl get prints, for the registries
// whose columns come from Go code rather than from JSON paths.
package table

import (
	"context"
	"strconv"

	"k8s.io/apimachinery/pkg/api/meta"
	metatable "k8s.io/apimachinery/pkg/api/meta/table"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/rest"
)

// RowFunc returns the cells of one object's row; name and age are formatted already.
type RowFunc func(obj runtime.Object, name, age string) []interface{}

// NewConvertor returns a table convertor with the given columns and rows.
func NewConvertor(columns []metav1.TableColumnDefinition, row RowFunc) rest.TableConvertor {
	return convertor{columns: columns, row: row}
}

type convertor struct {
	columns []metav1.TableColumnDefinition
	row     RowFunc
}

// ConvertToTable converts one object or a list, keeping the list's
// resourceVersion and continue token so that kubectl can page and watch.
func (c convertor) ConvertToTable(ctx context.Context, obj runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	table := &metav1.Table{ColumnDefinitions: c.columns}
	if m, err := meta.ListAccessor(obj); err == nil {
		table.ResourceVersion, table.Continue, table.RemainingItemCount = m.GetResourceVersion(), m.GetContinue(), m.GetRemainingItemCount()
	} else if m, err := meta.CommonAccessor(obj); err == nil {
		table.ResourceVersion = m.GetResourceVersion()
	}
	var err error
	table.Rows, err = metatable.MetaToTableRow(obj, func(obj runtime.Object, _ metav1.Object, name, age string) ([]interface{}, error) {
		return c.row(obj, name, age), nil
	})
	return table, err
}

// Count prints an optional count: empty until it is known.
func Count(n *int64) string {
	if n == nil {
		return ""
	}
	return strconv.FormatInt(*n, 10)
}

// Bytes prints an optional size in binary units (12.3Mi), empty until it is known.
func Bytes(n *int64) string {
	if n == nil {
		return ""
	}
	// One decimal are enough to read a size at a glance.
	for _, unit := range []struct {
		suffix string
		size   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if *n >= unit.size {
			return strconv.FormatFloat(float64(*n)/float64(unit.size), 'f', 1, 64) + unit.suffix
		}
	}
	return resource.NewQuantity(*n, resource.BinarySI).String()
}
