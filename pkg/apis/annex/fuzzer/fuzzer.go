// Package fuzzer holds the fuzzer functions of the annex.dev API group: they
// keep random objects within what the wire format can carry and what
// defaulting leaves alone, so a round trip must return the same object.
package fuzzer

import (
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	runtimeserializer "k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/randfill"

	"annex.dev/annex/pkg/apis/annex"
)

// Funcs returns the fuzzer functions of the annex.dev API group.
var Funcs = func(codecs runtimeserializer.CodecFactory) []interface{} {
	return []interface{}{
		func(s *annex.HostedResourceSpec, c randfill.Continue) {
			c.FillNoCustom(s)
			// Values that defaulting would otherwise fill in on decode.
			if s.Names.Singular == "" {
				s.Names.Singular = "singular"
			}
			if s.Names.ListKind == "" {
				s.Names.ListKind = "KindList"
			}
			if s.Conversion == nil {
				s.Conversion = &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter}
			}
			if w := s.Conversion.Webhook; w != nil && w.ClientConfig != nil && w.ClientConfig.Service != nil && w.ClientConfig.Service.Port == nil {
				port := int32(443)
				w.ClientConfig.Service.Port = &port
			}
			if s.Storage.Backend == "" {
				s.Storage.Backend = annex.DefaultStorageBackend
			}
		},
		// The JSON forms of these types are unions: only one member survives a round trip.
		func(j *apiextensionsv1.JSON, c randfill.Continue) {
			j.Raw = []byte(fmt.Sprintf(`{"value":%d}`, c.Int63()))
		},
		// JSON schemas nest without bound; random ones two levels deep are
		// enough to prove that the embedded CRD types survive the round trip.
		func(p *apiextensionsv1.JSONSchemaProps, c randfill.Continue) {
			*p = leafSchema(c)
			if c.Bool() {
				p.Properties = map[string]apiextensionsv1.JSONSchemaProps{c.String(0) + "p": leafSchema(c)}
			}
			if c.Bool() {
				leaf := leafSchema(c)
				p.Items = &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &leaf}
			}
			if c.Bool() {
				leaf := leafSchema(c)
				p.AdditionalProperties = &apiextensionsv1.JSONSchemaPropsOrBool{Allows: true, Schema: &leaf}
			}
		},
	}
}

// leafSchema returns a schema with random scalar fields and no nested schemas.
func leafSchema(c randfill.Continue) apiextensionsv1.JSONSchemaProps {
	p := apiextensionsv1.JSONSchemaProps{
		Type:        c.String(0),
		Format:      c.String(0),
		Description: c.String(0),
		Pattern:     c.String(0),
		Nullable:    c.Bool(),
	}
	if c.Bool() {
		p.Required = []string{c.String(0) + "r"}
	}
	if c.Bool() {
		p.XValidations = apiextensionsv1.ValidationRules{{Rule: c.String(0) + "r", Message: c.String(0)}}
	}
	return p
}
