package apiserver

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/endpoints/request"
)

func TestWithBackendCheck(t *testing.T) {
	loopback := &user.DefaultInfo{Name: user.APIServerUser, UID: "process-uid"}
	isAnnex := func(u user.Info) bool { return u.GetName() == loopback.Name && u.GetUID() == loopback.UID }
	// The type moves: only annex's own requests may read it.
	check := func(group, resource string, fromAnnex bool) error {
		if group == "example.com" && resource == "widgets" && !fromAnnex {
			return errors.New(`HostedResource widgets.example.com moves from StorageBackend "a" to "b"`)
		}
		return nil
	}
	served := false
	handler := withBackendCheck(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		served = true
		w.WriteHeader(http.StatusOK)
	}), check, isAnnex, Codecs)

	for _, tc := range []struct {
		name     string
		info     *request.RequestInfo
		user     user.Info
		wantCode int
	}{
		{"a user's request for the moving type", resourceInfo("example.com", "widgets"), &user.DefaultInfo{Name: "alice"}, http.StatusServiceUnavailable},
		{"annex's own request", resourceInfo("example.com", "widgets"), loopback, http.StatusOK},
		{"a user named like annex's loopback, without its UID", resourceInfo("example.com", "widgets"), &user.DefaultInfo{Name: user.APIServerUser}, http.StatusServiceUnavailable},
		{"another hosted type", resourceInfo("example.com", "gadgets"), &user.DefaultInfo{Name: "alice"}, http.StatusOK},
		{"annex.dev", resourceInfo("annex.dev", "hostedresources"), &user.DefaultInfo{Name: "alice"}, http.StatusOK},
		{"a non-resource path", &request.RequestInfo{Path: "/readyz"}, &user.DefaultInfo{Name: "alice"}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			served = false
			req := httptest.NewRequest(http.MethodGet, "/apis/"+tc.info.APIGroup+"/v1/"+tc.info.Resource, nil)
			ctx := request.WithRequestInfo(req.Context(), tc.info)
			ctx = request.WithUser(ctx, tc.user)
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req.WithContext(ctx))
			if rec.Code != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantCode, rec.Body.String())
			}
			if served != (tc.wantCode == http.StatusOK) {
				t.Errorf("the request reached the handler: %v", served)
			}
			if tc.wantCode == http.StatusServiceUnavailable && !strings.Contains(rec.Body.String(), `moves from StorageBackend \"a\"`) {
				t.Errorf("the 503 does not carry the reason: %s", rec.Body.String())
			}
		})
	}
}

func resourceInfo(group, resource string) *request.RequestInfo {
	return &request.RequestInfo{IsResourceRequest: true, APIGroup: group, APIVersion: "v1", Resource: resource, Verb: "list"}
}

// A hosted object written in protobuf, which the apiextensions server
// cannot decode, gets a 415 that names the media types it can; everything
// else goes on.
func TestWithHostedMediaTypes(t *testing.T) {
	served := false
	handler := withHostedMediaTypes(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		served = true
		w.WriteHeader(http.StatusOK)
	}), Codecs)
	write := func(group, resource, subresource, verb string) *request.RequestInfo {
		info := resourceInfo(group, resource)
		info.Subresource, info.Verb = subresource, verb
		return info
	}
	for _, tc := range []struct {
		name        string
		info        *request.RequestInfo
		contentType string
		wantCode    int
	}{
		{"a create in protobuf", write("example.com", "widgets", "", "create"), "application/vnd.kubernetes.protobuf", http.StatusUnsupportedMediaType},
		{"an update in protobuf", write("example.com", "widgets", "", "update"), "application/vnd.kubernetes.protobuf", http.StatusUnsupportedMediaType},
		{"a status update in protobuf", write("example.com", "widgets", "status", "update"), "application/vnd.kubernetes.protobuf; charset=binary", http.StatusUnsupportedMediaType},
		{"a create in JSON", write("example.com", "widgets", "", "create"), "application/json", http.StatusOK},
		{"a create in YAML", write("example.com", "widgets", "", "create"), "application/yaml", http.StatusOK},
		{"a scale update in protobuf", write("example.com", "widgets", "scale", "update"), "application/vnd.kubernetes.protobuf", http.StatusOK},
		{"a delete with protobuf options", write("example.com", "widgets", "", "delete"), "application/vnd.kubernetes.protobuf", http.StatusOK},
		{"annex.dev in protobuf", write("annex.dev", "hostedresources", "", "create"), "application/vnd.kubernetes.protobuf", http.StatusOK},
		{"a namespace in protobuf", write("", "namespaces", "", "create"), "application/vnd.kubernetes.protobuf", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			served = false
			req := httptest.NewRequest(http.MethodPost, "/apis/"+tc.info.APIGroup+"/v1/"+tc.info.Resource, strings.NewReader("x"))
			req.Header.Set("Content-Type", tc.contentType)
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req.WithContext(request.WithRequestInfo(req.Context(), tc.info)))
			if rec.Code != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantCode, rec.Body.String())
			}
			if served != (tc.wantCode == http.StatusOK) {
				t.Errorf("the request reached the handler: %v", served)
			}
			if tc.wantCode == http.StatusUnsupportedMediaType && !strings.Contains(rec.Body.String(), "application/json") {
				t.Errorf("the 415 does not say what annex reads: %s", rec.Body.String())
			}
		})
	}
}
