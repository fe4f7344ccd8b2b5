//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"annex.dev/annex/examples/reconciler/controller"
	reportsv1 "annex.dev/annex/examples/reports/api/v1"
)

// reportManifest is a v1 PolicyReport about Deployment web for kubectl -f;
// extra is YAML appended after spec.scope: indented by two spaces it adds to
// spec, unindented it adds top-level fields.
func reportManifest(name, extra string) string {
	return fmt.Sprintf(`apiVersion: reports.example.com/v1
kind: PolicyReport
metadata:
  name: %s
spec:
  scope:
    kind: Deployment
    name: web
%s`, name, extra)
}

func testPolicyReportKubectl(t *testing.T) {
	ns := reportNamespace(t)

	t.Run("api-resources lists the type with its short name", func(t *testing.T) {
		out := kubectlEventually(t, "api-resources", "--api-group="+policyReportsGroup)
		if !hasRow(strings.Split(out, "\n"), "policyreports", "polr", policyReportsGroup+"/v1", "true", "PolicyReport") {
			t.Errorf("kubectl api-resources --api-group=%s has no row `policyreports polr %s/v1 true PolicyReport`:\n%s", policyReportsGroup, policyReportsGroup, out)
		}
	})

	t.Run("explain describes nested fields", func(t *testing.T) {
		out := kubectlEventually(t, "explain", "policyreport.results.resources.kind")
		for _, want := range []string{"GROUP:      " + policyReportsGroup, "KIND:       PolicyReport", "VERSION:    v1", "FIELD: kind <string>"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl explain policyreport.results.resources.kind lacks %q:\n%s", want, out)
			}
		}
		if desc := schemaDescription(t, "results", "resources", "kind"); desc == "" {
			t.Errorf("the sample's schema gives results[].resources[].kind no description, so kubectl explain shows none (the Go type documents it)")
		} else if !strings.Contains(oneLine(out), desc) {
			t.Errorf("kubectl explain policyreport.results.resources.kind does not show the schema's description %q:\n%s", desc, out)
		}
		out = kubectlEventually(t, "explain", "policyreport.results.resources")
		desc := schemaDescription(t, "results", "resources")
		if desc == "" || !strings.Contains(oneLine(out), desc) {
			t.Errorf("kubectl explain policyreport.results.resources does not show the schema's description %q:\n%s", desc, out)
		}
		if !strings.Contains(out, "uid\t<string>") && !strings.Contains(out, "uid <string>") {
			t.Errorf("kubectl explain policyreport.results.resources does not list the field uid:\n%s", out)
		}
	})

	t.Run("get shows the printer columns and wide adds priority 1", func(t *testing.T) {
		obj := policyReport("columns", "Deployment", "web")
		obj.Object["summary"] = map[string]any{"pass": int64(2), "fail": int64(1)}
		obj.Object["results"] = []any{map[string]any{"policy": "disallow-latest", "result": "fail"}}
		createReport(t, ns, obj)

		out := kubectlOK(t, "get", "polr", "-n", ns)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if got, want := columns(lines[0]), []string{"NAME", "POLICY SET", "PASS", "FAIL", "AGE"}; !slices.Equal(got, want) {
			t.Errorf("kubectl get polr: columns %q, want %q:\n%s", got, want, out)
		}
		if row := strings.Fields(findRow(lines, "columns")); len(row) != 5 || !slices.Equal(row[:4], []string{"columns", "default", "2", "1"}) {
			t.Errorf("kubectl get polr: row %q, want columns default 2 1 <age>:\n%s", row, out)
		}

		out = kubectlOK(t, "get", "polr", "-n", ns, "-o", "wide")
		lines = strings.Split(strings.TrimSpace(out), "\n")
		if got, want := columns(lines[0]), []string{"NAME", "POLICY SET", "PASS", "FAIL", "SCOPE KIND", "SCOPE NAME", "AGE"}; !slices.Equal(got, want) {
			t.Errorf("kubectl get polr -o wide: columns %q, want %q:\n%s", got, want, out)
		}
		if row := strings.Fields(findRow(lines, "columns")); len(row) != 7 || !slices.Equal(row[:6], []string{"columns", "default", "2", "1", "Deployment", "web"}) {
			t.Errorf("kubectl get polr -o wide: row %q, want columns default 2 1 Deployment web <age>:\n%s", row, out)
		}

		// The category of the sample reaches the object too.
		if out := kubectlOK(t, "get", "reports", "-n", ns, "-o", "name"); !strings.Contains(out, "policyreport."+policyReportsGroup+"/columns") {
			t.Errorf("kubectl get reports (the category) does not list the report:\n%s", out)
		}
	})

	t.Run("client-side apply creates, then applies a change", func(t *testing.T) {
		file := writeManifest(t, reportManifest("applied", "  policySet: pod-security\nsummary:\n  pass: 2\n"))
		if out := kubectlOK(t, "apply", "-n", ns, "-f", file); !strings.Contains(out, "policyreport."+policyReportsGroup+"/applied created") {
			t.Errorf("first kubectl apply: %q, want created", out)
		}
		// The change drops policySet: the three-way merge removes it and the
		// schema's default takes its place.
		if err := os.WriteFile(file, []byte(reportManifest("applied", "summary:\n  pass: 3\n")), 0o600); err != nil {
			t.Fatal(err)
		}
		if out := kubectlOK(t, "apply", "-n", ns, "-f", file); !strings.Contains(out, "policyreport."+policyReportsGroup+"/applied configured") {
			t.Errorf("second kubectl apply: %q, want configured", out)
		}
		got := getReport(t, ns, "applied")
		if pass := nestedInt64(got, "summary", "pass"); pass != 3 {
			t.Errorf("after the second apply summary.pass = %d, want 3", pass)
		}
		if ps := nestedString(got, "spec", "policySet"); ps != "default" {
			t.Errorf("after applying a manifest without spec.policySet it is %q, want the default \"default\"", ps)
		}
		if _, ok := got.GetAnnotations()["kubectl.kubernetes.io/last-applied-configuration"]; !ok {
			t.Error("client-side apply left no last-applied-configuration annotation")
		}
	})

	t.Run("server-side apply owns fields and refuses a conflicting manager", func(t *testing.T) {
		file := writeManifest(t, reportManifest("ssa", "  policySet: pod-security\n"))
		if out := kubectlOK(t, "apply", "--server-side", "--field-manager=alice", "-n", ns, "-f", file); !strings.Contains(out, "serverside-applied") {
			t.Errorf("kubectl apply --server-side: %q, want serverside-applied", out)
		}
		got := getReport(t, ns, "ssa")
		if !managedBy(got, "alice", metav1.ManagedFieldsOperationApply) {
			t.Errorf("managedFields has no Apply entry of alice: %v", got.GetManagedFields())
		}

		other := writeManifest(t, reportManifest("ssa", "  policySet: baseline\n"))
		code, out, stderr := kubectlExitCode(t, "apply", "--server-side", "--field-manager=bob", "-n", ns, "-f", other)
		if code == 0 {
			t.Fatalf("bob's conflicting server-side apply succeeded: %s", out)
		}
		for _, want := range []string{"conflict", "alice", ".spec.policySet"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("bob's conflicting apply: stderr lacks %q: %s", want, stderr)
			}
		}
		if ps := nestedString(getReport(t, ns, "ssa"), "spec", "policySet"); ps != "pod-security" {
			t.Errorf("after the refused apply spec.policySet = %q, want alice's pod-security", ps)
		}

		kubectlOK(t, "apply", "--server-side", "--field-manager=bob", "--force-conflicts", "-n", ns, "-f", other)
		got = getReport(t, ns, "ssa")
		if ps := nestedString(got, "spec", "policySet"); ps != "baseline" {
			t.Errorf("after bob forced the conflict spec.policySet = %q, want baseline", ps)
		}
		if !managedBy(got, "bob", metav1.ManagedFieldsOperationApply) {
			t.Errorf("managedFields has no Apply entry of bob after --force-conflicts: %v", got.GetManagedFields())
		}
	})

	t.Run("diff shows a pending change and nothing once applied", func(t *testing.T) {
		file := writeManifest(t, reportManifest("diffed", "summary:\n  pass: 3\n"))
		kubectlOK(t, "apply", "-n", ns, "-f", file)
		if err := os.WriteFile(file, []byte(reportManifest("diffed", "summary:\n  pass: 4\n")), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, stderr := kubectlExitCode(t, "diff", "-n", ns, "-f", file)
		if code != 1 {
			t.Fatalf("kubectl diff of a changed manifest: exit code %d, want 1 (differences found)\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
		}
		if !hasDiffLine(out, "-", "pass: 3") || !hasDiffLine(out, "+", "pass: 4") {
			t.Errorf("kubectl diff does not show summary.pass changing from 3 to 4:\n%s", out)
		}
		// diff asks the server for a dry run: nothing changed.
		if pass := nestedInt64(getReport(t, ns, "diffed"), "summary", "pass"); pass != 3 {
			t.Errorf("after kubectl diff summary.pass = %d, want it still 3", pass)
		}

		kubectlOK(t, "apply", "-n", ns, "-f", file)
		code, out, stderr = kubectlExitCode(t, "diff", "-n", ns, "-f", file)
		if code != 0 || strings.TrimSpace(out) != "" {
			t.Errorf("kubectl diff after applying: exit code %d, want 0 and no output\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
		}
	})

	t.Run("create --dry-run=server returns the defaulted object and stores nothing", func(t *testing.T) {
		file := writeManifest(t, reportManifest("dry", "results:\n- policy: require-labels\n  result: pass\n"))
		out := kubectlOK(t, "create", "--dry-run=server", "-n", ns, "-f", file, "-o", "yaml")
		// Through JSON into Unstructured, so that integers stay int64.
		data, err := yaml.YAMLToJSON([]byte(out))
		if err != nil {
			t.Fatalf("parsing kubectl's output: %v\n%s", err, out)
		}
		got := &unstructured.Unstructured{}
		if err := got.UnmarshalJSON(data); err != nil {
			t.Fatalf("parsing kubectl's output: %v\n%s", err, out)
		}
		if ps := nestedString(got, "spec", "policySet"); ps != "default" {
			t.Errorf("dry-run object: spec.policySet = %q, want the default \"default\"", ps)
		}
		if r, found, _ := unstructured.NestedInt64(got.Object, "spec", "replicas"); !found || r != 1 {
			t.Errorf("dry-run object: spec.replicas = %d (found %v), want the default 1", r, found)
		}
		if s, found, _ := unstructured.NestedMap(got.Object, "summary"); !found || len(s) != 5 {
			t.Errorf("dry-run object: summary = %v, want the five defaulted counts", s)
		}
		results, _, _ := unstructured.NestedSlice(got.Object, "results")
		if len(results) != 1 || results[0].(map[string]any)["severity"] != "medium" {
			t.Errorf("dry-run object: results = %v, want one result with the default severity medium", results)
		}
		_, err = adminClient(t).Resource(policyReportsV1).Namespace(ns).Get(testContext(t), "dry", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("after create --dry-run=server: get: want 404 NotFound, got %v", err)
		}
	})

	t.Run("wait for a condition the example reconciler sets", func(t *testing.T) {
		startReconciler(t, ns)
		compliant := writeManifest(t, reportManifest("compliant", "summary:\n  pass: 1\nresults:\n- policy: require-labels\n  result: pass\n"))
		failing := writeManifest(t, reportManifest("failing", "summary:\n  fail: 1\nresults:\n- policy: disallow-privileged\n  result: fail\n"))
		kubectlOK(t, "apply", "-n", ns, "-f", compliant, "-f", failing)

		out := kubectlOK(t, "wait", "--for=condition=Compliant", "--timeout=30s", "-n", ns, "polr/compliant")
		if !strings.Contains(out, "condition met") {
			t.Errorf("kubectl wait --for=condition=Compliant: %q, want condition met", out)
		}
		kubectlOK(t, "wait", "--for=condition=Compliant=false", "--timeout=30s", "-n", ns, "polr/failing")
		reason := kubectlOK(t, "get", "polr", "failing", "-n", ns, "-o", `jsonpath={.status.conditions[?(@.type=="Compliant")].reason}`)
		if reason != controller.ReasonPolicyFailures {
			t.Errorf("the failing report's Compliant reason is %q, want %s", reason, controller.ReasonPolicyFailures)
		}
	})

	t.Run("delete removes the object", func(t *testing.T) {
		createReport(t, ns, policyReport("doomed", "Deployment", "web"))
		if out := kubectlOK(t, "delete", "polr", "doomed", "-n", ns); !strings.Contains(out, "deleted") {
			t.Errorf("kubectl delete: %q, want deleted", out)
		}
		code, _, stderr := kubectlExitCode(t, "get", "polr", "doomed", "-n", ns)
		if code == 0 || !strings.Contains(stderr, "NotFound") {
			t.Errorf("kubectl get after delete: exit code %d, stderr %q; want it to fail with NotFound", code, stderr)
		}
	})

	t.Run("get --watch prints objects created while it runs", func(t *testing.T) {
		wns := reportNamespace(t)
		createReport(t, wns, policyReport("before", "Deployment", "web"))
		ctx, cancel := context.WithTimeout(testContext(t), 45*time.Second)
		defer cancel()
		k := startKubectl(t, ctx, "get", "polr", "-n", wns, "--watch")
		// kubectl watches from the resourceVersion of the list that printed
		// "before", so anything created after this line is a watch event.
		k.waitForLine(t, "before", 30*time.Second)
		obj := policyReport("after", "StatefulSet", "db")
		obj.Object["summary"] = map[string]any{"pass": int64(7)}
		createReport(t, wns, obj)
		line := k.waitForLine(t, "after", 30*time.Second)
		if f := strings.Fields(line); len(f) != 5 || !slices.Equal(f[:4], []string{"after", "default", "7", "0"}) {
			t.Errorf("kubectl get --watch printed %q for the new report, want after default 7 0 <age>", line)
		}
	})
}

// startReconciler runs the example reconciler in this process with a
// controller-runtime manager against the kube-apiserver, caching only ns.
func startReconciler(t *testing.T, ns string) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := reportsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	ctrl.SetLogger(klog.NewKlogr())
	mgr, err := ctrl.NewManager(rest.CopyConfig(env.Config), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		// The controller's name is process-global; -count=2 reuses it.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("creating the manager: %v", err)
	}
	if err := controller.SetupWithManager(mgr); err != nil {
		t.Fatalf("setting up the reconciler: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the manager stopped with: %v", err)
		}
	})
}

