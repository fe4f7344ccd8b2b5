package apiserver

import (
	"context"
	"net/http/httptest"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	"k8s.io/apiserver/pkg/audit"
	"k8s.io/apiserver/pkg/endpoints/request"

	"annex.dev/annex/pkg/storage/lean"
)

// Every list the upstream handler would answer otherwise than in plain
// JSON, or not at all, goes to it, and the reason is counted.
// gadgetsCRD is the definition of the lean type of the filters' tests, at
// generation 3 with UID u1, changed by change when not nil.
func gadgetsCRD(change func(*apiextensionsv1.CustomResourceDefinition)) *apiextensionsv1.CustomResourceDefinition {
	c := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "gadgets.example.com", UID: "u1", Generation: 3},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "example.com", Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true}},
		},
		Status: apiextensionsv1.CustomResourceDefinitionStatus{Conditions: []apiextensionsv1.CustomResourceDefinitionCondition{
			{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue},
			{Type: apiextensionsv1.NamesAccepted, Status: apiextensionsv1.ConditionTrue},
		}},
	}
	if change != nil {
		change(c)
	}
	return c
}

func TestLeanListsLeaveToUpstream(t *testing.T) {
	crd := gadgetsCRD
	registered := lean.Registered{UID: "u1", Generation: 3,
		ListKind: schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "GadgetList"}}
	for _, tc := range []struct {
		name, query, accept, userAgent, namespace string
		crd                                       *apiextensionsv1.CustomResourceDefinition
		audit                                     auditinternal.Level
		want                                      string
	}{
		{name: "another generation of the type", crd: crd(func(c *apiextensionsv1.CustomResourceDefinition) { c.Generation = 4 }), want: leanListOutdated},
		{name: "a type deleted and made again", crd: crd(func(c *apiextensionsv1.CustomResourceDefinition) { c.UID = "u2" }), want: leanListOutdated},
		{name: "a version no longer served", crd: crd(func(c *apiextensionsv1.CustomResourceDefinition) { c.Spec.Versions[0].Served = false }), want: leanListNotServed},
		{name: "a type not established", crd: crd(func(c *apiextensionsv1.CustomResourceDefinition) { c.Status.Conditions = nil }), want: leanListNotServed},
		{name: "a namespace of a cluster type", namespace: "team-a",
			crd: crd(func(c *apiextensionsv1.CustomResourceDefinition) { c.Spec.Scope = apiextensionsv1.ClusterScoped }), want: leanListNotServed},
		{name: "a deprecated version", crd: crd(func(c *apiextensionsv1.CustomResourceDefinition) { c.Spec.Versions[0].Deprecated = true }), want: leanListDeprecated},
		{name: "a table", accept: "application/json;as=Table;v=v1;g=meta.k8s.io, application/json", want: leanListMediaType},
		{name: "metadata only, an older version", accept: "application/json;as=PartialObjectMetadataList;v=v1beta1;g=meta.k8s.io", want: leanListMediaType},
		{name: "metadata only, in YAML", accept: "application/yaml;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", want: leanListMediaType},
		{name: "metadata only, a field selector", accept: "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
			query: "fieldSelector=metadata.name%3Dg1", want: leanListOptions},
		{name: "YAML", accept: "application/yaml", want: leanListMediaType},
		{name: "protobuf first", accept: "application/vnd.kubernetes.protobuf, application/json", want: leanListMediaType},
		{name: "an Accept header that does not parse", accept: "application/json;;", want: leanListMediaType},
		{name: "pretty", query: "pretty=1", want: leanListMediaType},
		{name: "curl", userAgent: "curl/8.5.0", want: leanListMediaType},
		{name: "a field selector", query: "fieldSelector=metadata.name%3Dg1", want: leanListOptions},
		{name: "a label selector that does not parse", query: "labelSelector=a%3D%3D%3Db", want: leanListOptions},
		{name: "initial events for a list", query: "sendInitialEvents=true", want: leanListOptions},
		{name: "a resourceVersionMatch without a resourceVersion", query: "resourceVersionMatch=Exact", want: leanListOptions},
		{name: "an audit of response bodies", audit: auditinternal.LevelRequestResponse, want: leanListAudit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.crd
			if c == nil {
				c = crd(nil)
			}
			req := httptest.NewRequest("GET", "/apis/example.com/v1/gadgets?"+tc.query, nil)
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			req.Header.Set("User-Agent", tc.userAgent)
			ctx := context.Background()
			if tc.audit != "" {
				ctx = audit.WithAuditContext(ctx)
				audit.AuditContextFrom(ctx).Init(audit.RequestAuditConfig{Level: tc.audit}, nil)
			}
			req = req.WithContext(ctx)
			info := &request.RequestInfo{IsResourceRequest: true, Verb: "list", APIGroup: "example.com", APIVersion: "v1",
				Resource: "gadgets", Namespace: tc.namespace}
			list, answer := leanList(req, info, registered, func(string) (*apiextensionsv1.CustomResourceDefinition, error) { return c, nil })
			if list != nil || answer != tc.want {
				t.Errorf("answer %q (a list: %v), want %q for the upstream handler", answer, list != nil, tc.want)
			}
		})
	}
}

// Plain JSON is what a client without preference, client-go's JSON
// clients and kubectl's raw requests ask for.
func TestPlainJSON(t *testing.T) {
	for _, accept := range []string{"", "application/json", "*/*", "application/json, */*", "application/json,*/*"} {
		req := httptest.NewRequest("GET", "/apis/example.com/v1/gadgets", nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		req.Header.Set("User-Agent", "annex-test/v0")
		if !plainJSON(req) {
			t.Errorf("Accept %q is not taken for plain JSON", accept)
		}
	}
	req := httptest.NewRequest("GET", "/apis/example.com/v1/gadgets?pretty=false", nil)
	req.Header.Set("User-Agent", "curl/8.5.0")
	if !plainJSON(req) {
		t.Error("curl asking for pretty=false is not taken for plain JSON, as the upstream handler takes it")
	}
}

// The lists asked for as metadata only that are answered from the lean
// cache: a PartialObjectMetadataList of meta.k8s.io/v1 in JSON or protobuf,
// where the upstream handler's choice of media type falls on one.
func TestMetadataList(t *testing.T) {
	for _, tc := range []struct {
		accept string
		want   bool
	}{
		{"application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", true},
		{"application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1", true},
		// client-go's metadata client.
		{"application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1," +
			"application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json", true},
		{"", false},
		{"application/json", false},
		{"application/json;as=PartialObjectMetadataList;v=v1beta1;g=meta.k8s.io", false},
		{"application/yaml;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", false},
		{"application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io", false},
		{"application/json;as=Table;v=v1;g=meta.k8s.io", false},
		{"application/json;as=PartialObjectMetadataList;v=v1;g=example.com", false},
	} {
		req := httptest.NewRequest("GET", "/apis/example.com/v1/gadgets", nil)
		if tc.accept != "" {
			req.Header.Set("Accept", tc.accept)
		}
		if got := metadataList(req); got != tc.want {
			t.Errorf("Accept %q: answered as metadata from the lean cache %v, want %v", tc.accept, got, tc.want)
		}
	}
}
