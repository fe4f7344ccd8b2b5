package apiserver

import (
	"net/http/httptest"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiserver/pkg/endpoints/request"

	"annex.dev/annex/pkg/storage/lean"
)

// Every get the upstream handler would answer otherwise than with the
// object's latest state in plain JSON goes to it, with the reason counted,
// before the cache is read.
func TestLeanGetsLeaveToUpstream(t *testing.T) {
	crd := func(scope apiextensionsv1.ResourceScope, deprecated bool) *apiextensionsv1.CustomResourceDefinition {
		return gadgetsCRD(func(c *apiextensionsv1.CustomResourceDefinition) {
			c.Spec.Scope = scope
			c.Spec.Versions[0].Deprecated = deprecated
		})
	}
	// No storage: a get that reached the cache would fail the test.
	registered := lean.Registered{UID: "u1", Generation: 3}
	for _, tc := range []struct {
		name, query, accept, namespace, objectName string
		crd                                        *apiextensionsv1.CustomResourceDefinition
		want                                       string
	}{
		{name: "from any resourceVersion", query: "resourceVersion=0", want: leanListOptions},
		{name: "at a resourceVersion", query: "resourceVersion=42", want: leanListOptions},
		{name: "options that do not parse", query: "resourceVersion=1&resourceVersion=2", want: leanListOptions},
		{name: "a table", accept: "application/json;as=Table;v=v1;g=meta.k8s.io, application/json", want: leanListMediaType},
		{name: "metadata only", accept: "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io", want: leanListMediaType},
		{name: "YAML", accept: "application/yaml", want: leanListMediaType},
		{name: "pretty", query: "pretty=true", want: leanListMediaType},
		{name: "a deprecated version", crd: crd(apiextensionsv1.NamespaceScoped, true), want: leanListDeprecated},
		{name: "a namespaced type without a namespace", namespace: "-", want: leanListNotServed},
		{name: "a namespace of a cluster type", crd: crd(apiextensionsv1.ClusterScoped, false), want: leanListNotServed},
		{name: "a name that is no path segment", objectName: "..", want: leanListNotServed},
		{name: "a name with a percent sign", objectName: "g%1", want: leanListNotServed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.crd
			if c == nil {
				c = crd(apiextensionsv1.NamespaceScoped, false)
			}
			req := httptest.NewRequest("GET", "/apis/example.com/v1/namespaces/default/gadgets/g1?"+tc.query, nil)
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			info := &request.RequestInfo{IsResourceRequest: true, Verb: "get", APIGroup: "example.com", APIVersion: "v1",
				Resource: "gadgets", Namespace: "default", Name: "g1"}
			switch tc.namespace {
			case "-":
				info.Namespace = ""
			case "":
			default:
				info.Namespace = tc.namespace
			}
			if tc.objectName != "" {
				info.Name = tc.objectName
			}
			obj, answer := leanGet(req, info, registered, func(string) (*apiextensionsv1.CustomResourceDefinition, error) { return c, nil })
			if obj != nil || answer != tc.want {
				t.Errorf("answer %q (an object: %v), want %q for the upstream handler", answer, obj != nil, tc.want)
			}
		})
	}
}
