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
// runs it against its watch cache (cacher_test.go), on each store: the
// tests of TestStorageSuite, and those of the watch cache's own
// semantics. Tests left out, besides those TestStorageSuite leaves out,
// and why:
//   - WatchFromZero, List, CompactRevision and ListInconsistentContinuation
//     as upstream runs them against its cache need hooks into the cache's
//     internals (forcing the cache's own compaction), which only the cacher
//     package's tests can reach.
//   - WatchContextCancel and ProgressNotify: upstream runs neither against
//     its cache (kubernetes#109831; the cache turns progress into bookmarks,
//     which the bookmark tests cover).
func TestLeanStorageSuite(t *testing.T) {
	ctx := context.Background()
	tests := sharedTests(ctx)
	for name, test := range map[string]suiteTest{
		"ConsistentList": func(t *testing.T, c *kubernetes.Client, s storage.Interface) {
			storagetesting.RunTestConsistentList(ctx, t, s, increaseRV(c.Client), true, true, true)
		},
		"WatchInitializationSignal": func(t *testing.T, _ *kubernetes.Client, s storage.Interface) {
			storagetesting.RunTestWatchInitializationSignal(ctx, t, s)
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
	} {
		tests[name] = test
	}
	runSuite(t, tests, newLeanStore)
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
