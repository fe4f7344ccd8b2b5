package lean

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
)

// The lean caches hold every object of their types in memory. A Budget
// bounds that memory, for each type (all its versions' caches together) and
// for all types: once a type's caches hold their budget's worth, or all
// caches together the total budget, annex refuses to create objects of the
// type (or of any type) with 507 Insufficient Storage, until objects are
// deleted or the budget is raised. Reads, updates and deletes go on. The
// caches never drop objects: what a cache holds is the store's state, and a
// cache that left objects out would answer wrongly.
//
// What the caches hold is measured every Interval by walking each cache's
// index (as a list of the whole type from the cache does: the walk of a
// million objects takes about 150 MB of short-lived memory), and is
// estimated as the encodings' sizes plus objectOverhead per object: between
// two walks, a type can outgrow its budget by what is created in that time,
// and updates can grow objects (each up to the object size limit).

// objectOverhead is the memory a cached object takes beyond its encoding:
// the index's entry, the compact object, its key, and its labels and fields
// as the cache keeps them. Measured with the capacity benchmark: at 200,000
// report objects the live heap held 1,371 bytes per object, of which the
// compressed encoding about 330.
const objectOverhead = 1024

// DefaultBudgetInterval is how often the caches are measured when
// Budget.Interval is zero.
const DefaultBudgetInterval = 30 * time.Second

// Budget bounds the memory of the lean caches; a zero bound is no bound.
type Budget struct {
	// PerType bounds the memory of one resource's caches, its versions'
	// together, in bytes.
	PerType int64
	// Total bounds the memory of all the caches, in bytes.
	Total int64
	// Interval is how often the caches are measured.
	Interval time.Duration
	// OfType, when set, returns the budget set on one resource itself (its
	// HostedResource's spec.storage.cacheBudget), which bounds it in place
	// of PerType; ok is false for a resource without one. It is asked at
	// each measure.
	OfType func(schema.GroupResource) (bytes int64, ok bool)
}

// perType is the budget of gr's caches, 0 for none, and what sets it.
func (b Budget) perType(gr schema.GroupResource) (int64, string) {
	if b.OfType != nil {
		if own, ok := b.OfType(gr); ok {
			return own, "its HostedResource's spec.storage.cacheBudget"
		}
	}
	return b.PerType, "annex's --lean-cache-budget-per-type"
}

// Usage is what a cache holds.
type Usage struct {
	Objects int64
	// EncodedBytes is the size of the objects' encodings as kept.
	EncodedBytes int64
}

// Bytes estimates the memory the cache takes for what it holds.
func (u Usage) Bytes() int64 { return u.EncodedBytes + u.Objects*objectOverhead }

func (u Usage) add(v Usage) Usage {
	return Usage{Objects: u.Objects + v.Objects, EncodedBytes: u.EncodedBytes + v.EncodedBytes}
}

// usage walks the cache's index. It fails while the cache is filling.
func (s *Storage) usage(ctx context.Context) (Usage, error) {
	l := &ObjectList{}
	opts := storage.ListOptions{ResourceVersion: "0", Recursive: true, Predicate: storage.Everything}
	if err := s.cacher.GetList(ctx, s.config.ResourcePrefix, opts, l); err != nil {
		return Usage{}, err
	}
	u := Usage{Objects: int64(len(l.Items))}
	for i := range l.Items {
		u.EncodedBytes += int64(l.Items[i].keptBytes())
	}
	return u, nil
}

// keptBytes is the size of the encoding o keeps: its compact encoding, or
// while it is deferred the stored one until a read has compacted it.
func (o *Object) keptBytes() int {
	if o.stored != nil {
		if form := o.stored.form.Load(); form != nil {
			return len(form.data)
		}
	}
	return len(o.data)
}

// refuseCreates makes the storage refuse creates with err, or accept them
// again when err is nil.
func (s *Storage) refuseCreates(err *apierrors.StatusError) {
	s.overBudget.Store(err)
}

// overBudgetError is the answer to a create refused because the caches hold
// their budget's worth.
func overBudgetError(resource schema.GroupResource, which string, used, budget int64, setBy string) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusInsufficientStorage,
		Reason:  "InsufficientStorage",
		Details: &metav1.StatusDetails{Group: resource.Group, Kind: resource.Resource},
		Message: fmt.Sprintf("annex's cache of %s is full: %s holds about %s, its budget is %s (%s); "+
			"objects are not created until some are deleted or the budget is raised (reads, updates and deletes go on)",
			resource, which, quantity(used), quantity(budget), setBy),
	}}
}

