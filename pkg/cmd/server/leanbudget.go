package server

import (
	"fmt"
	"math"

	"k8s.io/apimachinery/pkg/api/resource"

	"annex.dev/annex/pkg/storage/lean"
)

// defaultLeanCacheShare is the share of the Go runtime's memory limit the
// lean caches may hold together when --lean-cache-budget is not given: the
// rest is for requests in flight, watchers' buffers, the embedded etcd and
// the collector's headroom.
const defaultLeanCacheShare = 0.5

// parseBudget reads a budget flag: a non-negative quantity of bytes, 0 when
// empty.
func parseBudget(value string) (int64, error) {
	if value == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(value)
	if err != nil {
		return 0, fmt.Errorf("%q is not a quantity of bytes such as 4Gi: %w", value, err)
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("%q is negative", value)
	}
	return q.Value(), nil
}

// leanCacheBudget is the budget of the lean caches; goMemoryLimit is the Go
// runtime's memory limit (math.MaxInt64 for none), whose share is the total
// budget when --lean-cache-budget is empty.
func (o *Options) leanCacheBudget(goMemoryLimit int64) (lean.Budget, error) {
	b := lean.Budget{Interval: o.LeanCacheBudgetInterval}
	var err error
	if b.PerType, err = parseBudget(o.LeanCacheBudgetPerType); err != nil {
		return b, fmt.Errorf("--lean-cache-budget-per-type: %w", err)
	}
	if o.LeanCacheBudget == "" {
		if goMemoryLimit > 0 && goMemoryLimit != math.MaxInt64 {
			b.Total = int64(float64(goMemoryLimit) * defaultLeanCacheShare)
		}
		return b, nil
	}
	if b.Total, err = parseBudget(o.LeanCacheBudget); err != nil {
		return b, fmt.Errorf("--lean-cache-budget: %w", err)
	}
	return b, nil
}
