package reports_test

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/utils/ptr"
	sigsjson "sigs.k8s.io/json"

	reportsv1 "annex.dev/annex/examples/reports/api/v1"
	reportsv1alpha1 "annex.dev/annex/examples/reports/api/v1alpha1"
	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/install"
	annexv1alpha1 "annex.dev/annex/pkg/apis/annex/v1alpha1"
	annexvalidation "annex.dev/annex/pkg/apis/annex/validation"
)

const manifest = "../../config/samples/policyreports.yaml"

var codecs = func() serializer.CodecFactory {
	scheme := runtime.NewScheme()
	install.Install(scheme)
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict)
}()

// readManifest decodes the sample strictly, so a misspelt or duplicated field
// fails here rather than being dropped by the server.
func readManifest(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func hostedResource(t *testing.T) *annexv1alpha1.HostedResource {
	t.Helper()
	obj, _, err := codecs.UniversalDeserializer().Decode(readManifest(t), nil, nil)
	if err != nil {
		t.Fatalf("decoding %s: %v", manifest, err)
	}
	hr, ok := obj.(*annexv1alpha1.HostedResource)
	if !ok {
		t.Fatalf("%s holds a %T, want a HostedResource", manifest, obj)
	}
	return hr
}

// customResourceDefinition is the CRD that the HostedResource declares, with
// the storage version recorded as stored as the CRD's status would have it.
func customResourceDefinition(hr *annexv1alpha1.HostedResource) *apiextensionsv1.CustomResourceDefinition {
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: hr.Name},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group:                 hr.Spec.Group,
			Names:                 hr.Spec.Names,
			Scope:                 hr.Spec.Scope,
			Versions:              hr.Spec.Versions,
			Conversion:            hr.Spec.Conversion,
			PreserveUnknownFields: hr.Spec.PreserveUnknownFields,
		},
	}
	for _, v := range hr.Spec.Versions {
		if v.Storage {
			crd.Status.StoredVersions = append(crd.Status.StoredVersions, v.Name)
		}
	}
	return crd
}

// structural is the structural schema of one version, as the server builds it.
func structural(t *testing.T, hr *annexv1alpha1.HostedResource, version string) *structuralschema.Structural {
	t.Helper()
	internal := internalSchema(t, hr, version)
	s, err := structuralschema.NewStructural(internal)
	if err != nil {
		t.Fatalf("version %s: %v", version, err)
	}
	return s
}

func internalSchema(t *testing.T, hr *annexv1alpha1.HostedResource, version string) *apiextensions.JSONSchemaProps {
	t.Helper()
	for _, v := range hr.Spec.Versions {
		if v.Name != version {
			continue
		}
		internal := &apiextensions.JSONSchemaProps{}
		if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, internal, nil); err != nil {
			t.Fatal(err)
		}
		return internal
	}
	t.Fatalf("the manifest has no version %s", version)
	return nil
}

func TestManifestDeclaresPolicyReport(t *testing.T) {
	hr := hostedResource(t)
	if hr.Name != "policyreports.reports.example.com" {
		t.Errorf("name = %q", hr.Name)
	}
	want := apiextensionsv1.CustomResourceDefinitionNames{
		Kind: "PolicyReport", ListKind: "PolicyReportList", Plural: "policyreports", Singular: "policyreport",
		ShortNames: []string{"polr"}, Categories: []string{"reports"},
	}
	if hr.Spec.Group != reportsv1.GroupName || hr.Spec.Scope != apiextensionsv1.NamespaceScoped || !apiequality.Semantic.DeepEqual(hr.Spec.Names, want) {
		t.Errorf("group %q, scope %q, names %+v; want %q, Namespaced, %+v", hr.Spec.Group, hr.Spec.Scope, hr.Spec.Names, reportsv1.GroupName, want)
	}
	var versions []string
	for _, v := range hr.Spec.Versions {
		versions = append(versions, v.Name)
		if !v.Served {
			t.Errorf("version %s is not served", v.Name)
		}
		if v.Storage != (v.Name == reportsv1.SchemeGroupVersion.Version) {
			t.Errorf("version %s has storage %v; v1 is the storage version", v.Name, v.Storage)
		}
	}
	if want := []string{reportsv1alpha1.SchemeGroupVersion.Version, reportsv1.SchemeGroupVersion.Version}; !slices.Equal(versions, want) {
		t.Errorf("versions %v, want %v", versions, want)
	}
	if hr.Spec.Storage.Backend != annex.DefaultStorageBackend {
		t.Errorf("storage backend %q, want %q", hr.Spec.Storage.Backend, annex.DefaultStorageBackend)
	}
}

