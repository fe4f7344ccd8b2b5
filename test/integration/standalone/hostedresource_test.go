//go:build integration

package standalone

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"annex.dev/annex/test/integration/framework"
)

var gadgets = hostedResource("gadgets", "{kind: Gadget, plural: gadgets, shortNames: [gd]}", "Cluster", "",
	hostedVersion("v1", true, sizeColumn, `type: object
properties:
  spec:
    type: object
    x-kubernetes-validations:
    - rule: self.size <= 10
      message: size must be at most 10
    properties:
      size: {type: integer, default: 3, description: How big the gadget is.}
`))

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestHostedResourceLifecycle declares a type with a HostedResource, uses it
// as a CRD user would, and deletes it with its objects.
func TestHostedResourceLifecycle(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port)

	a.declare(write(t, dir, "gadgets.yaml", gadgets), 30*time.Second, "gadgets.example.com")
	if out := a.kubectl("get", "hr", "gadgets.example.com", "-o", "jsonpath={.status.conditions[?(@.type=='NamesAccepted')].status}"); out != "True" {
		t.Errorf("NamesAccepted = %q, want True", out)
	}

	a.kubectl("apply", "-f", write(t, dir, "g1.yaml", "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {}\n"))
	if out := a.kubectl("get", "gd", "g1", "-o", "jsonpath={.spec.size}"); out != "3" {
		t.Errorf("the schema's default was not applied: spec.size = %q, want 3", out)
	}
	if out := a.kubectl("get", "gadgets"); !strings.Contains(out, "SIZE") || !strings.Contains(out, "g1") {
		t.Errorf("kubectl get gadgets does not print the SIZE column:\n%s", out)
	}
	if out := a.kubectl("explain", "gadget.spec.size"); !strings.Contains(out, "How big the gadget is.") {
		t.Errorf("kubectl explain gadget.spec.size:\n%s", out)
	}
	out, err := a.kubectlErr("apply", "-f", write(t, dir, "g2.yaml", "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g2}\nspec: {size: 11}\n"))
	if err == nil || !strings.Contains(out, "size must be at most 10") {
		t.Errorf("a gadget breaking the CEL rule was not rejected with its message: %v\n%s", err, out)
	}

	t.Run("a HostedResource whose names collide is not accepted and serves nothing", func(t *testing.T) {
		clash := strings.NewReplacer("gadgets.example.com", "gizmos.example.com", "plural: gadgets", "plural: gizmos", "shortNames: [gd]", "shortNames: [gz]").Replace(gadgets)
		a.kubectl("apply", "-f", write(t, dir, "gizmos.yaml", clash))
		a.kubectl("wait", "--for=condition=NamesAccepted=False", "--timeout=30s", "hostedresource/gizmos.example.com")
		if out := a.kubectl("get", "hr", "gizmos.example.com", "-o", "jsonpath={.status.conditions[?(@.type=='NamesAccepted')].message}"); !strings.Contains(out, "Gadget") {
			t.Errorf("NamesAccepted message does not name the clashing kind: %q", out)
		}
		if out, err := a.kubectlErr("get", "gizmos"); err == nil {
			t.Errorf("gizmos are served although their names were not accepted:\n%s", out)
		}
		if out := a.kubectl("get", "gadgets", "-o", "name"); !strings.Contains(out, "gadget.example.com/g1") {
			t.Errorf("the first type stopped serving: %q", out)
		}
		a.kubectl("delete", "hr", "gizmos.example.com", "--timeout=30s")
	})

	t.Run("a change the served type cannot take is refused on its field", func(t *testing.T) {
		for name, tc := range map[string]struct{ patch, field string }{
			"the scope of a type with objects": {`{"spec":{"scope":"Namespaced"}}`, "spec.scope"},
			"a version with stored objects replaced": {
				`{"spec":{"versions":[{"name":"v2","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object"}}}]}}`, "spec.versions"},
		} {
			out, err := a.kubectlErr("patch", "hr", "gadgets.example.com", "--type=merge", "-p", tc.patch)
			if err == nil || !strings.Contains(out, "is invalid") || !strings.Contains(out, tc.field) {
				t.Errorf("%s: want a 422 on %s, got %v\n%s", name, tc.field, err, out)
			}
		}
		if out := a.kubectl("get", "hr", "gadgets.example.com", "-o", "jsonpath={.spec.scope} {.spec.versions[*].name}"); out != "Cluster v1" {
			t.Errorf("the HostedResource after the refused changes: %q, want Cluster v1", out)
		}
		if out := a.kubectl("get", "gadgets", "-o", "name"); !strings.Contains(out, "gadget.example.com/g1") {
			t.Errorf("the type stopped serving after the refused changes: %q", out)
		}
	})

	a.kubectl("delete", "hostedresource", "gadgets.example.com", "--timeout=60s")
	if out, err := a.kubectlErr("get", "gadgets"); err == nil {
		t.Errorf("gadgets are still served after their HostedResource was deleted:\n%s", out)
	}
	// Declaring the type again must not bring the old objects back.
	a.kubectl("apply", "-f", filepath.Join(dir, "gadgets.yaml"))
	a.kubectl("wait", "--for=condition=Established", "--timeout=30s", "hostedresource/gadgets.example.com")
	if out := a.kubectl("get", "gadgets", "-o", "name"); strings.TrimSpace(out) != "" {
		t.Errorf("objects of the deleted type came back: %q", out)
	}
}
