package routing

import (
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiserver/pkg/features"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"sigs.k8s.io/yaml"
)

// versions are the versions of a type: the stored one, v1 or v2, with
// schema (YAML), and the other with a default in its schema.
func versions(t *testing.T, stored, schema string) []apiextensionsv1.CustomResourceDefinitionVersion {
	t.Helper()
	parse := func(text string) *apiextensionsv1.CustomResourceValidation {
		var s apiextensionsv1.JSONSchemaProps
		if err := yaml.Unmarshal([]byte(text), &s); err != nil {
			t.Fatal(err)
		}
		return &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &s}
	}
	if schema == "" {
		return []apiextensionsv1.CustomResourceDefinitionVersion{{Name: stored, Storage: true}}
	}
	out := []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1"}, {Name: "v2"}}
	for i := range out {
		if out[i].Name == stored {
			out[i].Storage, out[i].Schema = true, parse(schema)
		} else {
			out[i].Schema = parse("type: object\nproperties:\n  spec: {type: object, default: {}}\n")
		}
	}
	return out
}

// The writes of a type may return their object for the stored version
// only, and only when its schema sets no default anywhere.
func TestReusableVersion(t *testing.T) {
	for _, tc := range []struct {
		name, stored, schema, want string
	}{
		{"no default", "v1", "type: object\nproperties:\n  spec:\n    type: object\n    properties:\n      size: {type: integer}\n", "example.com/v1"},
		{"no default, the second version stored", "v2", "type: object\nproperties:\n  spec: {type: object}\n", "example.com/v2"},
		{"a default at the root of a property", "v1", "type: object\nproperties:\n  spec: {type: object, default: {}}\n", ""},
		{"a default in a nested property", "v1", "type: object\nproperties:\n  spec:\n    type: object\n    properties:\n      size: {type: integer, default: 3}\n", ""},
		{"a default in an array's items", "v1", "type: object\nproperties:\n  spec:\n    type: array\n    items:\n      type: object\n      properties:\n        size: {type: integer, default: 3}\n", ""},
		{"a default in a map's values", "v2", "type: object\nproperties:\n  spec:\n    type: object\n    additionalProperties: {type: string, default: x}\n", ""},
		{"a property named default", "v1", "type: object\nproperties:\n  default: {type: string}\n", "example.com/v1"},
		{"no schema", "v1", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := crd("gadgets.example.com", "")
			c.Spec.Group, c.Spec.Versions = "example.com", versions(t, tc.stored, tc.schema)
			if got := reusableVersion(c); got != tc.want {
				t.Errorf("reusableVersion = %q, want %q", got, tc.want)
			}
		})
	}
}

// With CBOR on, a decoding's Go types for JSON numbers show in the answer:
// no write returns its object.
func TestNoReuseWithCBOR(t *testing.T) {
	featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.CBORServingAndStorage, true)
	c := crd("gadgets.example.com", "")
	c.Spec.Group, c.Spec.Versions = "example.com", versions(t, "v1", "type: object\nproperties:\n  spec: {type: object}\n")
	if got := reusableVersion(c); got != "" {
		t.Errorf("reusableVersion = %q with CBOR on, want none", got)
	}
}
