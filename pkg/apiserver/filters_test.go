package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/endpoints/request"

	"annex.dev/annex/pkg/storage/routing"
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
			if tc.wantCode == http.StatusServiceUnavailable {
				if !strings.Contains(rec.Body.String(), `moves from StorageBackend \"a\"`) {
					t.Errorf("the 503 does not carry the reason: %s", rec.Body.String())
				}
				// kubectl fails at once with the reason, rather than
				// retrying.
				if got := rec.Header().Get("Retry-After"); got != "" {
					t.Errorf("the 503 of a moving type has Retry-After %q, want none", got)
				}
				if strings.Contains(rec.Body.String(), "not applied") {
					t.Errorf("the 503 to a list speaks of a write: %s", rec.Body.String())
				}
			}
		})
	}
}

// A write refused by the backend check says that it was not applied, so
// that a client may send it again as it is; while annex starts, client-go
// sends it again by itself (Retry-After).
func TestBackendCheckRefusesAWrite(t *testing.T) {
	check := func(group, resource string, _ bool) error { return fmt.Errorf("annex is %w", routing.ErrStarting) }
	handler := withBackendCheck(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("the write reached the handler")
	}), check, func(user.Info) bool { return false }, Codecs)
	info := resourceInfo("example.com", "widgets")
	info.Verb = "create"
	req := httptest.NewRequest(http.MethodPost, "/apis/example.com/v1/widgets", strings.NewReader("{}"))
	ctx := request.WithRequestInfo(req.Context(), info)
	ctx = request.WithUser(ctx, &user.DefaultInfo{Name: "alice"})
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req.WithContext(ctx))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("status %d, Retry-After %q; want 503 and 1: %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body.String())
	}
	if !strings.Contains(rec.Body.String(), "annex is starting; the write was not applied") {
		t.Errorf("the 503 does not say that the write was not applied: %s", rec.Body.String())
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