// TestManifestIsAValidCRD runs the kube-apiserver's own CRD validation, which
// also compiles the CEL rules and checks their estimated cost.
func TestManifestIsAValidCRD(t *testing.T) {
	crd := customResourceDefinition(hostedResource(t))
	internal := &apiextensions.CustomResourceDefinition{}
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(crd, internal, nil); err != nil {
		t.Fatal(err)
	}
	for _, err := range apiextensionsvalidation.ValidateCustomResourceDefinition(context.Background(), internal) {
		t.Error(err)
	}
}

// TestManifestPassesAnnexValidation decodes the manifest as annex does
// (defaults, conversion to the internal version) and validates it.
func TestManifestPassesAnnexValidation(t *testing.T) {
	obj, _, err := codecs.UniversalDecoder().Decode(readManifest(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hr, ok := obj.(*annex.HostedResource)
	if !ok {
		t.Fatalf("decoded a %T", obj)
	}
	for _, err := range annexvalidation.ValidateHostedResource(context.Background(), hr) {
		t.Error(err)
	}
}

// TestVersionsAreIdentical guards the "None" conversion: it only rewrites
// apiVersion, which is right only while both versions have the same shape.
func TestVersionsAreIdentical(t *testing.T) {
	hr := hostedResource(t)
	if got := hr.Spec.Conversion; got == nil || got.Strategy != apiextensionsv1.NoneConverter {
		t.Fatalf("conversion %+v, want strategy None", got)
	}
	first := hr.Spec.Versions[0]
	for _, v := range hr.Spec.Versions[1:] {
		if !apiequality.Semantic.DeepEqual(first.Schema, v.Schema) {
			t.Errorf("the schemas of %s and %s differ", first.Name, v.Name)
		}
		if !apiequality.Semantic.DeepEqual(first.Subresources, v.Subresources) ||
			!apiequality.Semantic.DeepEqual(first.AdditionalPrinterColumns, v.AdditionalPrinterColumns) ||
			!apiequality.Semantic.DeepEqual(first.SelectableFields, v.SelectableFields) {
			t.Errorf("the subresources, printer columns or selectable fields of %s and %s differ", first.Name, v.Name)
		}
	}
}

// fullReport sets every field of the Go type, so that a field the schema
// lacks shows up as a pruned path.
func fullReport() *reportsv1.PolicyReport {
	return &reportsv1.PolicyReport{
		TypeMeta:   metav1.TypeMeta{APIVersion: reportsv1.SchemeGroupVersion.String(), Kind: "PolicyReport"},
		ObjectMeta: metav1.ObjectMeta{Name: "deployment-web", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec: reportsv1.PolicyReportSpec{
			Scope:     reportsv1.Scope{Kind: "Deployment", Name: "web"},
			PolicySet: "baseline",
			Replicas:  ptr.To[int32](2),
		},
		Summary: reportsv1.PolicyReportSummary{Pass: 1, Fail: 1, Warn: 1, Error: 1, Skip: 1},
		Results: []reportsv1.PolicyReportResult{{
			Policy:    "disallow-privileged",
			Rule:      "privileged-containers",
			Result:    reportsv1.ResultFail,
			Severity:  reportsv1.SeverityHigh,
			Category:  "Pod Security",
			Message:   "container web is privileged",
			Timestamp: &reportsv1.Timestamp{Seconds: 1700000000, Nanos: 5},
			Resources: []reportsv1.ResourceReference{{APIVersion: "v1", Kind: "Pod", Namespace: "shop", Name: "web-0", UID: "0b7e5c1e-5d2f-4a53-9b1f-6e0c1c2d3e4f"}},
		}},
		Status: reportsv1.PolicyReportStatus{
			Conditions: []metav1.Condition{{
				Type: reportsv1.ConditionCompliant, Status: metav1.ConditionFalse, ObservedGeneration: 3,
				LastTransitionTime: metav1.NewTime(time.Unix(1700000000, 0)), Reason: "PolicyFailures", Message: "failed: disallow-privileged",
			}},
			ObservedGeneration: 3,
			Replicas:           2,
			Selector:           "app=web",
		},
	}
}

// zeroFields lists the fields of v that are unset, so that fullReport cannot
// silently fall behind the Go types.
func zeroFields(v reflect.Value, path string) []string {
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		if v.Interface().(time.Time).IsZero() {
			return []string{path}
		}
		return nil
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			return []string{path}
		}
		return zeroFields(v.Elem(), path)
	case v.Kind() == reflect.Slice:
		if v.Len() == 0 {
			return []string{path}
		}
		var out []string
		for i := range v.Len() {
			out = append(out, zeroFields(v.Index(i), path+"[]")...)
		}
		return out
	case v.Kind() == reflect.Struct:
		var out []string
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() || f.Type == reflect.TypeFor[metav1.TypeMeta]() || f.Type == reflect.TypeFor[metav1.ObjectMeta]() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			out = append(out, zeroFields(v.Field(i), path+"."+name)...)
		}
		return out
	case v.IsZero():
		return []string{path}
	}
	return nil
}

