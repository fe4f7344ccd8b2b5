//go:build integration

package standalone

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"annex.dev/annex/test/integration/framework"
)

// response is what annex answered to a request.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// do sends body to path as the admin, with contentType.
func (a *annex) do(ctx context.Context, method, path, contentType string, body []byte) response {
	a.t.Helper()
	cfg := a.restConfig()
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		a.t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, method, cfg.Host+path, bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: out}
}

// status is the answer's Status, or fails the test if it is not one.
func (r response) status(t *testing.T) metav1.Status {
	t.Helper()
	var s metav1.Status
	if err := json.Unmarshal(r.body, &s); err != nil || s.Kind != "Status" {
		t.Fatalf("the %d answer is not a Status: %.300s", r.code, r.body)
	}
	return s
}

// gadget is a gadget's JSON with its name, and spec written as given.
func gadget(name, spec string) []byte {
	return []byte(`{"apiVersion":"example.com/v1","kind":"Gadget","metadata":{"name":"` + name + `"},"spec":` + spec + `}`)
}

// TestBadInputToHostedTypes sends what a careless or hostile client might
// to a hosted type and to HostedResources: each is refused with a 4xx
// that says why (with the field's path where there is one), nothing of it
// is stored, and annex keeps serving. Where the kube-apiserver accepts an
// input (duplicate keys without strict validation, many labels), annex
// accepts it the same way.
func TestBadInputToHostedTypes(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port)
	a.kubectl("apply", "-f", write(t, dir, "gadgets.yaml", hostedType("gadgets", "Gadget", "default")))
	a.kubectl("wait", "--for=condition=Established", "--timeout=60s", "hostedresource/gadgets.example.com")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const gadgets = "/apis/example.com/v1/gadgets"
	const hostedResources = "/apis/annex.dev/v1alpha1/hostedresources"

	deep := strings.Repeat(`{"a":`, 20000) + `1` + strings.Repeat(`}`, 20000)
	bomb := "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: bomb}\nspec:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	for i, prev := 'b', 'a'; i <= 'j'; i, prev = i+1, i {
		bomb += fmt.Sprintf("  %c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n", i, i, prev, prev, prev, prev, prev, prev, prev, prev, prev, prev)
	}
	costly := strings.Replace(hostedType("costly", "Costly", "default"), "            - rule: self.size <= 10\n",
		"            - rule: self.words.all(x, self.words.all(y, self.words.all(z, x + y + z != '')))\n", 1)
	costly = strings.Replace(costly, "              size: {type: integer",
		"              words: {type: array, items: {type: string}}\n              size: {type: integer", 1)
	costlyJSON, err := yaml.YAMLToJSON([]byte(costly))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name        string
		path        string
		contentType string
		body        []byte
		code        int
		// field is the path a 422 names; reason is a word of the message.
		field, reason string
		// stored is the name that must not exist afterwards.
		stored string
	}{
		{name: "a body over 3 MiB", path: gadgets, contentType: "application/json",
			body: gadget("huge", `{"size":1,"pad":"`+strings.Repeat("x", 3<<20)+`"}`), code: http.StatusRequestEntityTooLarge, stored: "huge"},
		{name: "20,000 levels of nesting", path: gadgets, contentType: "application/json",
			body: gadget("deep", deep), code: http.StatusBadRequest, reason: "depth", stored: "deep"},
		{name: "invalid UTF-8 in the name", path: gadgets, contentType: "application/json",
			body: gadget("bad\xff\xfe", `{"size":1}`), code: http.StatusUnprocessableEntity, field: "metadata.name", stored: "bad"},
		{name: "a 1 MiB name", path: gadgets, contentType: "application/json",
			body: gadget(strings.Repeat("n", 1<<20), `{"size":1}`), code: http.StatusUnprocessableEntity, field: "metadata.name"},
		{name: "duplicate keys with strict field validation", path: gadgets + "?fieldValidation=Strict", contentType: "application/json",
			body: gadget("twice", `{"size":1,"size":2}`), code: http.StatusBadRequest, reason: "duplicate field", stored: "twice"},
		{name: "a YAML bomb", path: gadgets, contentType: "application/yaml",
			body: []byte(bomb), code: http.StatusBadRequest, stored: "bomb"},
		{name: "a content type annex does not read", path: gadgets, contentType: "text/plain",
			body: gadget("plain", `{"size":1}`), code: http.StatusUnsupportedMediaType, stored: "plain"},
		{name: "protobuf, which custom resources do not speak", path: gadgets, contentType: "application/vnd.kubernetes.protobuf",
			body: gadget("proto", `{"size":1}`), code: http.StatusUnsupportedMediaType, stored: "proto"},
		{name: "a schema's rule over the cost limit", path: hostedResources, contentType: "application/json",
			body: costlyJSON, code: http.StatusUnprocessableEntity, reason: "cost", field: "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := a.do(ctx, http.MethodPost, tc.path, tc.contentType, tc.body)
			if resp.code != tc.code {
				t.Fatalf("got %d, want %d: %.500s", resp.code, tc.code, resp.body)
			}
			s := resp.status(t)
			if int(s.Code) != tc.code {
				t.Errorf("the Status says %d, want %d", s.Code, tc.code)
			}
			if tc.reason != "" && !strings.Contains(strings.ToLower(s.Message), tc.reason) {
				t.Errorf("the message does not say %q: %s", tc.reason, s.Message)
			}
			if tc.field != "" {
				var fields []string
				if s.Details != nil {
					for _, c := range s.Details.Causes {
						fields = append(fields, c.Field)
					}
				}
				if !slices.Contains(fields, tc.field) {
					t.Errorf("the 422 names fields %q, want %s: %s", fields, tc.field, s.Message)
				}
			}
		})
	}

	// Duplicate keys without strict validation: accepted with a warning,
	// the last value kept, as the kube-apiserver does.
	resp := a.do(ctx, http.MethodPost, gadgets, "application/json", gadget("twice", `{"size":1,"size":2}`))
	if resp.code != http.StatusCreated || !strings.Contains(resp.header.Get("Warning"), "duplicate field") ||
		!bytes.Contains(resp.body, []byte(`"size":2`)) {
		t.Errorf("duplicate keys without strict validation: %d, warning %q: %.300s", resp.code, resp.header.Get("Warning"), resp.body)
	}
	// 10,000 labels: no limit of the kube-apiserver's refuses them, and
	// annex stores and serves them whole.
	labels := map[string]string{}
	for i := range 10000 {
		labels[fmt.Sprintf("example.com/l%05d", i)] = "v"
	}
	labelled, err := json.Marshal(map[string]any{"apiVersion": "example.com/v1", "kind": "Gadget",
		"metadata": map[string]any{"name": "labelled", "labels": labels}, "spec": map[string]any{"size": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if resp := a.do(ctx, http.MethodPost, gadgets, "application/json", labelled); resp.code != http.StatusCreated {
		t.Errorf("10,000 labels: got %d: %.300s", resp.code, resp.body)
	}
	if n := a.kubectl("get", "gadget", "labelled", "-o", "go-template={{len .metadata.labels}}"); n != "10000" {
		t.Errorf("the gadget with 10,000 labels came back with %s", n)
	}

	// Annex still serves, and holds only what it accepted.
	if code, body := a.get(ctx, "/readyz"); code != http.StatusOK {
		t.Fatalf("annex is not ready after the bad input: %d %s", code, body)
	}
	if names := a.kubectl("get", "gadgets", "-o", "jsonpath={.items[*].metadata.name}"); names != "labelled twice" {
		t.Errorf("annex holds the gadgets %q, want only those it accepted (labelled twice)", names)
	}
	if out, err := a.kubectlErr("get", "hostedresource", "costly.example.com"); err == nil {
		t.Errorf("the HostedResource with a rule over the cost limit exists:\n%s", out)
	}
}