// quantity writes bytes for a reader: 24.7 KiB, 1.5 GiB.
func quantity(bytes int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f, i := float64(bytes), 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", bytes)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// Budgets measures the lean caches and holds them to a Budget.
type Budgets struct {
	budget Budget
	// storages returns the caches: a Registry's Storages.
	storages func() []*Storage

	mu sync.Mutex
	// usage is the last measure of each resource's caches.
	usage map[schema.GroupResource]Usage
}

var (
	cacheObjects = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name:           "annex_lean_cache_objects",
		Help:           "Objects a hosted type's lean caches hold, all its versions' caches together, at the last measure.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	cacheBytes = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name: "annex_lean_cache_bytes",
		Help: "Memory a hosted type's lean caches take, estimated at the last measure: the objects' encodings as kept, " +
			"plus an overhead per object. The total of all types has the labels group=\"\" and resource=\"\".",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	cacheBudgetBytes = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name: "annex_lean_cache_budget_bytes",
		Help: "The memory budget of each hosted type's lean caches (scope=\"type\") and of all of them (scope=\"total\"); " +
			"absent when there is none.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"scope"})
	cacheTypeBudgetBytes = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name: "annex_lean_cache_type_budget_bytes",
		Help: "The memory budget of a hosted type's lean caches at the last measure: its own (spec.storage.cacheBudget) " +
			"or annex's --lean-cache-budget-per-type; absent when it has none.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	cacheOverBudget = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name:           "annex_lean_cache_over_budget",
		Help:           "1 while creates of a hosted type are refused because its lean caches, or all of them, hold their budget's worth.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	registerBudgetMetrics sync.Once
)

// NewBudgets holds the caches storages returns (a Registry's Storages) to
// budget.
func NewBudgets(storages func() []*Storage, budget Budget) *Budgets {
	if budget.Interval <= 0 {
		budget.Interval = DefaultBudgetInterval
	}
	registerBudgetMetrics.Do(func() {
		legacyregistry.MustRegister(cacheObjects, cacheBytes, cacheBudgetBytes, cacheTypeBudgetBytes, cacheOverBudget)
	})
	if budget.PerType > 0 {
		cacheBudgetBytes.WithLabelValues("type").Set(float64(budget.PerType))
	}
	if budget.Total > 0 {
		cacheBudgetBytes.WithLabelValues("total").Set(float64(budget.Total))
	}
	return &Budgets{budget: budget, storages: storages, usage: map[schema.GroupResource]Usage{}}
}

// Run measures the caches every interval until ctx is done.
func (b *Budgets) Run(ctx context.Context) {
	wait.UntilWithContext(ctx, b.Measure, b.budget.Interval)
}

// Measure measures every cache once, and refuses or accepts creates of
// each type by its budget and the total one. A cache that is filling keeps
// its last measure.
func (b *Budgets) Measure(ctx context.Context) {
	storages := b.storages()
	b.mu.Lock()
	defer b.mu.Unlock()
	measured := map[schema.GroupResource]Usage{}
	failed := map[schema.GroupResource]bool{}
	for _, s := range storages {
		gr := s.config.GroupResource
		u, err := s.usage(ctx)
		if err != nil {
			klog.V(4).InfoS("The lean cache could not be measured", "resource", gr, "err", err)
			failed[gr] = true
			continue
		}
		measured[gr] = measured[gr].add(u)
	}
	for gr := range failed {
		if _, ok := measured[gr]; !ok {
			if last, ok := b.usage[gr]; ok {
				measured[gr] = last
			}
		}
	}
	for gr := range b.usage {
		if _, ok := measured[gr]; !ok {
			cacheObjects.DeleteLabelValues(gr.Group, gr.Resource)
			cacheBytes.DeleteLabelValues(gr.Group, gr.Resource)
			cacheOverBudget.DeleteLabelValues(gr.Group, gr.Resource)
			cacheTypeBudgetBytes.DeleteLabelValues(gr.Group, gr.Resource)
		}
	}
	b.usage = measured

	var total Usage
	for _, u := range measured {
		total = total.add(u)
	}
	cacheBytes.WithLabelValues("", "").Set(float64(total.Bytes()))
	overTotal := b.budget.Total > 0 && total.Bytes() >= b.budget.Total
	perType, setBy := map[schema.GroupResource]int64{}, map[schema.GroupResource]string{}
	for gr, u := range measured {
		cacheObjects.WithLabelValues(gr.Group, gr.Resource).Set(float64(u.Objects))
		cacheBytes.WithLabelValues(gr.Group, gr.Resource).Set(float64(u.Bytes()))
		perType[gr], setBy[gr] = b.budget.perType(gr)
		if perType[gr] > 0 {
			cacheTypeBudgetBytes.WithLabelValues(gr.Group, gr.Resource).Set(float64(perType[gr]))
		} else {
			cacheTypeBudgetBytes.DeleteLabelValues(gr.Group, gr.Resource)
		}
	}
	for _, s := range storages {
		gr := s.config.GroupResource
		u := measured[gr]
		var refusal *apierrors.StatusError
		switch {
		case perType[gr] > 0 && u.Bytes() >= perType[gr]:
			refusal = overBudgetError(gr, "the type", u.Bytes(), perType[gr], setBy[gr])
		case overTotal:
			refusal = overBudgetError(gr, "annex (all types together)", total.Bytes(), b.budget.Total, "annex's --lean-cache-budget")
		}
		if refusal != nil && s.overBudget.Load() == nil {
			klog.InfoS("Refusing to create objects: the lean caches hold their budget's worth", "resource", gr, "reason", refusal.ErrStatus.Message)
		} else if refusal == nil && s.overBudget.Load() != nil {
			klog.InfoS("Creating objects again: the lean caches are within their budget", "resource", gr)
		}
		s.refuseCreates(refusal)
		over := 0.0
		if refusal != nil {
			over = 1
		}
		cacheOverBudget.WithLabelValues(gr.Group, gr.Resource).Set(over)
	}
}

// Usage returns the last measure of each resource's caches, sorted by
// resource.
func (b *Budgets) Usage() []ResourceUsage {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]ResourceUsage, 0, len(b.usage))
	for gr, u := range b.usage {
		out = append(out, ResourceUsage{Resource: gr, Usage: u})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Resource.String() < out[j].Resource.String() })
	return out
}

// ResourceUsage is what one resource's caches hold.
type ResourceUsage struct {
	Resource schema.GroupResource
	Usage
}