// example builds an object from a structural schema that sets every property
// it declares, with one item in each list, so that a property the Go type
// lacks is lost in a round trip through it.
func example(s *structuralschema.Structural) any {
	switch {
	case s.ValueValidation != nil && len(s.ValueValidation.Enum) > 0:
		return s.ValueValidation.Enum[0].Object
	case s.Type == "object":
		out := map[string]any{}
		for name, prop := range s.Properties {
			out[name] = example(&prop)
		}
		return out
	case s.Type == "array":
		return []any{example(s.Items)}
	case s.Type == "integer":
		return int64(1)
	case s.Type == "boolean":
		return true
	case s.Type == "string" && s.ValueValidation != nil && s.ValueValidation.Format == "date-time":
		return "2024-01-02T03:04:05Z"
	case s.Type == "string":
		return "x"
	}
	return nil
}

func TestGoTypesMatchSchema(t *testing.T) {
	hr := hostedResource(t)
	full := fullReport()
	if zero := zeroFields(reflect.ValueOf(full).Elem(), ""); len(zero) > 0 {
		t.Fatalf("fullReport leaves fields unset: %v", zero)
	}
	fullJSON, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		version string
		newObj  func() any
	}{
		{"v1", func() any { return &reportsv1.PolicyReport{} }},
		{"v1alpha1", func() any { return &reportsv1alpha1.PolicyReport{} }},
	} {
		t.Run(tc.version, func(t *testing.T) {
			s := structural(t, hr, tc.version)

			// Go -> schema: decode the full v1 object into this version's
			// type; whatever it does not hold, or the schema would prune,
			// is a field the two disagree on.
			typed := tc.newObj()
			if strictErrs, err := sigsjson.UnmarshalStrict(fullJSON, typed); err != nil || len(strictErrs) > 0 {
				t.Fatalf("decoding a full v1 object as %s: %v %v", tc.version, err, strictErrs)
			}
			if zero := zeroFields(reflect.ValueOf(typed).Elem(), ""); len(zero) > 0 {
				t.Errorf("the %s type has fields that v1 does not: %v", tc.version, zero)
			}
			obj := toMap(t, typed)
			pruned := pruning.PruneWithOptions(obj, s, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
			if len(pruned) > 0 {
				t.Errorf("the schema prunes these fields of the Go type: %v", pruned)
			}

			// Schema -> Go: every property the schema declares survives a
			// round trip through the Go type, with the same JSON name.
			want := example(s).(map[string]any)
			want["apiVersion"], want["kind"] = reportsv1.GroupName+"/"+tc.version, "PolicyReport"
			want["metadata"] = map[string]any{"name": "x"}
			data, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			typed = tc.newObj()
			if strictErrs, err := sigsjson.UnmarshalStrict(data, typed); err != nil || len(strictErrs) > 0 {
				t.Fatalf("decoding a full object of the schema into the Go type: %v %v", err, strictErrs)
			}
			if got := toMap(t, typed); !apiequality.Semantic.DeepEqual(got, toMap(t, want)) {
				t.Errorf("a round trip through the Go type changes the object:\n got %v\nwant %v", got, want)
			}
		})
	}
}

func toMap(t *testing.T, v any) map[string]any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if md, ok := out["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp") // ObjectMeta writes a null timestamp
	}
	return out
}

