//go:build integration

package suite

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"go.etcd.io/etcd/client/v3/kubernetes"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/example"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/component-base/metrics/legacyregistry"

	"annex.dev/annex/pkg/storage/lean"
)

// TestLeanCacheBudget checks, on each store, what a user of a type whose
// lean cache holds its budget's worth notices: creates are refused with 507
// and a message that says why and what to do, while reads, updates and
// deletes go on; once objects are deleted, creates are accepted again. The
// measure is what annex_lean_cache_objects and annex_lean_cache_bytes
// report.
func TestLeanCacheBudget(t *testing.T) {
	ctx := context.Background()
	runSuite(t, map[string]suiteTest{"Budget": func(t *testing.T, c *kubernetes.Client, _ storage.Interface) {
		s := newLeanStoreWith(t, c, false, leanOptions{})
		storages := func() []*lean.Storage { return []*lean.Storage{s} }
		const pods = 20
		for i := range pods {
			if err := createBudgetPod(ctx, s, i); err != nil {
				t.Fatal(err)
			}
		}
		// Without a budget, the measure only reports.
		unbounded := lean.NewBudgets(storages, lean.Budget{})
		full := waitForObjects(ctx, t, unbounded, pods)
		if full.EncodedBytes <= 0 || full.Bytes() <= full.EncodedBytes {
			t.Fatalf("the cache of %d pods measures %+v (%d bytes in all)", pods, full.Usage, full.Bytes())
		}
		if got := gauge(t, "annex_lean_cache_objects", "pods"); got != pods {
			t.Errorf("annex_lean_cache_objects{resource=pods} = %v, want %d", got, pods)
		}
		if got := gauge(t, "annex_lean_cache_bytes", "pods"); got != float64(full.Bytes()) {
			t.Errorf("annex_lean_cache_bytes{resource=pods} = %v, want %d", got, full.Bytes())
		}
		if err := createBudgetPod(ctx, s, pods); err != nil {
			t.Fatalf("a create without a budget: %v", err)
		}
		if err := s.Delete(ctx, budgetPodKey(pods), &example.Pod{}, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitForObjects(ctx, t, unbounded, pods)

		for _, tc := range []struct {
			name   string
			budget lean.Budget
			says   string
		}{
			{"per type", lean.Budget{PerType: full.Bytes()}, "annex's cache of pods is full: the type holds about "},
			{"total", lean.Budget{Total: full.Bytes()}, "annex's cache of pods is full: annex (all types together) holds about "},
			// A type's own budget bounds it in place of the per-type flag's,
			// smaller or larger.
			{"the type's own", lean.Budget{PerType: 100 * full.Bytes(), OfType: ownBudget(full.Bytes())}, "(its HostedResource's spec.storage.cacheBudget)"},
			{"the type's own over the flag's", lean.Budget{PerType: 1, OfType: ownBudget(full.Bytes())}, "(its HostedResource's spec.storage.cacheBudget)"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				budgets := lean.NewBudgets(storages, tc.budget)
				waitForObjects(ctx, t, budgets, pods)
				err := createBudgetPod(ctx, s, pods)
				var status *apierrors.StatusError
				switch {
				case err == nil:
					t.Fatalf("a create past the budget of %d bytes was accepted", full.Bytes())
				case !errors.As(err, &status) || status.ErrStatus.Code != http.StatusInsufficientStorage || status.ErrStatus.Reason != "InsufficientStorage":
					t.Fatalf("a create past the budget: %v, want 507 InsufficientStorage", err)
				case !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "until some are deleted or the budget is raised"):
					t.Errorf("a create past the budget: %q, want it to say %q and what to do", err, tc.says)
				}
				if got := gauge(t, "annex_lean_cache_over_budget", "pods"); got != 1 {
					t.Errorf("annex_lean_cache_over_budget{resource=pods} = %v, want 1", got)
				}
				if tc.budget.OfType != nil {
					if got := gauge(t, "annex_lean_cache_type_budget_bytes", "pods"); got != float64(full.Bytes()) {
						t.Errorf("annex_lean_cache_type_budget_bytes{resource=pods} = %v, want the type's own, %d", got, full.Bytes())
					}
				}
				// Nothing was stored, and the rest goes on.
				if err := s.Get(ctx, budgetPodKey(pods), storage.GetOptions{}, &example.Pod{}); !storage.IsNotFound(err) {
					t.Errorf("the refused pod: %v, want NotFound", err)
				}
				out := &example.Pod{}
				if err := s.GuaranteedUpdate(ctx, budgetPodKey(0), out, false, nil, func(input runtime.Object, _ storage.ResponseMeta) (runtime.Object, *uint64, error) {
					p := input.(*example.Pod)
					p.Labels = map[string]string{"updated": "yes"}
					return p, nil, nil
				}, nil); err != nil {
					t.Errorf("an update past the budget: %v", err)
				}
				if err := s.Delete(ctx, budgetPodKey(pods-1), &example.Pod{}, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{}); err != nil {
					t.Fatalf("a delete past the budget: %v", err)
				}
				// Back within the budget once the delete is measured.
				waitForObjects(ctx, t, budgets, pods-1)
				if err := createBudgetPod(ctx, s, pods-1); err != nil {
					t.Fatalf("a create within the budget again: %v", err)
				}
				if got := gauge(t, "annex_lean_cache_over_budget", "pods"); got != 0 {
					t.Errorf("annex_lean_cache_over_budget{resource=pods} = %v, want 0", got)
				}
				waitForObjects(ctx, t, budgets, pods)
			})
		}
	}}, newLeanStore)
}

// ownBudget is a Budget.OfType that gives pods a budget of their own.
func ownBudget(bytes int64) func(schema.GroupResource) (int64, bool) {
	return func(gr schema.GroupResource) (int64, bool) { return bytes, gr.Resource == "pods" }
}

func budgetPodKey(i int) string { return fmt.Sprintf("/pods/budget/p%d", i) }

func createBudgetPod(ctx context.Context, s storage.Interface, i int) error {
	pod := &example.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "budget"},
		Spec:       example.PodSpec{NodeName: strings.Repeat("n", 200)},
	}
	return s.Create(ctx, budgetPodKey(i), pod, &example.Pod{}, 0)
}

// waitForObjects measures the cache until it holds n objects: the cache
// sees a write through the store's watch, after the write returns.
func waitForObjects(ctx context.Context, t *testing.T, b *lean.Budgets, n int64) lean.ResourceUsage {
	t.Helper()
	var last []lean.ResourceUsage
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		b.Measure(ctx)
		last = b.Usage()
		return len(last) == 1 && last[0].Objects == n, nil
	})
	if err != nil {
		t.Fatalf("the cache measures %+v, want %d objects: %v", last, n, err)
	}
	return last[0]
}

// gauge is the value of a gauge of the lean caches for a resource of the
// core group.
func gauge(t *testing.T, name, resource string) float64 {
	t.Helper()
	families, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["group"] == "" && labels["resource"] == resource {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s for %s", name, resource)
	return 0
}
