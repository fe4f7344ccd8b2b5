//go:build integration

package standalone

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
)

// TestLeanCacheBudgetRefusesCreates fills a type kept lean up to its cache's
// budget (--lean-cache-budget-per-type) and checks what its users notice:
// the next create is refused with 507 and a message that says why and what
// to do, kubectl shows it, nothing of the refused object is stored, reads,
// updates and deletes go on, /metrics says so, and once objects are deleted
// creates are accepted again.
func TestLeanCacheBudgetRefusesCreates(t *testing.T) {
	dir := t.TempDir()
	const budget = 24 << 10
	a := start(t, dir, 0, fmt.Sprintf("--lean-cache-budget-per-type=%d", budget), "--lean-cache-budget-interval=300ms")
	a.declare(write(t, dir, "types.yaml", hostedType("gadgets", "Gadget", "default")), 60*time.Second, "gadgets.example.com")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gadgets := gadgetsOf(t, a)
	created, refusal := fillToBudget(ctx, t, gadgets, budget)
	for _, want := range []string{"annex's cache of gadgets.example.com is full: the type holds about ", "its budget is 24.0 KiB (annex's --lean-cache-budget-per-type)",
		"objects are not created until some are deleted or the budget is raised"} {
		if !strings.Contains(refusal.Error(), want) {
			t.Errorf("the refusal %q does not say %q", refusal, want)
		}
	}
	if _, err := gadgets.Get(ctx, fmt.Sprintf("g%d", created), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the refused object: %v, want NotFound", err)
	}
	out, err := a.kubectlErr("create", "-f", write(t, dir, "more.yaml", "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: more}\nspec: {size: 1}\n"))
	if err == nil || !strings.Contains(out, "Error from server (InsufficientStorage)") || !strings.Contains(out, "is full") {
		t.Errorf("kubectl create past the budget: %v\n%s", err, out)
	}
	if got := a.metrics(ctx).value("annex_lean_cache_over_budget", "example.com", "gadgets", ""); got != 1 {
		t.Errorf("annex_lean_cache_over_budget = %v, want 1", got)
	}
	if got := a.metrics(ctx).value("annex_lean_cache_bytes", "example.com", "gadgets", ""); got < budget {
		t.Errorf("annex_lean_cache_bytes = %v, want at least the budget, %d", got, budget)
	}

	// Reads, updates and deletes go on.
	a.kubectl("label", "gadget", "g0", "touched=yes")
	for i := range created / 2 {
		if err := gadgets.Delete(ctx, fmt.Sprintf("g%d", i), metav1.DeleteOptions{}); err != nil {
			t.Fatalf("deleting g%d past the budget: %v", i, err)
		}
	}
	if list, err := gadgets.List(ctx, metav1.ListOptions{}); err != nil || len(list.Items) != created-created/2 {
		t.Fatalf("listing after the deletes: %v, want %d objects", err, created-created/2)
	}
	// Accepted again once the deletes are measured.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := gadgets.Create(ctx, budgetGadget(created), metav1.CreateOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("creates are still refused after half the objects were deleted: %v", err)
	}
	if got := a.metrics(ctx).value("annex_lean_cache_over_budget", "example.com", "gadgets", ""); got != 0 {
		t.Errorf("annex_lean_cache_over_budget = %v after the deletes, want 0", got)
	}
}

// gadgetsOf is a client of a's gadgets.
func gadgetsOf(t *testing.T, a *annex) dynamic.NamespaceableResourceInterface {
	t.Helper()
	client, err := dynamic.NewForConfig(a.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	return client.Resource(schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "gadgets"})
}

// budgetGadget is the i-th object of the budget tests' type.
func budgetGadget(i int) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1", "kind": "Gadget",
		"metadata": map[string]any{"name": fmt.Sprintf("g%d", i)},
		"spec":     map[string]any{"size": int64(1 + i%10)},
	}}
}

