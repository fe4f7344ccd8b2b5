//go:build integration

package framework

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// StartWebhookServer serves h over TLS on 127.0.0.1, with a serving
// certificate of a CA of its own, until the test ends. It returns the
// server's URL (https://127.0.0.1:port) and the CA's bundle, for a
// webhook's clientConfig.
func StartWebhookServer(t *testing.T, h http.Handler) (url string, caBundle []byte) {
	t.Helper()
	serving, err := WriteServingCertificate(t.TempDir(), "webhook", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(serving.CertFile, serving.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	server := httptest.NewUnstartedServer(h)
	server.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	server.StartTLS()
	t.Cleanup(server.Close)
	return server.URL, serving.CAPEM
}

// FieldConverter is a conversion webhook for a type whose versions call
// one field of spec by different names: Fields maps each apiVersion to
// its name of the field. It counts the reviews it answers.
type FieldConverter struct {
	Fields map[string]string
	calls  atomic.Int64
}

// Calls is how many ConversionReviews the converter answered.
func (c *FieldConverter) Calls() int64 { return c.calls.Load() }

func (c *FieldConverter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.calls.Add(1)
	var review apiextensionsv1.ConversionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("not a ConversionReview: %v", err), http.StatusBadRequest)
		return
	}
	response := &apiextensionsv1.ConversionResponse{UID: review.Request.UID, Result: metav1.Status{Status: metav1.StatusSuccess}}
	to, ok := c.Fields[review.Request.DesiredAPIVersion]
	if !ok {
		response.Result = metav1.Status{Status: metav1.StatusFailure, Message: "the converter does not know " + review.Request.DesiredAPIVersion}
	}
	for _, raw := range review.Request.Objects {
		if !ok {
			break
		}
		obj := &unstructured.Unstructured{}
		if err := json.Unmarshal(raw.Raw, &obj.Object); err != nil {
			response.Result = metav1.Status{Status: metav1.StatusFailure, Message: err.Error()}
			break
		}
		from, known := c.Fields[obj.GetAPIVersion()]
		if !known {
			response.Result = metav1.Status{Status: metav1.StatusFailure, Message: "the converter does not know " + obj.GetAPIVersion()}
			break
		}
		if value, found, _ := unstructured.NestedFieldCopy(obj.Object, "spec", from); found && from != to {
			unstructured.RemoveNestedField(obj.Object, "spec", from)
			_ = unstructured.SetNestedField(obj.Object, value, "spec", to)
		}
		obj.SetAPIVersion(review.Request.DesiredAPIVersion)
		converted, err := json.Marshal(obj.Object)
		if err != nil {
			response.Result = metav1.Status{Status: metav1.StatusFailure, Message: err.Error()}
			break
		}
		response.ConvertedObjects = append(response.ConvertedObjects, runtime.RawExtension{Raw: converted})
	}
	if response.Result.Status != metav1.StatusSuccess {
		response.ConvertedObjects = nil
	}
	review.Request, review.Response = nil, response
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
}