// admit defaults obj and validates it against the schema and its CEL rules,
// in the order the server does.
func admit(t *testing.T, s *structuralschema.Structural, internal *apiextensions.JSONSchemaProps, obj map[string]any) field.ErrorList {
	t.Helper()
	defaulting.Default(obj, s)
	validator, _, err := apiservervalidation.NewSchemaValidator(internal)
	if err != nil {
		t.Fatal(err)
	}
	errs := apiservervalidation.ValidateCustomResource(nil, obj, validator)
	celErrs, _ := cel.NewValidator(s, true, celconfig.PerCallLimit).Validate(context.Background(), nil, s, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

func report(summary map[string]any, results ...map[string]any) map[string]any {
	obj := map[string]any{
		"apiVersion": "reports.example.com/v1",
		"kind":       "PolicyReport",
		"metadata":   map[string]any{"name": "r", "namespace": "default"},
		"spec":       map[string]any{"scope": map[string]any{"kind": "Deployment", "name": "web"}},
	}
	if summary != nil {
		obj["summary"] = summary
	}
	if results != nil {
		items := []any{}
		for _, r := range results {
			items = append(items, r)
		}
		obj["results"] = items
	}
	return obj
}

func TestDefaults(t *testing.T) {
	hr := hostedResource(t)
	s := structural(t, hr, "v1")
	obj := report(nil, map[string]any{"policy": "p", "result": "pass"})
	if errs := admit(t, s, internalSchema(t, hr, "v1"), obj); len(errs) > 0 {
		t.Fatalf("a minimal report is refused: %v", errs)
	}
	var got reportsv1.PolicyReport
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.PolicySet != "default" {
		t.Errorf("spec.policySet defaulted to %q, want \"default\"", got.Spec.PolicySet)
	}
	if got.Spec.Replicas == nil || *got.Spec.Replicas != 1 {
		t.Errorf("spec.replicas defaulted to %v, want 1", got.Spec.Replicas)
	}
	if got.Results[0].Severity != reportsv1.SeverityMedium {
		t.Errorf("results[0].severity defaulted to %q, want medium", got.Results[0].Severity)
	}
	summary, ok := obj["summary"].(map[string]any)
	if !ok || len(summary) != 5 || summary["fail"] != int64(0) {
		t.Errorf("summary defaulted to %#v, want all five counts at 0", obj["summary"])
	}
}

func TestValidation(t *testing.T) {
	hr := hostedResource(t)
	for _, version := range []string{"v1", "v1alpha1"} {
		s, internal := structural(t, hr, version), internalSchema(t, hr, version)
		for _, tc := range []struct {
			name string
			obj  map[string]any
			want string // a substring of the errors; empty when the object is valid
		}{
			{name: "no results", obj: report(nil)},
			{name: "counted failure", obj: report(map[string]any{"fail": int64(1)}, map[string]any{"policy": "p", "result": "fail"})},
			{name: "failure counted nowhere is allowed", obj: report(map[string]any{"fail": int64(0)}, map[string]any{"policy": "p", "result": "fail"})},
			{
				name: "fail count without a failed result",
				obj:  report(map[string]any{"pass": int64(1), "fail": int64(1)}, map[string]any{"policy": "p", "result": "pass"}),
				want: "summary.fail: Invalid value: summary.fail counts failed results but no result failed",
			},
			{
				name: "fail count without results",
				obj:  report(map[string]any{"fail": int64(2)}),
				want: "summary.fail counts failed results but no result failed",
			},
			{name: "unknown result", obj: report(nil, map[string]any{"policy": "p", "result": "maybe"}), want: "results[0].result: Unsupported value: \"maybe\""},
			{name: "unknown severity", obj: report(nil, map[string]any{"policy": "p", "result": "pass", "severity": "severe"}), want: "results[0].severity: Unsupported value: \"severe\""},
			{name: "negative count", obj: report(map[string]any{"skip": int64(-1)}), want: "summary.skip: Invalid value: -1"},
			{name: "no scope", obj: func() map[string]any { o := report(nil); o["spec"] = map[string]any{}; return o }(), want: "spec.scope: Required value"},
		} {
			t.Run(version+"/"+tc.name, func(t *testing.T) {
				errs := admit(t, s, internal, tc.obj)
				switch {
				case tc.want == "" && len(errs) > 0:
					t.Errorf("refused: %v", errs)
				case tc.want != "" && !strings.Contains(errs.ToAggregate().Error(), tc.want):
					t.Errorf("errors %v, want one with %q", errs, tc.want)
				}
			})
		}
	}
}