// fillToBudget creates gadgets until one is refused with 507, and returns
// how many were created and the refusal. Each object costs about 1 KiB of
// budget besides its encoding: a budget of a few dozen KiB is reached
// within a few dozen creates, and refused at the next measure.
func fillToBudget(ctx context.Context, t *testing.T, gadgets dynamic.NamespaceableResourceInterface, budget int64) (int, error) {
	t.Helper()
	var created int
	for created < 200 {
		_, err := gadgets.Create(ctx, budgetGadget(created), metav1.CreateOptions{})
		var status *apierrors.StatusError
		switch {
		case err == nil:
			created++
			time.Sleep(20 * time.Millisecond)
			continue
		case errors.As(err, &status) && status.ErrStatus.Code == http.StatusInsufficientStorage:
		default:
			t.Fatalf("creating g%d: %v", created, err)
		}
		t.Logf("refused after %d objects: %v", created, err)
		if created < 5 {
			t.Errorf("refused after %d objects: the budget of %d bytes holds more", created, budget)
		}
		return created, err
	}
	t.Fatalf("%d creates were accepted into a cache with a budget of %d bytes", created, budget)
	return 0, nil
}

// TestHostedResourceCacheBudget gives a type a budget of its own
// (spec.storage.cacheBudget), smaller than annex's per-type one: creates are
// refused past it with a message that names it, /metrics shows it, raising
// it lets creates in again at the next measure, and a budget that is not a
// positive quantity is refused with the field's path.
func TestHostedResourceCacheBudget(t *testing.T) {
	dir := t.TempDir()
	a := start(t, dir, 0, "--lean-cache-budget-per-type=64Mi", "--lean-cache-budget-interval=300ms")
	declared := strings.Replace(hostedType("gadgets", "Gadget", "default"), "storage: {backend: default}", "storage: {backend: default, cacheBudget: 24Ki}", 1)
	a.declare(write(t, dir, "types.yaml", declared), 60*time.Second, "gadgets.example.com")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gadgets := gadgetsOf(t, a)
	created, refusal := fillToBudget(ctx, t, gadgets, 24<<10)
	if want := "its budget is 24.0 KiB (its HostedResource's spec.storage.cacheBudget)"; !strings.Contains(refusal.Error(), want) {
		t.Errorf("the refusal %q does not say %q", refusal, want)
	}
	if got := a.metrics(ctx).value("annex_lean_cache_type_budget_bytes", "example.com", "gadgets", ""); got != 24<<10 {
		t.Errorf("annex_lean_cache_type_budget_bytes = %v, want the type's own, %d", got, 24<<10)
	}

	// A budget that is no positive quantity is refused, and changes nothing.
	for _, bad := range []string{`"0"`, `"-1Gi"`} {
		out, err := a.kubectlErr("patch", "hostedresource", "gadgets.example.com", "--type=merge", "-p", `{"spec":{"storage":{"cacheBudget":`+bad+`}}}`)
		if err == nil || !strings.Contains(out, "spec.storage.cacheBudget") || !strings.Contains(out, "must be a positive quantity of bytes") {
			t.Errorf("a cache budget of %s: %v\n%s\nwant it refused, naming spec.storage.cacheBudget", bad, err, out)
		}
	}

	// Raised, it lets creates in again at the next measure.
	a.kubectl("patch", "hostedresource", "gadgets.example.com", "--type=merge", "-p", `{"spec":{"storage":{"cacheBudget":"1Mi"}}}`)
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := gadgets.Create(ctx, budgetGadget(created), metav1.CreateOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("creates are still refused after the budget was raised: %v", err)
	}
	if got := a.metrics(ctx).value("annex_lean_cache_type_budget_bytes", "example.com", "gadgets", ""); got != 1<<20 {
		t.Errorf("annex_lean_cache_type_budget_bytes = %v after the budget was raised, want %d", got, 1<<20)
	}
}
