//go:build integration

package suite

import (
	"context"
	"testing"

	"go.etcd.io/etcd/client/v3/kubernetes"
	apitesting "k8s.io/apimachinery/pkg/api/apitesting"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/cacher"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"

	"annex.dev/annex/pkg/storage/lean"
)

func podAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	pod := obj.(*example.Pod)
	return labels.Set(pod.Labels), fields.Set{
		"metadata.name":      pod.Name,
		"metadata.namespace": pod.Namespace,
		"spec.nodeName":      pod.Spec.NodeName,
	}, nil
}

// newLeanStore is the lean cache of example Pods over the etcd3 store, as
// annex builds it for a hosted type; clusterScoped keys them by name alone.
func newLeanStore(t *testing.T, c *kubernetes.Client, clusterScoped bool) storage.Interface {
	t.Helper()
	keyFunc := func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc("/pods/", obj) }
	if clusterScoped {
		keyFunc = func(obj runtime.Object) (string, error) { return storage.NoNamespaceKeyFunc("/pods/", obj) }
	}
	s, err := lean.New(lean.Config{
		Storage:             newStore(t, c),
		Codec:               apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion),
		GroupResource:       schema.GroupResource{Resource: "pods"},
		ResourcePrefix:      "/pods/",
		KeyFunc:             keyFunc,
		GetAttrsFunc:        podAttrs,
		NewFunc:             func() runtime.Object { return &example.Pod{} },
		NewListFunc:         func() runtime.Object { return &example.PodList{} },
		EventsHistoryWindow: cacher.DefaultEventFreshDuration,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	// The tests expect their calls not to fail; while the cache fills,
	// lists are refused with 429.
	if err := s.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLeanStorageSuite runs the suite against the lean cache, as upstream
// runs it against its watch cache (cacher_test.go), on each store. Tests
// left out, besides those TestStorageSuite leaves out, and why:
//   - WatchFromZero, List, CompactRevision and ListInconsistentContinuation
//     as upstream runs them against its cache need hooks into the cache's
//     internals (forcing the cache's own compaction), which only the cacher
//     package's tests can reach.
//   - WatchContextCancel, as for upstream's cache: the watch cache ends a
//     watch on cancellation differently from the store (kubernetes#109831).
func TestLeanStorageSuite(t *testing.T) {
	for backendName, start := range backends {
		t.Run(backendName, func(t *testing.T) {
			newClient := start(t)
			ctx := context.Background()
			tests := map[string]func(t *testing.T, c *kubernetes.Client, s storage.Interface){
				"Create": func(t *testing.T, c *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestCreate(ctx, t, s, storedAsWritten(c.Client))
				},
				"CreateWithTTL": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestCreateWithTTL(ctx, t, s)
				},
				"CreateWithKeyExist": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestCreateWithKeyExist(ctx, t, s)
				},
				"Get": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) { storagetesting.RunTestGet(ctx, t, s) },
				"UnconditionalDelete": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestUnconditionalDelete(ctx, t, s)
				},
				"ConditionalDelete": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestConditionalDelete(ctx, t, s)
				},
				"DeleteWithSuggestion": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestDeleteWithSuggestion(ctx, t, s)
				},
				"DeleteWithSuggestionAndConflict": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestDeleteWithSuggestionAndConflict(ctx, t, s)
				},
				"DeleteWithSuggestionOfDeletedObject": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestDeleteWithSuggestionOfDeletedObject(ctx, t, s)
				},
				"ValidateDeletionWithSuggestion": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestValidateDeletionWithSuggestion(ctx, t, s)
				},
				"ValidateDeletionWithOnlySuggestionValid": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestValidateDeletionWithOnlySuggestionValid(ctx, t, s)
				},
				"DeleteWithConflict": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestDeleteWithConflict(ctx, t, s)
				},
				"PreconditionalDeleteWithSuggestion": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestPreconditionalDeleteWithSuggestion(ctx, t, s)
				},
				"PreconditionalDeleteWithOnlySuggestionPass": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass(ctx, t, s)
				},
				"ListPaging": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestListPaging(ctx, t, s)
				},
				"ConsistentList": func(t *testing.T, c *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestConsistentList(ctx, t, s, increaseRV(c.Client), true, true, true)
				},
				"GetListNonRecursive": func(t *testing.T, c *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestGetListNonRecursive(ctx, t, increaseRV(c.Client), s)
				},
				"GetListRecursivePrefix": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestGetListRecursivePrefix(ctx, t, s)
				},
				"KeySchema": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestKeySchema(ctx, t, s)
				},
				"GuaranteedUpdateWithTTL": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestGuaranteedUpdateWithTTL(ctx, t, s)
				},
				"GuaranteedUpdateWithConflict": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestGuaranteedUpdateWithConflict(ctx, t, s)
				},
				"GuaranteedUpdateWithSuggestionAndConflict": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(ctx, t, s)
				},
				"ListContinuation": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestListContinuation(ctx, t, s, nil)
				},
				"ListPaginationRareObject": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestListPaginationRareObject(ctx, t, s, nil)
				},
				"ListContinuationWithFilter": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestListContinuationWithFilter(ctx, t, s, nil)
				},
				"NamespaceScopedList": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestNamespaceScopedList(ctx, t, s)
				},
				"Watch": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) { storagetesting.RunTestWatch(ctx, t, s) },
				"DeleteTriggerWatch": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestDeleteTriggerWatch(ctx, t, s)
				},
				"WatchFromNonZero": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestWatchFromNonZero(ctx, t, s)
				},
				"DelayedWatchDelivery": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestDelayedWatchDelivery(ctx, t, s)
				},
				"WatcherTimeout": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestWatcherTimeout(ctx, t, s)
				},
				"WatchDeleteEventObjectHaveLatestRV": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(ctx, t, s)
				},
				"WatchInitializationSignal": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestWatchInitializationSignal(ctx, t, s)
				},
				"NamespaceScopedWatch": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestNamespaceScopedWatch(ctx, t, s)
				},
				"WatchDispatchBookmarkEvents": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestWatchDispatchBookmarkEvents(ctx, t, s, true)
				},
				"WatchBookmarksWithCorrectResourceVersion": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunTestOptionalWatchBookmarksWithCorrectResourceVersion(ctx, t, s)
				},
				"SendInitialEventsBackwardCompatibility": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunSendInitialEventsBackwardCompatibility(ctx, t, s)
				},
				"WatchSemantics": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunWatchSemantics(ctx, t, &waitForCache{s})
				},
				"WatchSemanticInitialEventsExtended": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunWatchSemanticInitialEventsExtended(ctx, t, &waitForCache{s})
				},
				"WatchListMatchSingle": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
					storagetesting.RunWatchListMatchSingle(ctx, t, &waitForCache{s})
				},
			}
			for name, test := range tests {
				t.Run(name, func(t *testing.T) {
					if reason, ok := skipped[backendName][name]; ok {
						t.Skip(reason)
					}
					c := newClient(t)
					test(t, c, newLeanStore(t, c, false))
				})
			}
			t.Run("ClusterScopedWatch", func(t *testing.T) {
				c := newClient(t)
				storagetesting.RunTestClusterScopedWatch(ctx, t, newLeanStore(t, c, true))
			})
		})
	}
}

// waitForCache returns from a create once the cache holds the object, as
// upstream's tests of its cache do for the tests that watch from "now".
type waitForCache struct{ storage.Interface }

func (w *waitForCache) Create(ctx context.Context, key string, obj, out runtime.Object, ttl uint64) error {
	if err := w.Interface.Create(ctx, key, obj, out, ttl); err != nil {
		return err
	}
	rv := out.(*example.Pod).ResourceVersion
	got := &example.Pod{}
	return w.Interface.Get(ctx, key, storage.GetOptions{ResourceVersion: rv}, got)
}
