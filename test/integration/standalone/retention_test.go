//go:build integration

package standalone

import (
	"bufio"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"annex.dev/annex/test/integration/framework"
)

var (
	policyReportsGVR = schema.GroupVersionResource{Group: "reports.example.com", Version: "v1", Resource: "policyreports"}
	gadgetsGVR       = schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "gadgets"}
)

// TestRetention declares retention policies on two types of a running annex
// and watches what they leave: the newest objects of each namespace up to
// maxObjectsPerNamespace, and only the objects younger than maxAge. annex
// runs a pass every second and deletes at most 4 objects of a type per pass,
// so the 7 objects over the bound take two passes.
func TestRetention(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port, "--retention-interval=1s", "--retention-batch-size=4")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := dynamic.NewForConfig(a.restConfig())
	if err != nil {
		t.Fatal(err)
	}

	a.kubectl("apply", "-f", filepath.Join("..", "..", "..", "config", "samples", "policyreports.yaml"))
	a.kubectl("apply", "-f", write(t, dir, "gadgets.yaml", gadgets))
	a.kubectl("wait", "--for=condition=Established", "--timeout=30s",
		"hostedresource/policyreports.reports.example.com", "hostedresource/gadgets.example.com")

	// The old gadgets first: their age is the slowest part of the test, and
	// it runs while the reports are checked.
	createGadget := func(name string) {
		t.Helper()
		g := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": map[string]any{"name": name}, "spec": map[string]any{},
		}}
		if _, err := client.Resource(gadgetsGVR).Create(ctx, g, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	oldGadgetsCreated := time.Now()
	for _, name := range []string{"old-1", "old-2", "old-3"} {
		createGadget(name)
	}

	t.Run("maxObjectsPerNamespace keeps the newest of each namespace", func(t *testing.T) {
		a.kubectl("create", "namespace", "a")
		a.kubectl("create", "namespace", "b")
		createReport := func(ns, name string, finalizers ...string) {
			t.Helper()
			r := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "reports.example.com/v1", "kind": "PolicyReport",
				"metadata": map[string]any{"name": name},
				"spec":     map[string]any{"scope": map[string]any{"kind": "Deployment", "name": "web"}},
			}}
			r.SetFinalizers(finalizers)
			if _, err := client.Resource(policyReportsGVR).Namespace(ns).Create(ctx, r, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		// Created one after the other, most in the same second: the names
		// sort in creation order, which breaks the ties of the timestamps.
		// r01, the oldest, has a finalizer that holds it once deleted.
		createReport("a", "r01", "example.com/hold")
		for i := 2; i <= 12; i++ {
			createReport("a", fmt.Sprintf("r%02d", i))
		}
		for i := 1; i <= 3; i++ {
			createReport("b", fmt.Sprintf("r%02d", i))
		}

		a.kubectl("patch", "hostedresource", "policyreports.reports.example.com", "--type=merge",
			"-p", `{"spec":{"storage":{"retention":{"maxObjectsPerNamespace":5}}}}`)
		patched := time.Now()
		want := []string{"r08", "r09", "r10", "r11", "r12"}
		var live, terminating []string
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			live, terminating = reports(ctx, t, client, "a")
			return slices.Equal(live, want), nil
		})
		if err != nil {
			t.Fatalf("namespace a keeps %v (and %v terminating), want the 5 newest %v", live, terminating, want)
		}
		t.Logf("namespace a converged to the 5 newest objects %v after the policy was set", time.Since(patched).Round(10*time.Millisecond))
		if !slices.Equal(terminating, []string{"r01"}) {
			t.Errorf("terminating in a: %v, want r01, deleted and held by its finalizer", terminating)
		}
		if live, terminating := reports(ctx, t, client, "b"); !slices.Equal(live, []string{"r01", "r02", "r03"}) || len(terminating) > 0 {
			t.Errorf("namespace b, under the bound, keeps %v (terminating %v), want all of r01..r03", live, terminating)
		}

		// Later passes neither delete r01 again nor count it among the
		// kept objects, so they delete nothing more.
		time.Sleep(2500 * time.Millisecond)
		if live, _ := reports(ctx, t, client, "a"); !slices.Equal(live, want) {
			t.Errorf("after more passes namespace a keeps %v, want %v", live, want)
		}
		metrics := a.metrics(ctx)
		if got := metrics.value("annex_retention_deleted_objects_total", "reports.example.com", "policyreports", "maxObjects"); got != 7 {
			t.Errorf("annex_retention_deleted_objects_total{reason=maxObjects} for policyreports = %v, want 7", got)
		}
		if got := metrics.value("annex_retention_errors_total", "reports.example.com", "policyreports", ""); got != 0 {
			t.Errorf("annex_retention_errors_total for policyreports = %v, want 0", got)
		}

		// Once its finalizer is removed, r01 is gone.
		a.kubectl("patch", "policyreport", "r01", "-n", "a", "--type=merge", "-p", `{"metadata":{"finalizers":null}}`)
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			_, terminating = reports(ctx, t, client, "a")
			return len(terminating) == 0, nil
		})
		if err != nil {
			t.Errorf("r01 is still terminating after its finalizer was removed")
		}
	})

	t.Run("maxAge deletes the old objects and keeps the new", func(t *testing.T) {
		// The old gadgets are 9s old when the policy of 8s is set; the new
		// ones are created just before it.
		out, err := a.kubectlErr("patch", "hostedresource", "gadgets.example.com", "--type=merge",
			"-p", `{"spec":{"storage":{"retention":{"maxAge":"500ms"}}}}`)
		if err == nil || !strings.Contains(out, "spec.storage.retention.maxAge") || !strings.Contains(out, "at least 1s") {
			t.Errorf("a maxAge under a second was not refused with its field path: %v\n%s", err, out)
		}

		time.Sleep(time.Until(oldGadgetsCreated.Add(9 * time.Second)))
		for _, name := range []string{"new-1", "new-2"} {
			createGadget(name)
		}
		a.kubectl("patch", "hostedresource", "gadgets.example.com", "--type=merge",
			"-p", `{"spec":{"storage":{"retention":{"maxAge":"8s"}}}}`)
		patched := time.Now()
		var live []string
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			live, _ = gadgetNames(ctx, t, client)
			return !slices.Contains(live, "old-1") && !slices.Contains(live, "old-2") && !slices.Contains(live, "old-3"), nil
		})
		if err != nil {
			t.Fatalf("gadgets older than maxAge are still there: %v", live)
		}
		t.Logf("the gadgets older than maxAge were gone %v after the policy was set", time.Since(patched).Round(10*time.Millisecond))
		if !slices.Equal(live, []string{"new-1", "new-2"}) {
			t.Errorf("gadgets left: %v, want the new ones, new-1 and new-2", live)
		}
		if got := a.metrics(ctx).value("annex_retention_deleted_objects_total", "example.com", "gadgets", "maxAge"); got != 3 {
			t.Errorf("annex_retention_deleted_objects_total{reason=maxAge} for gadgets = %v, want 3", got)
		}
		// The new gadgets age too: they go once older than 8s.
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			live, _ = gadgetNames(ctx, t, client)
			return len(live) == 0, nil
		})
		if err != nil {
			t.Errorf("gadgets left after they all passed maxAge: %v", live)
		}
	})
}

