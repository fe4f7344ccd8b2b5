package hostedresource

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apihelpers"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apiextensions-apiserver/pkg/crdserverscheme"
	"k8s.io/apiextensions-apiserver/pkg/registry/customresource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured/unstructuredscheme"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/rest"

	"annex.dev/annex/pkg/apis/annex/install"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/registry/fuzzcheck"
)

// hostedSample is the HostedResource whose type FuzzHostedCreate creates
// objects of: PolicyReport, the example of annex's docs, whose schema has
// defaults, enums, formats, bounds, lists, CEL rules and the status and
// scale subresources.
const hostedSample = "../../../config/samples/policyreports.yaml"

// hostedType is the create path of one version of a hosted type, built from
// the type's CRD as the embedded apiextensions server builds it.
type hostedType struct {
	kind       schema.GroupVersionKind
	namespaced bool
	structural *structuralschema.Structural
	decoder    runtime.Decoder
	strategy   rest.RESTCreateStrategy
}

// The apiextensions strategy, which annex serves hosted types with
// unchanged, answers some errors without a field path (a nil *field.Path,
// printed "<nil>"); upstreamErrors accounts for the kinds below so that the
// fuzz target fails on any other.

// celSkipped is added next to the errors that stop the strategy from
// running the schema's CEL rules.
const celSkipped = "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"

// outOfRange is kube-openapi's error for a number that its type and format
// cannot hold (2147483648 for an int32); it names the field in its message
// only.
var outOfRange = regexp.MustCompile(`^(Checked|MultipleOf|Maximum boundary|Minimum boundary) value must be of type \S+ (with format \S+|\(default format\)) in (\S+)$`)

// rootPath stands for the object itself: the errors of the CEL rules of
// the schema's root (a rule that fails without a fieldPath, or one that
// cannot be evaluated, say on data the schema was not checked against)
// are the object's, at a nil path.
const rootPath = "<root>"

// upstreamErrors is the apiextensions strategy with celSkipped dropped, an
// outOfRange error's field read from its message, and the errors of the
// root's rules at rootPath.
type upstreamErrors struct {
	rest.RESTCreateStrategy
	// rootRules are the rules of the schema's root as their errors name
	// them: by message, or by the rule where there is no message.
	rootRules []string
}

func newUpstreamErrors(strategy rest.RESTCreateStrategy, s *structuralschema.Structural) upstreamErrors {
	u := upstreamErrors{RESTCreateStrategy: strategy}
	for _, rule := range s.XValidations {
		name := strings.TrimSpace(rule.Message)
		if name == "" {
			name = strings.TrimSpace(rule.Rule)
		}
		u.rootRules = append(u.rootRules, name)
	}
	return u
}

func (s upstreamErrors) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	errs := s.RESTCreateStrategy.Validate(ctx, obj)
	var out field.ErrorList
	for _, err := range errs {
		if err.Field == "<nil>" {
			switch m := outOfRange.FindStringSubmatch(err.Detail); {
			case err.Detail == celSkipped && len(errs) > 1:
				continue
			case m != nil:
				err = withField(err, m[3])
			case slices.ContainsFunc(s.rootRules, func(rule string) bool { return strings.HasSuffix(err.Detail, rule) }):
				err = withField(err, rootPath)
			}
		}
		out = append(out, err)
	}
	return out
}

func withField(err *field.Error, path string) *field.Error {
	out := *err
	out.Field = path
	return &out
}

// newHostedType builds the create path of the given version of crd.
func newHostedType(t testing.TB, crd *apiextensionsv1.CustomResourceDefinition, version string) *hostedType {
	t.Helper()
	validation, err := apihelpers.GetSchemaForVersion(crd, version)
	if err != nil || validation == nil {
		t.Fatalf("no schema for version %s: %v", version, err)
	}
	internal := &apiextensions.CustomResourceValidation{}
	if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(validation, internal, nil); err != nil {
		t.Fatal(err)
	}
	s, err := structuralschema.NewStructural(internal.OpenAPIV3Schema)
	if err != nil {
		t.Fatal(err)
	}
	s = s.DeepCopy()
	if err := defaulting.PruneDefaults(s); err != nil {
		t.Fatal(err)
	}
	validator, _, err := apiservervalidation.NewSchemaValidator(internal.OpenAPIV3Schema)
	if err != nil {
		t.Fatal(err)
	}

	subresources, err := apihelpers.GetSubresourcesForVersion(crd, version)
	if err != nil {
		t.Fatal(err)
	}
	var status *apiextensions.CustomResourceSubresourceStatus
	var statusValidator apiservervalidation.SchemaValidator
	var scale *apiextensions.CustomResourceSubresourceScale
	if subresources != nil && subresources.Status != nil {
		status = &apiextensions.CustomResourceSubresourceStatus{}
		if statusSchema, ok := internal.OpenAPIV3Schema.Properties["status"]; ok {
			if statusValidator, _, err = apiservervalidation.NewSchemaValidator(&statusSchema); err != nil {
				t.Fatal(err)
			}
		}
	}
	if subresources != nil && subresources.Scale != nil {
		scale = &apiextensions.CustomResourceSubresourceScale{}
		if err := apiextensionsv1.Convert_v1_CustomResourceSubresourceScale_To_apiextensions_CustomResourceSubresourceScale(subresources.Scale, scale, nil); err != nil {
			t.Fatal(err)
		}
	}
	var selectableFields []apiextensionsv1.SelectableField
	for _, v := range crd.Spec.Versions {
		if v.Name == version {
			selectableFields = v.SelectableFields
		}
	}

	kind := schema.GroupVersionKind{Group: crd.Spec.Group, Version: version, Kind: crd.Spec.Names.Kind}
	namespaced := crd.Spec.Scope == apiextensionsv1.NamespaceScoped
	return &hostedType{
		kind:       kind,
		namespaced: namespaced,
		structural: s,
		// Strict, as a request's body is read unless it asks otherwise:
		// unknown and duplicate fields are warnings.
		decoder: kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, unstructuredscheme.NewUnstructuredCreator(),
			crdserverscheme.NewUnstructuredObjectTyper(), kjson.SerializerOptions{Strict: true}),
		strategy: newUpstreamErrors(customresource.NewStrategy(crdserverscheme.NewUnstructuredObjectTyper(), namespaced, kind,
			validator, statusValidator, s, status, scale, selectableFields), s),
	}
}

