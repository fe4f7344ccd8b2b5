//go:build integration

package integration

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"annex.dev/annex/test/integration/framework"
)

// The example type of config/samples/policyreports.yaml, which the semantics
// tests use the way its users would: through the cluster's kube-apiserver.
const (
	policyReportsManifest = "../../config/samples/policyreports.yaml"
	policyReportsGroup    = "reports.example.com"
	policyReportsName     = "policyreports." + policyReportsGroup
)

var (
	policyReportsV1       = schema.GroupVersionResource{Group: policyReportsGroup, Version: "v1", Resource: "policyreports"}
	policyReportsV1alpha1 = schema.GroupVersionResource{Group: policyReportsGroup, Version: "v1alpha1", Resource: "policyreports"}
	reportNamespacesGVR   = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

// TestPolicyReportSemantics declares the PolicyReport sample once and checks
// what kubectl, client-go and controller-runtime users of a hosted type
// notice. The declaration is owned by this parent test so that it is deleted
// when the last group of subtests ends; run one group with
// -run 'TestPolicyReportSemantics/kubectl'.
func TestPolicyReportSemantics(t *testing.T) {
	declarePolicyReports(t)
	t.Run("kubectl", testPolicyReportKubectl)
	t.Run("client-go", testPolicyReportClients)
	t.Run("watch and lists", testPolicyReportWatchAndLists)
}

// declarePolicyReports creates the HostedResource of the sample through the
// cluster, waits until both versions answer through the kube-apiserver, and
// deletes it when t ends.
func declarePolicyReports(t *testing.T) {
	t.Helper()
	data, err := os.ReadFile(policyReportsManifest)
	if err != nil {
		t.Fatalf("reading the sample: %v", err)
	}
	hr := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &hr.Object); err != nil {
		t.Fatalf("parsing %s: %v", policyReportsManifest, err)
	}
	if hr.GetName() != policyReportsName {
		t.Fatalf("%s declares %q, want %s", policyReportsManifest, hr.GetName(), policyReportsName)
	}
	ctx := testContext(t)
	admin := adminClient(t)
	if _, err := admin.Resource(framework.HostedResources).Create(ctx, hr, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating HostedResource %s: %v", hr.GetName(), err)
	}
	t.Cleanup(func() { undeclarePolicyReports(t) })

	c := waitForCondition(t, hr.GetName(), "APIServiceAvailable", metav1.ConditionTrue)
	if c.Reason != "Registered" {
		t.Errorf("APIServiceAvailable reason = %q, want Registered", c.Reason)
	}
	// APIServiceAvailable says the APIServices exist; the aggregator still
	// has to find them available before requests are proxied.
	for _, gvr := range []schema.GroupVersionResource{policyReportsV1, policyReportsV1alpha1} {
		var lastErr error
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			_, lastErr = admin.Resource(gvr).Namespace("default").List(ctx, metav1.ListOptions{Limit: 1})
			return lastErr == nil, nil
		})
		if err != nil {
			t.Fatalf("%s never answered through the kube-apiserver: %v", gvr, lastErr)
		}
	}
}

// undeclarePolicyReports deletes the declaration and waits until the cluster
// no longer routes the group to annex.
func undeclarePolicyReports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := adminClient(t)
	if err := admin.Resource(framework.HostedResources).Delete(ctx, policyReportsName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting HostedResource %s: %v", policyReportsName, err)
		return
	}
	for _, version := range []string{"v1", "v1alpha1"} {
		err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			_, err := admin.Resource(apiServicesGVR).Get(ctx, version+"."+policyReportsGroup, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Errorf("APIService %s.%s is still registered after its HostedResource was deleted", version, policyReportsGroup)
		}
	}
}

// reportNamespace creates a namespace of the cluster for one test. The test
// cluster runs no namespace controller, so deleting it only marks it.
func reportNamespace(t *testing.T) string {
	t.Helper()
	ns := uniqueName("polr")
	create(t, adminClient(t), reportNamespacesGVR, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns},
	}})
	return ns
}

// policyReport is a minimal v1 PolicyReport about scopeKind/scopeName.
func policyReport(name, scopeKind, scopeName string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": policyReportsGroup + "/v1",
		"kind":       "PolicyReport",
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{
			"scope": map[string]any{"kind": scopeKind, "name": scopeName},
		},
	}}
}

// createReport creates obj in ns through the kube-apiserver. Objects are
// not cleaned up one by one: they go with the declaration.
func createReport(t *testing.T, ns string, obj *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	got, err := adminClient(t).Resource(policyReportsV1).Namespace(ns).Create(testContext(t), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating PolicyReport %s/%s: %v", ns, obj.GetName(), err)
	}
	return got
}

func nestedInt64(obj *unstructured.Unstructured, path ...string) int64 {
	v, _, _ := unstructured.NestedInt64(obj.Object, path...)
	return v
}

// kubectlOK runs kubectl and fails the test if it fails.
func kubectlOK(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := env.Kubectl(testContext(t), args...)
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s", err, out)
	}
	if stderr != "" {
		t.Logf("kubectl %s: stderr: %s", strings.Join(args, " "), stderr)
	}
	return out
}

// kubectlExitCode returns kubectl's exit code (0 on success) and its output;
// it fails the test if kubectl could not be run at all.
func kubectlExitCode(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	stdout, stderr, err := env.Kubectl(testContext(t), args...)
	if err == nil {
		return 0, stdout, stderr
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("running kubectl: %v", err)
	}
	return exitErr.ExitCode(), stdout, stderr
}

// writeManifest writes a manifest for kubectl -f and returns its path. Not in
// t.TempDir: kubectl -f splits at commas, which test names can hold.
func writeManifest(t *testing.T, manifest string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "polr-manifest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "manifest.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// streamingKubectl is a kubectl that keeps running (get --watch), started
// exactly as env.Kubectl starts it, whose stdout is read line by line.
type streamingKubectl struct {
	lines  chan string
	stderr lockedBuilder
}

// lockedBuilder is a strings.Builder that exec may write while a test reads it.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startKubectl starts kubectl; it is killed when ctx ends or the test ends.
func startKubectl(t *testing.T, ctx context.Context, args ...string) *streamingKubectl {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	all := append([]string{
		"--kubeconfig=" + env.KubeconfigFile,
		"--cache-dir=" + filepath.Join(env.Dir, "kubectl-cache"),
	}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(os.Getenv(framework.AssetsEnv), "kubectl"), all...)
	k := &streamingKubectl{lines: make(chan string, 100)}
	cmd.Stderr = &k.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting kubectl %s: %v", strings.Join(args, " "), err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(k.lines)
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			k.lines <- scanner.Text()
		}
	}()
	t.Cleanup(func() {
		cancel()
		// Drain so the reader never blocks on a full channel.
		for range k.lines {
		}
		wg.Wait()
		_ = cmd.Wait()
	})
	return k
}

// waitForLine returns the first line whose first field is name, failing
// after timeout or when kubectl exits.
func (k *streamingKubectl) waitForLine(t *testing.T, name string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	var seen []string
	for {
		select {
		case line, ok := <-k.lines:
			if !ok {
				t.Fatalf("kubectl exited before printing a row for %s; it printed %q; stderr: %s", name, seen, k.stderr.String())
			}
			seen = append(seen, line)
			if f := strings.Fields(line); len(f) > 0 && f[0] == name {
				return line
			}
		case <-deadline:
			t.Fatalf("kubectl printed no row for %s within %s; it printed %q", name, timeout, seen)
		}
	}
}
