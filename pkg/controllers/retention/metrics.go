package retention

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// The metrics are in the legacy registry, which annex serves on /metrics.
var (
	deletedObjects = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "annex",
		Subsystem:      "retention",
		Name:           "deleted_objects_total",
		Help:           "Objects of a hosted type that retention deleted (an object with finalizers counts once, when its deletion is requested), by the bound it passed: maxAge or maxObjects.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource", "reason"})
	skippedObjects = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "annex",
		Subsystem:      "retention",
		Name:           "skipped_objects_total",
		Help:           "Objects that retention meant to delete but found gone (NotFound) or replaced by a new object of the same name (Conflict).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource", "reason"})
	errorsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "annex",
		Subsystem:      "retention",
		Name:           "errors_total",
		Help:           "Failed lists and deletes of retention passes over a hosted type.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	passDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace:      "annex",
		Subsystem:      "retention",
		Name:           "pass_duration_seconds",
		Help:           "How long a retention pass over a hosted type took: listing its objects and deleting a batch.",
		Buckets:        metrics.ExponentialBuckets(0.01, 2, 15),
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	listRestarts = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "annex",
		Subsystem:      "retention",
		Name:           "list_restarts_total",
		Help:           "Times a retention pass over a hosted type listed again from the first page because its continue token had expired (410 Gone).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
	backlogObjects = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace:      "annex",
		Subsystem:      "retention",
		Name:           "backlog_objects",
		Help:           "Objects of a hosted type that the last retention pass found past the policy but did not delete (the batch was cut, or deletes failed); the next pass comes sooner.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "resource"})
)

var registerOnce sync.Once

// RegisterMetrics adds the retention metrics to the legacy registry once.
func RegisterMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(deletedObjects, skippedObjects, errorsTotal, passDuration, listRestarts, backlogObjects)
	})
}
