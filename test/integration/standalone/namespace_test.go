//go:build integration

package standalone

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"annex.dev/annex/test/integration/framework"
)

var widgets = hostedResource("widgets", "{kind: Widget, plural: widgets}", "Namespaced", "",
	hostedVersion("v1", true, "", "type: object\nx-kubernetes-preserve-unknown-fields: true\n"))

func widget(name string, finalizers ...string) string {
	return "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: " + name +
		"\n  finalizers: [" + strings.Join(finalizers, ",") + "]\n"
}

// TestNamespaces uses standalone mode's namespaces as kubectl users do: they
// are created Active, hold hosted objects, refuse objects while missing or
// terminating, and go away with their content when deleted.
func TestNamespaces(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port)

	a.kubectl("create", "namespace", "team-a")
	out := a.kubectl("get", "ns")
	if !strings.Contains(out, "STATUS") || !hasRow(out, "team-a", "Active") || !hasRow(out, "default", "Active") {
		t.Errorf("kubectl get ns does not show team-a and default Active:\n%s", out)
	}
	if out := a.kubectl("get", "namespace", "team-a", "-o", "jsonpath={.spec.finalizers}"); out != `["kubernetes"]` {
		t.Errorf("spec.finalizers = %s, want [\"kubernetes\"]", out)
	}
	if out := a.kubectl("get", "ns", "--field-selector", "status.phase=Active", "-o", "name"); !strings.Contains(out, "namespace/team-a") {
		t.Errorf("field selector status.phase=Active: %q", out)
	}
	if out := a.kubectl("api-resources", "--api-group="); !hasRow(out, "namespaces", "ns") {
		t.Errorf("kubectl api-resources does not list namespaces with short name ns:\n%s", out)
	}
	if out := a.kubectl("explain", "namespace.spec.finalizers"); !strings.Contains(out, "Finalizers is an opaque list") {
		t.Errorf("kubectl explain namespace.spec.finalizers:\n%s", out)
	}

	t.Run("server-side apply", func(t *testing.T) {
		ns := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: applied\n  labels: {team: b}\n"
		a.kubectl("apply", "--server-side", "-f", write(t, dir, "applied.yaml", ns))
		if out := a.kubectl("get", "ns", "-l", "team=b", "-o", "name"); strings.TrimSpace(out) != "namespace/applied" {
			t.Errorf("label selector team=b: %q", out)
		}
		if out := a.kubectl("get", "ns", "applied", "-o", "jsonpath={.metadata.managedFields[0].manager}"); out != "kubectl" {
			t.Errorf("managedFields[0].manager = %q, want kubectl", out)
		}
		a.kubectl("delete", "namespace", "applied", "--timeout=30s")
	})

	if out, err := a.kubectlErr("delete", "namespace", "default"); err == nil || !strings.Contains(out, "may not be deleted") {
		t.Errorf("deleting the default namespace: %v\n%s", err, out)
	}

	a.kubectl("apply", "-f", write(t, dir, "widgets.yaml", widgets))
	a.kubectl("wait", "--for=condition=Established", "--timeout=30s", "hostedresource/widgets.example.com")
	a.kubectl("apply", "-n", "team-a", "-f", write(t, dir, "w1.yaml", widget("w1")))
	// w2 keeps the namespace terminating until its finalizer is removed.
	a.kubectl("apply", "-n", "team-a", "-f", write(t, dir, "w2.yaml", widget("w2", "example.com/hold")))

	if out, err := a.kubectlErr("apply", "-n", "nowhere", "-f", write(t, dir, "w3.yaml", widget("w3"))); err == nil || !strings.Contains(out, `namespaces "nowhere" not found`) {
		t.Errorf("creating a widget in a missing namespace: %v\n%s", err, out)
	}

	a.kubectl("delete", "namespace", "team-a", "--wait=false")
	a.kubectl("wait", "--for=jsonpath={.status.phase}=Terminating", "--timeout=30s", "namespace/team-a")
	a.kubectl("wait", "--for=condition=NamespaceContentRemaining", "--timeout=30s", "namespace/team-a")
	msg := a.kubectl("get", "ns", "team-a", "-o", "jsonpath={.status.conditions[?(@.type=='NamespaceContentRemaining')].message}")
	if !strings.Contains(msg, "widgets.example.com has 1 resource instances") {
		t.Errorf("NamespaceContentRemaining message: %q", msg)
	}
	if out := a.kubectl("get", "widgets", "-n", "team-a", "-o", "name"); strings.TrimSpace(out) != "widget.example.com/w2" {
		t.Errorf("widgets left in the terminating namespace: %q, want only w2", out)
	}
	if out, err := a.kubectlErr("apply", "-n", "team-a", "-f", write(t, dir, "w4.yaml", widget("w4"))); err == nil || !strings.Contains(out, "because it is being terminated") {
		t.Errorf("creating a widget in a terminating namespace: %v\n%s", err, out)
	}

	a.kubectl("patch", "widget", "w2", "-n", "team-a", "--type=merge", "-p", `{"metadata":{"finalizers":null}}`)
	a.kubectl("wait", "--for=delete", "--timeout=30s", "namespace/team-a")

	t.Run("kubectl delete namespace finishes", func(t *testing.T) {
		a.kubectl("create", "namespace", "team-b")
		a.kubectl("apply", "-n", "team-b", "-f", filepath.Join(dir, "w1.yaml"))
		// kubectl waits for the namespace to be gone.
		a.kubectl("delete", "namespace", "team-b", "--timeout=30s")
		if out, err := a.kubectlErr("get", "namespace", "team-b"); err == nil || !strings.Contains(out, "NotFound") {
			t.Errorf("namespace team-b after delete: %v\n%s", err, out)
		}
	})
}

// hasRow says whether a line of kubectl's table output holds all the cells.
func hasRow(table string, cells ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		fields := strings.Fields(line)
		found := true
		for _, c := range cells {
			if !slices.Contains(fields, c) {
				found = false
				break
			}
		}
		if found {
			return true
		}
	}
	return false
}