// decode reads a request's body as the apiextensions server does: JSON
// into an object of the URL's kind, the metadata coerced, unknown fields
// pruned, then the schema's defaults. It returns nil where the server
// refuses the body before validating it (with a 400).
func (h *hostedType) decode(body []byte) *unstructured.Unstructured {
	into := &unstructured.Unstructured{}
	into.SetGroupVersionKind(h.kind)
	obj, gvk, err := h.decoder.Decode(body, &h.kind, into)
	if err != nil && (!runtime.IsStrictDecodingError(err) || obj == nil) {
		return nil
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || gvk == nil || gvk.GroupVersion() != h.kind.GroupVersion() {
		return nil
	}
	if err := h.coerce(u); err != nil {
		return nil
	}
	defaulting.Default(u.Object, h.structural)
	return u
}

// coerce does what the apiextensions server does to a decoded object before
// defaulting it: it reads the metadata as ObjectMeta, prunes the fields the
// schema does not know and the nulls it does not allow, and writes the
// metadata back as ObjectMeta writes it.
func (h *hostedType) coerce(u *unstructured.Unstructured) error {
	kind, foundKind, err := unstructured.NestedString(u.Object, "kind")
	if err != nil {
		return err
	}
	apiVersion, foundAPIVersion, err := unstructured.NestedString(u.Object, "apiVersion")
	if err != nil {
		return err
	}
	objectMeta, foundObjectMeta, _, err := schemaobjectmeta.GetObjectMetaWithOptions(u.Object, schemaobjectmeta.ObjectMetaOptions{ReturnUnknownFieldPaths: true})
	if err != nil {
		return err
	}
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return err
	}
	if gv.Group == h.kind.Group && kind == h.kind.Kind {
		pruning.PruneWithOptions(u.Object, h.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
		defaulting.PruneNonNullableNullsWithoutDefaults(u.Object, h.structural)
		if ferr, _ := schemaobjectmeta.CoerceWithOptions(nil, u.Object, h.structural, false, schemaobjectmeta.CoerceOptions{ReturnUnknownFieldPaths: true}); ferr != nil {
			return ferr
		}
	}
	if foundKind {
		u.SetKind(kind)
	}
	if foundAPIVersion {
		u.SetAPIVersion(apiVersion)
	}
	if foundObjectMeta {
		return schemaobjectmeta.SetObjectMeta(u.Object, objectMeta)
	}
	return nil
}

// check runs body through the create path and fails t unless the answer
// is nil, a 400 (a namespace other than the request's), or a 422 whose
// errors each name a field. Where the create is accepted, defaulting again
// must change nothing, and the stored object must read back as it was
// written.
func (h *hostedType) check(t *testing.T, body []byte) {
	u := h.decode(body)
	if u == nil {
		return
	}
	if !fuzzcheck.Create(t, fuzzcheck.Context(h.namespaced), h.strategy, u, http.StatusBadRequest) {
		return
	}
	written := encode(t, u)

	again := u.DeepCopy()
	defaulting.Default(again.Object, h.structural)
	if got := encode(t, again); !bytes.Equal(got, written) {
		t.Errorf("defaulting twice is not defaulting once:\n once %s\ntwice %s", written, got)
	}

	read := h.decode(written)
	if read == nil {
		t.Fatalf("a stored object does not decode: %s", written)
	}
	if got := encode(t, read); !bytes.Equal(got, written) {
		t.Errorf("a stored object reads back changed:\nwritten %s\n   read %s", written, got)
	}
}

func encode(t *testing.T, u *unstructured.Unstructured) []byte {
	t.Helper()
	data, err := json.Marshal(u.Object)
	if err != nil {
		t.Fatalf("encoding an accepted object: %v", err)
	}
	return data
}

// sampleCRD is the CRD that annex makes of the sample HostedResource.
func sampleCRD(t testing.TB) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	data, err := os.ReadFile(hostedSample)
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	install.Install(scheme)
	obj, _, err := serializer.NewCodecFactory(scheme).UniversalDeserializer().Decode(data, nil, nil)
	if err != nil {
		t.Fatalf("decoding %s: %v", hostedSample, err)
	}
	hr, ok := obj.(*v1alpha1.HostedResource)
	if !ok {
		t.Fatalf("%s holds a %T", hostedSample, obj)
	}
	scheme.Default(hr)
	return desiredCRD(hr)
}

// storageVersion is the name of crd's storage version.
func storageVersion(crd *apiextensionsv1.CustomResourceDefinition) string {
	for _, v := range crd.Spec.Versions {
		if v.Storage {
			return v.Name
		}
	}
	panic(fmt.Sprintf("%s has no storage version", crd.Name))
}

// FuzzHostedCreate sends random bodies to the create path of a hosted type,
// the sample PolicyReport's storage version: decoding, pruning, defaulting
// and the apiextensions strategy's validation (schema, metadata, list
// types, CEL rules, scale subresource), in process.
func FuzzHostedCreate(f *testing.F) {
	crd := sampleCRD(f)
	h := newHostedType(f, crd, storageVersion(crd))
	f.Fuzz(h.check)
}
