//go:build integration

package integration

import (
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	reportsv1 "annex.dev/annex/examples/reports/api/v1"
	reportsclient "annex.dev/annex/examples/reports/generated/clientset/versioned"
)

func testPolicyReportClients(t *testing.T) {
	ns := reportNamespace(t)

	t.Run("dynamic client", func(t *testing.T) {
		ctx := testContext(t)
		reports := adminClient(t).Resource(policyReportsV1).Namespace(ns)

		created := createReport(t, ns, policyReport("dyn", "Deployment", "web"))
		if ps := nestedString(created, "spec", "policySet"); ps != "default" {
			t.Errorf("created: spec.policySet = %q, want the default", ps)
		}
		if g := created.GetGeneration(); g != 1 {
			t.Errorf("created: generation %d, want 1", g)
		}
		got, err := reports.Get(ctx, "dyn", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.GetResourceVersion() != created.GetResourceVersion() || got.GetUID() != created.GetUID() {
			t.Errorf("get returned resourceVersion %s uid %s, create returned %s %s", got.GetResourceVersion(), got.GetUID(), created.GetResourceVersion(), created.GetUID())
		}

		// An update of the main resource changes spec and bumps generation,
		// but ignores status.
		if err := unstructured.SetNestedField(got.Object, "api", "spec", "scope", "name"); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(got.Object, int64(9), "status", "replicas"); err != nil {
			t.Fatal(err)
		}
		updated, err := reports.Update(ctx, got, metav1.UpdateOptions{})
		if err != nil {
			t.Fatalf("update: %v", err)
		}
		if n := nestedString(updated, "spec", "scope", "name"); n != "api" {
			t.Errorf("after update spec.scope.name = %q, want api", n)
		}
		if g := updated.GetGeneration(); g != 2 {
			t.Errorf("after a spec update generation = %d, want 2", g)
		}
		if _, found, _ := unstructured.NestedFieldNoCopy(updated.Object, "status", "replicas"); found {
			t.Error("an update of the main resource wrote status.replicas; status belongs to /status")
		}

		patched, err := reports.Patch(ctx, "dyn", types.MergePatchType, []byte(`{"summary":{"pass":5}}`), metav1.PatchOptions{})
		if err != nil {
			t.Fatalf("merge patch: %v", err)
		}
		if p, w := nestedInt64(patched, "summary", "pass"), nestedInt64(patched, "summary", "warn"); p != 5 || w != 0 {
			t.Errorf("after a merge patch summary.pass = %d, summary.warn = %d; want 5 and 0", p, w)
		}
		patched, err = reports.Patch(ctx, "dyn", types.JSONPatchType, []byte(`[{"op":"test","path":"/summary/pass","value":5},{"op":"replace","path":"/spec/scope/kind","value":"StatefulSet"}]`), metav1.PatchOptions{})
		if err != nil {
			t.Fatalf("JSON patch: %v", err)
		}
		if k := nestedString(patched, "spec", "scope", "kind"); k != "StatefulSet" {
			t.Errorf("after a JSON patch spec.scope.kind = %q, want StatefulSet", k)
		}

		// An update through /status changes status and ignores spec.
		generation := patched.GetGeneration()
		if err := unstructured.SetNestedField(patched.Object, int64(2), "status", "replicas"); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(patched.Object, "app=evaluator", "status", "selector"); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(patched.Object, "ignored", "spec", "scope", "name"); err != nil {
			t.Fatal(err)
		}
		status, err := reports.UpdateStatus(ctx, patched, metav1.UpdateOptions{})
		if err != nil {
			t.Fatalf("update through /status: %v", err)
		}
		if r := nestedInt64(status, "status", "replicas"); r != 2 {
			t.Errorf("after a status update status.replicas = %d, want 2", r)
		}
		if n := nestedString(status, "spec", "scope", "name"); n != "api" {
			t.Errorf("a status update changed spec.scope.name to %q; want it still api", n)
		}
		if g := status.GetGeneration(); g != generation {
			t.Errorf("a status update changed generation from %d to %d", generation, g)
		}

		// The scale subresource maps spec.replicas, status.replicas and
		// status.selector.
		scale, err := reports.Get(ctx, "dyn", metav1.GetOptions{}, "scale")
		if err != nil {
			t.Fatalf("get /scale: %v", err)
		}
		if scale.GetKind() != "Scale" || scale.GetAPIVersion() != "autoscaling/v1" {
			t.Errorf("/scale returned %s %s, want autoscaling/v1 Scale", scale.GetAPIVersion(), scale.GetKind())
		}
		if r := nestedInt64(scale, "spec", "replicas"); r != 1 {
			t.Errorf("/scale spec.replicas = %d, want the default 1", r)
		}
		if r := nestedInt64(scale, "status", "replicas"); r != 2 {
			t.Errorf("/scale status.replicas = %d, want 2", r)
		}
		if s := nestedString(scale, "status", "selector"); s != "app=evaluator" {
			t.Errorf("/scale status.selector = %q, want app=evaluator", s)
		}
		if err := unstructured.SetNestedField(scale.Object, int64(3), "spec", "replicas"); err != nil {
			t.Fatal(err)
		}
		if _, err := reports.Update(ctx, scale, metav1.UpdateOptions{}, "scale"); err != nil {
			t.Fatalf("update /scale: %v", err)
		}
		if r := nestedInt64(getReport(t, ns, "dyn"), "spec", "replicas"); r != 3 {
			t.Errorf("after scaling to 3 spec.replicas = %d", r)
		}
	})

	t.Run("generated typed clientset", func(t *testing.T) {
		ctx := testContext(t)
		cs, err := reportsclient.NewForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		reports := cs.ReportsV1().PolicyReports(ns)
		created, err := reports.Create(ctx, &reportsv1.PolicyReport{
			ObjectMeta: metav1.ObjectMeta{Name: "typed", Labels: map[string]string{"client": "typed"}},
			Spec:       reportsv1.PolicyReportSpec{Scope: reportsv1.Scope{Kind: "Deployment", Name: "web"}},
			Summary:    reportsv1.PolicyReportSummary{Pass: 1},
			Results:    []reportsv1.PolicyReportResult{{Policy: "require-labels", Result: reportsv1.ResultPass}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("typed create: %v", err)
		}
		if created.Spec.PolicySet != "default" || ptr.Deref(created.Spec.Replicas, 0) != 1 || len(created.Results) != 1 || created.Results[0].Severity != reportsv1.SeverityMedium {
			t.Errorf("typed create returned spec %+v, results %+v; want the schema's defaults", created.Spec, created.Results)
		}

		list, err := reports.List(ctx, metav1.ListOptions{LabelSelector: "client=typed"})
		if err != nil {
			t.Fatalf("typed list: %v", err)
		}
		if len(list.Items) != 1 || list.Items[0].Name != "typed" || list.Items[0].Spec.Scope.Kind != "Deployment" {
			t.Fatalf("typed list by label: %+v, want only typed", list.Items)
		}

		w, err := reports.Watch(ctx, metav1.ListOptions{LabelSelector: "client=typed", ResourceVersion: list.ResourceVersion})
		if err != nil {
			t.Fatalf("typed watch: %v", err)
		}
		defer w.Stop()

		got, err := reports.Get(ctx, "typed", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("typed get: %v", err)
		}
		got.Summary.Pass = 4
		updated, err := reports.Update(ctx, got, metav1.UpdateOptions{})
		if err != nil {
			t.Fatalf("typed update: %v", err)
		}
		if updated.Summary.Pass != 4 || updated.ResourceVersion == got.ResourceVersion {
			t.Errorf("typed update returned summary.pass %d, resourceVersion %s (was %s)", updated.Summary.Pass, updated.ResourceVersion, got.ResourceVersion)
		}
		ev := nextEvent(t, w)
		report, ok := ev.Object.(*reportsv1.PolicyReport)
		if ev.Type != watch.Modified || !ok || report.Name != "typed" || report.Summary.Pass != 4 || report.ResourceVersion != updated.ResourceVersion {
			t.Errorf("typed watch: got %s %T %+v, want MODIFIED *v1.PolicyReport typed with summary.pass 4 at resourceVersion %s", ev.Type, ev.Object, ev.Object, updated.ResourceVersion)
		}
	})

	t.Run("the deprecated v1alpha1 is served with a warning", func(t *testing.T) {
		ctx := testContext(t)
		created := createReport(t, ns, policyReport("old", "Deployment", "web"))

		warnings := &warningRecorder{}
		cfg := rest.CopyConfig(env.Config)
		cfg.WarningHandler = warnings
		dyn := dynamicFor(t, cfg)

		// v1 is not deprecated.
		if _, err := dyn.Resource(policyReportsV1).Namespace(ns).Get(ctx, "old", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := warnings.take(); len(got) != 0 {
			t.Errorf("a v1 request returned warnings %q, want none", got)
		}

		old, err := dyn.Resource(policyReportsV1alpha1).Namespace(ns).Get(ctx, "old", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get as v1alpha1: %v", err)
		}
		if old.GetAPIVersion() != policyReportsGroup+"/v1alpha1" || old.GetUID() != created.GetUID() || nestedString(old, "spec", "scope", "name") != "web" {
			t.Errorf("get as v1alpha1 returned %s uid %s spec %v; want the same object as %s/v1alpha1", old.GetAPIVersion(), old.GetUID(), old.Object["spec"], policyReportsGroup)
		}
		const deprecation = "reports.example.com/v1alpha1 PolicyReport is deprecated; use reports.example.com/v1"
		if got := warnings.take(); len(got) != 1 || got[0] != deprecation {
			t.Errorf("a v1alpha1 request returned warnings %q, want exactly %q", got, deprecation)
		}

		// The typed v1alpha1 client reads it unchanged too.
		cs, err := reportsclient.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		typed, err := cs.ReportsV1alpha1().PolicyReports(ns).Get(ctx, "old", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("typed v1alpha1 get: %v", err)
		}
		if typed.Spec.Scope.Kind != "Deployment" || typed.Spec.PolicySet != "default" {
			t.Errorf("typed v1alpha1 get: spec %+v", typed.Spec)
		}
		if got := warnings.take(); len(got) != 1 || !strings.Contains(got[0], "deprecated") {
			t.Errorf("a typed v1alpha1 request returned warnings %q, want the deprecation", got)
		}
	})
}

// warningRecorder is a rest.WarningHandler that keeps every warning.
type warningRecorder struct {
	mu       sync.Mutex
	warnings []string
}

func (w *warningRecorder) HandleWarningHeader(code int, agent, text string) {
	if code != 299 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.warnings = append(w.warnings, text)
}

// take returns the warnings recorded since the last take.
func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	got := w.warnings
	w.warnings = nil
	return got
}
