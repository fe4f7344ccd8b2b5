//go:build integration

package standalone

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"annex.dev/annex/test/integration/framework"
)

// TestContinueTokenExpiresWithCompaction pages a hosted type's list while
// annex compacts its store every 2 seconds: once the page's revision is
// compacted, its continue token, and a list at that revision exactly, get
// 410 Gone, as from the kube-apiserver. The other tests' annex compacts
// every 5 minutes, so this one runs an annex of its own.
func TestContinueTokenExpiresWithCompaction(t *testing.T) {
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, t.TempDir(), port, "--etcd-compaction-interval=2s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := dynamic.NewForConfig(a.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	a.kubectl("apply", "-f", filepath.Join("..", "..", "..", "config", "samples", "policyreports.yaml"))
	a.kubectl("wait", "--for=condition=Established", "--timeout=30s", "hostedresource/policyreports.reports.example.com")
	a.kubectl("create", "namespace", "reports")
	reports := client.Resource(policyReportsGVR).Namespace("reports")
	for _, name := range []string{"c1", "c2"} {
		report := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "reports.example.com/v1", "kind": "PolicyReport",
			"metadata": map[string]any{"name": name},
			"spec":     map[string]any{"scope": map[string]any{"kind": "Deployment", "name": name}},
		}}
		if _, err := reports.Create(ctx, report, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating PolicyReport %s: %v", name, err)
		}
	}

	first, err := reports.List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil || first.GetContinue() == "" {
		t.Fatalf("first page: continue %q, error %v", first.GetContinue(), err)
	}
	// annex compacts to the revision it saw one interval ago, so writes
	// must go on for the page's revision to fall behind.
	var lastErr error
	err = wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, false, func(ctx context.Context) (bool, error) {
		patch := fmt.Sprintf(`{"summary":{"pass":%d}}`, time.Now().Unix()%1000)
		if _, err := reports.Patch(ctx, "c1", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return false, err
		}
		_, lastErr = reports.List(ctx, metav1.ListOptions{Limit: 1, Continue: first.GetContinue()})
		return lastErr != nil, nil
	})
	if err != nil {
		t.Fatalf("the continue token of resourceVersion %s still works after a minute of compactions: %v", first.GetResourceVersion(), err)
	}
	if !apierrors.IsResourceExpired(lastErr) || codeOf(lastErr) != http.StatusGone {
		t.Errorf("listing with a compacted continue token: want 410 Expired, got %v", lastErr)
	}
	_, err = reports.List(ctx, metav1.ListOptions{ResourceVersion: first.GetResourceVersion(), ResourceVersionMatch: metav1.ResourceVersionMatchExact})
	if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
		t.Errorf("listing at the compacted resourceVersion %s exactly: want 410 Gone, got %v", first.GetResourceVersion(), err)
	}
}

// codeOf is the HTTP status code of an API error, or 0.
func codeOf(err error) int32 {
	if status, ok := err.(apierrors.APIStatus); ok {
		return status.Status().Code
	}
	return 0
}