// reports returns the sorted names of the PolicyReports of ns, those being
// deleted (held by a finalizer) apart.
func reports(ctx context.Context, t *testing.T, client dynamic.Interface, ns string) (live, terminating []string) {
	t.Helper()
	list, err := client.Resource(policyReportsGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return splitTerminating(list)
}

func gadgetNames(ctx context.Context, t *testing.T, client dynamic.Interface) (live, terminating []string) {
	t.Helper()
	list, err := client.Resource(gadgetsGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return splitTerminating(list)
}

func splitTerminating(list *unstructured.UnstructuredList) (live, terminating []string) {
	for _, o := range list.Items {
		if o.GetDeletionTimestamp() != nil {
			terminating = append(terminating, o.GetName())
		} else {
			live = append(live, o.GetName())
		}
	}
	slices.Sort(live)
	slices.Sort(terminating)
	return live, terminating
}

// metricSamples are the samples of annex's /metrics, by metric name.
type metricSamples map[string][]string

// metrics fetches annex's /metrics as the admin.
func (a *annex) metrics(ctx context.Context) metricSamples {
	a.t.Helper()
	code, body := a.get(ctx, "/metrics")
	if code != 200 {
		a.t.Fatalf("/metrics: %d %s", code, body)
	}
	samples := metricSamples{}
	scanner := bufio.NewScanner(strings.NewReader(body))
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		samples[name] = append(samples[name], line)
	}
	return samples
}

// value is the value of the sample of a retention metric with the given
// group, resource and (unless empty) reason labels; 0 when there is none.
func (m metricSamples) value(name, group, resource, reason string) float64 {
	for _, line := range m[name] {
		if !strings.Contains(line, `group="`+group+`"`) || !strings.Contains(line, `resource="`+resource+`"`) {
			continue
		}
		if reason != "" && !strings.Contains(line, `reason="`+reason+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err != nil {
			return -1
		}
		return v
	}
	return 0
}
