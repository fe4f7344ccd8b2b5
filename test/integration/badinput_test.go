//go:build integration

package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"annex.dev/annex/test/integration/framework"
)

const storageBackendsPath = "/apis/" + framework.Group + "/" + framework.Version + "/storagebackends"

// maxRequestBodyBytes is the generic API server's limit on a request body.
const maxRequestBodyBytes = 3 << 20

// TestBadInput checks that each kind of bad request gets its proper status
// and stores nothing.
func TestBadInput(t *testing.T) {
	jsonHeader := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}}

	t.Run("malformed JSON is 400", func(t *testing.T) {
		name := uniqueName("malformed")
		body := `{"apiVersion":"annex.dev/v1alpha1","kind":"StorageBackend","metadata":{"name":"` + name + `"},"spec":{"type":"Embedded"`
		resp := doRaw(t, http.MethodPost, storageBackendsPath, jsonHeader, []byte(body))
		expectStatus(t, resp, http.StatusBadRequest)
		expectAbsent(t, framework.StorageBackends, name)
	})

	t.Run("an invalid spec is 422 naming each bad field", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			obj    *unstructured.Unstructured
			fields []string
		}{{
			name: "wrong members and a name that is not a DNS label",
			obj: func() *unstructured.Unstructured {
				// type Etcd requires spec.etcd and forbids spec.postgres.
				obj := storageBackend(uniqueName("invalid")+".dotted", "Postgres", nil)
				_ = unstructured.SetNestedField(obj.Object, "Etcd", "spec", "type")
				return obj
			}(),
			fields: []string{"metadata.name", "spec.etcd", "spec.postgres"},
		}, {
			name: "a plaintext etcd endpoint without insecure: true",
			obj: func() *unstructured.Unstructured {
				obj := storageBackend(uniqueName("plaintext"), "Etcd", nil)
				_ = unstructured.SetNestedStringSlice(obj.Object, []string{"https://127.0.0.1:2379", "http://127.0.0.1:2379"}, "spec", "etcd", "endpoints")
				return obj
			}(),
			fields: []string{"spec.etcd.endpoints[1]"},
		}, {
			name:   "an unsupported type",
			obj:    storageBackend(uniqueName("invalid"), "Mysql", nil),
			fields: []string{"spec.type"},
		}, {
			name: "no type",
			obj: func() *unstructured.Unstructured {
				obj := storageBackend(uniqueName("invalid"), "Embedded", nil)
				unstructured.RemoveNestedField(obj.Object, "spec", "type")
				return obj
			}(),
			fields: []string{"spec.type"},
		}} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := storageBackends(t).Create(testContext(t), tc.obj, metav1.CreateOptions{})
				if err == nil {
					deleteIfExists(t, framework.StorageBackends, tc.obj.GetName())
					t.Fatalf("creating %v succeeded, want 422", tc.obj.Object["spec"])
				}
				if !apierrors.IsInvalid(err) {
					t.Fatalf("want 422 Invalid, got %d: %v", statusCode(err), err)
				}
				expectCauses(t, causeFields(err), tc.fields...)
				expectAbsent(t, framework.StorageBackends, tc.obj.GetName())
			})
		}
	})

	t.Run("a body over 3 MiB is 413", func(t *testing.T) {
		name := uniqueName("huge")
		obj := storageBackend(name, "Embedded", nil)
		obj.SetAnnotations(map[string]string{"example.com/padding": strings.Repeat("x", maxRequestBodyBytes)})
		body, err := json.Marshal(obj.Object)
		if err != nil {
			t.Fatal(err)
		}
		resp := doRaw(t, http.MethodPost, storageBackendsPath, jsonHeader, body)
		expectStatus(t, resp, http.StatusRequestEntityTooLarge)
		expectAbsent(t, framework.StorageBackends, name)
	})

	t.Run("an unknown field with strict field validation is 400", func(t *testing.T) {
		name := uniqueName("strict")
		obj := storageBackend(name, "Embedded", nil)
		_ = unstructured.SetNestedField(obj.Object, "surprise", "spec", "bogusField")
		_, err := storageBackends(t).Create(testContext(t), obj, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
		if err == nil {
			deleteIfExists(t, framework.StorageBackends, name)
			t.Fatalf("creating with an unknown field under fieldValidation=Strict succeeded, want 400")
		}
		if !apierrors.IsBadRequest(err) {
			t.Fatalf("want 400 BadRequest, got %d: %v", statusCode(err), err)
		}
		if !strings.Contains(err.Error(), "bogusField") {
			t.Errorf("the 400 does not name the unknown field spec.bogusField: %v", err)
		}
		expectAbsent(t, framework.StorageBackends, name)
	})
}

// expectStatus fails unless resp has code and its body is a Status saying so.
func expectStatus(t *testing.T, resp rawResponse, code int) {
	t.Helper()
	if resp.Code != code {
		t.Fatalf("got HTTP %d, want %d; body: %.500s", resp.Code, code, resp.Body)
	}
	var status metav1.Status
	if err := json.Unmarshal(resp.Body, &status); err != nil || status.Kind != "Status" || int(status.Code) != code {
		t.Errorf("the %d response body is not a Status with code %d: %.500s", code, code, resp.Body)
	}
}
