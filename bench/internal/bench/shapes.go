package bench

import (
	"fmt"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// benchLabel is on every object the driver creates; nothingSelector matches
// none of them, so a LIST with it measures the cost of scanning alone.
const (
	benchLabel      = "bench.annex.dev/run"
	nothingSelector = "bench.annex.dev/nothing=true"
)

// A shape is one kind of object the workload creates. The kube-apiserver
// holds custom resources as nested maps, so what an object costs depends on
// how many fields it has more than on its size: report and report-large are
// policy-report-like (many small fields), flat is one string.
type shape struct {
	// Name is how the report calls the shape.
	Name string
	// Kind and Plural name the type that holds objects of this shape.
	Kind, Plural string
	// results is the number of results of a report; 0 for flat.
	results int
}

var (
	shapeReport      = shape{Name: "report", Kind: "BenchReport", Plural: "benchreports", results: 8}
	shapeReportLarge = shape{Name: "report-large", Kind: "BenchLargeReport", Plural: "benchlargereports", results: 64}
	shapeFlat        = shape{Name: "flat", Kind: "BenchFlat", Plural: "benchflats"}
	// shapeConfigMap is the typed reference: a ConfigMap of 1 KiB in the
	// kube-apiserver. It is not a custom resource type.
	shapeConfigMap = shape{Name: "configmap", Kind: "ConfigMap", Plural: "configmaps"}

	crShapes = []shape{shapeReport, shapeReportLarge, shapeFlat}
)

// flatData is the 1 KiB string of a flat object and of a ConfigMap.
var flatData = strings.Repeat("x", 1024)

// objectName is the name of object i of every shape.
func objectName(i int) string { return fmt.Sprintf("obj-%07d", i) }

// object builds object i of shape s with apiVersion apiVersion in namespace ns.
func (s shape) object(apiVersion, ns string, i int) *unstructured.Unstructured {
	meta := map[string]any{
		"name":      objectName(i),
		"namespace": ns,
		"labels":    map[string]any{benchLabel: "yes"},
	}
	obj := map[string]any{"apiVersion": apiVersion, "kind": s.Kind, "metadata": meta}
	switch {
	case s.Kind == shapeConfigMap.Kind:
		obj["data"] = map[string]any{"data": flatData}
	case s.results == 0:
		obj["spec"] = map[string]any{"data": flatData}
	default:
		results := make([]any, s.results)
		for r := range results {
			results[r] = map[string]any{
				"policy":    fmt.Sprintf("pol-%d", r),
				"rule":      "r1",
				"result":    "pass",
				"severity":  "low",
				"category":  "sec",
				"timestamp": map[string]any{"seconds": int64(1700000000 + i), "nanos": int64(r)},
				"resources": []any{map[string]any{"kind": "Pod", "name": fmt.Sprintf("web-%d", i)}},
			}
		}
		obj["spec"] = map[string]any{"scope": map[string]any{"kind": "Deployment", "name": fmt.Sprintf("web-%d", i)}}
		obj["summary"] = map[string]any{"pass": int64(s.results), "fail": int64(0), "warn": int64(0), "error": int64(0), "skip": int64(0)}
		obj["results"] = results
	}
	return &unstructured.Unstructured{Object: obj}
}

// mutate changes obj in place the way an update of the workload does: one
// counter or one character, so that updates cost what the shape costs.
func (s shape) mutate(obj *unstructured.Unstructured, round int) {
	switch {
	case s.Kind == shapeConfigMap.Kind:
		_ = unstructured.SetNestedField(obj.Object, fmt.Sprintf("%d", round)+flatData[1:], "data", "data")
	case s.results == 0:
		_ = unstructured.SetNestedField(obj.Object, fmt.Sprintf("%d", round)+flatData[1:], "spec", "data")
	default:
		_ = unstructured.SetNestedField(obj.Object, int64(round), "summary", "warn")
	}
}

// crdSpec is the definition of the type holding shape s in group, the same
// for the CRD (A) and the HostedResource (B, C).
func (s shape) crdSpec(group string) apiextensionsv1.CustomResourceDefinitionSpec {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	integer := apiextensionsv1.JSONSchemaProps{Type: "integer", Format: "int64"}
	obj := func(props map[string]apiextensionsv1.JSONSchemaProps) apiextensionsv1.JSONSchemaProps {
		return apiextensionsv1.JSONSchemaProps{Type: "object", Properties: props}
	}
	props := map[string]apiextensionsv1.JSONSchemaProps{
		"apiVersion": str,
		"kind":       str,
		"metadata":   {Type: "object"},
	}
	if s.results == 0 {
		props["spec"] = obj(map[string]apiextensionsv1.JSONSchemaProps{"data": str})
	} else {
		props["spec"] = obj(map[string]apiextensionsv1.JSONSchemaProps{
			"scope": obj(map[string]apiextensionsv1.JSONSchemaProps{"kind": str, "name": str}),
		})
		props["summary"] = obj(map[string]apiextensionsv1.JSONSchemaProps{
			"pass": integer, "fail": integer, "warn": integer, "error": integer, "skip": integer,
		})
		resource := obj(map[string]apiextensionsv1.JSONSchemaProps{"kind": str, "name": str, "namespace": str, "uid": str})
		result := obj(map[string]apiextensionsv1.JSONSchemaProps{
			"policy": str, "rule": str, "result": str, "severity": str, "category": str, "message": str,
			"timestamp": obj(map[string]apiextensionsv1.JSONSchemaProps{"seconds": integer, "nanos": integer}),
			"resources": {Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &resource}},
		})
		props["results"] = apiextensionsv1.JSONSchemaProps{Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &result}}
	}
	schema := obj(props)
	return apiextensionsv1.CustomResourceDefinitionSpec{
		Group: group,
		Names: apiextensionsv1.CustomResourceDefinitionNames{
			Kind: s.Kind, ListKind: s.Kind + "List", Plural: s.Plural, Singular: strings.ToLower(s.Kind),
		},
		Scope: apiextensionsv1.NamespaceScoped,
		Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
			Name: "v1", Served: true, Storage: true,
			Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &schema},
		}},
	}
}

// jsonSize is the size of object 0 of shape s as JSON.
func jsonSize(s shape) int {
	data, err := s.object(hostedGroup+"/v1", "bench", 0).MarshalJSON()
	if err != nil {
		return 0
	}
	return len(data)
}
