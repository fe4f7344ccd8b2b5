package server

import (
	"math"
	"strings"
	"testing"
	"time"

	"annex.dev/annex/pkg/storage/lean"
)

func TestLeanCacheBudgetFlags(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, tc := range []struct {
		args  []string
		limit int64
		want  lean.Budget
	}{
		// No flag: half the Go runtime's memory limit, none without one.
		{limit: 8 << 30, want: lean.Budget{Total: 4 << 30}},
		{limit: math.MaxInt64, want: lean.Budget{}},
		{args: []string{"--lean-cache-budget=3Gi", "--lean-cache-budget-per-type=512Mi"}, limit: 8 << 30,
			want: lean.Budget{Total: 3 << 30, PerType: 512 << 20}},
		// 0 is no bound, even with a memory limit.
		{args: []string{"--lean-cache-budget=0"}, limit: 8 << 30, want: lean.Budget{}},
		{args: []string{"--lean-cache-budget-per-type=1G", "--lean-cache-budget-interval=2s"}, limit: math.MaxInt64,
			want: lean.Budget{PerType: 1_000_000_000, Interval: 2 * time.Second}},
	} {
		o := parsed(t, tc.args...)
		if err := o.Validate(); err != nil && strings.Contains(err.Error(), "lean-cache") {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		got, err := o.leanCacheBudget(tc.limit)
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if tc.want.Interval == 0 {
			tc.want.Interval = lean.DefaultBudgetInterval
		}
		if got.PerType != tc.want.PerType || got.Total != tc.want.Total || got.Interval != tc.want.Interval || got.OfType != nil {
			t.Errorf("%v with a memory limit of %d: budget %+v, want %+v", tc.args, tc.limit, got, tc.want)
		}
	}
}

func TestLeanCacheBudgetRefusesWhatIsNotASize(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, tc := range []struct{ arg, want string }{
		{"--lean-cache-budget=lots", `--lean-cache-budget: "lots" is not a quantity of bytes such as 4Gi`},
		{"--lean-cache-budget=-1Gi", `--lean-cache-budget: "-1Gi" is negative`},
		{"--lean-cache-budget-per-type=2 GiB", `--lean-cache-budget-per-type: "2 GiB" is not a quantity of bytes`},
		{"--lean-cache-budget-interval=0s", "--lean-cache-budget-interval must be positive, not 0s"},
	} {
		err := parsed(t, tc.arg).Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.arg, err, tc.want)
		}
	}
}