func getReport(t *testing.T, ns, name string) *unstructured.Unstructured {
	t.Helper()
	got, err := adminClient(t).Resource(policyReportsV1).Namespace(ns).Get(testContext(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting PolicyReport %s/%s: %v", ns, name, err)
	}
	return got
}

func managedBy(obj *unstructured.Unstructured, manager string, op metav1.ManagedFieldsOperationType) bool {
	for _, m := range obj.GetManagedFields() {
		if m.Manager == manager && m.Operation == op {
			return true
		}
	}
	return false
}

// columns splits a kubectl table header into its column names; names are
// separated by two or more spaces, since some contain one ("POLICY SET").
func columns(header string) []string {
	var cols []string
	for _, c := range strings.Split(header, "  ") {
		if c = strings.TrimSpace(c); c != "" {
			cols = append(cols, c)
		}
	}
	return cols
}

// hasDiffLine reports whether a unified diff has a line starting with sign
// whose remainder, trimmed, is text.
func hasDiffLine(diff, sign, text string) bool {
	for _, line := range strings.Split(diff, "\n") {
		if rest, ok := strings.CutPrefix(line, sign); ok && strings.TrimSpace(rest) == text {
			return true
		}
	}
	return false
}

// oneLine collapses runs of white space, as kubectl explain wraps text.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// schemaDescription returns the description the sample's v1 schema gives the
// field at path (through arrays' items), collapsed to one line.
func schemaDescription(t *testing.T, path ...string) string {
	t.Helper()
	data, err := os.ReadFile(policyReportsManifest)
	if err != nil {
		t.Fatal(err)
	}
	var hr struct {
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &hr); err != nil {
		t.Fatal(err)
	}
	for _, v := range hr.Spec.Versions {
		if v.Name != "v1" {
			continue
		}
		node := v.Schema.OpenAPIV3Schema
		for _, field := range path {
			if items, ok := node["items"].(map[string]any); ok {
				node = items
			}
			props, _ := node["properties"].(map[string]any)
			node, _ = props[field].(map[string]any)
		}
		desc, _ := node["description"].(string)
		return oneLine(desc)
	}
	t.Fatal("the sample has no version v1")
	return ""
}
