//go:build integration

package suite

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"go.etcd.io/etcd/client/v3/kubernetes"
	apitesting "k8s.io/apimachinery/pkg/api/apitesting"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// annex builds it for a hosted type (with the write memo); clusterScoped
// keys them by name alone.
func newLeanStore(t *testing.T, c *kubernetes.Client, clusterScoped bool) storage.Interface {
	t.Helper()
	return newLeanStoreWithCodec(t, c, clusterScoped, apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion))
}

// newLeanStoreWithCodec is newLeanStore with the codec its store encodes
// and decodes with.
func newLeanStoreWithCodec(t *testing.T, c *kubernetes.Client, clusterScoped bool, storeCodec runtime.Codec) *lean.Storage {
	t.Helper()
	keyFunc := func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc("/pods/", obj) }
	if clusterScoped {
		keyFunc = func(obj runtime.Object) (string, error) { return storage.NoNamespaceKeyFunc("/pods/", obj) }
	}
	codec := apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)
	memo := lean.NewWriteMemo()
	s, err := lean.New(lean.Config{
		Storage:             newStoreWithCodec(t, c, memo.Codec(storeCodec)),
		Memo:                memo,
		Codec:               codec,
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

// watchDecodes counts the decodings of the store's watch, which decodes
// into nothing.
type watchDecodes struct {
	runtime.Codec
	n atomic.Int64
}

func (c *watchDecodes) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if into == nil {
		c.n.Add(1)
	}
	return c.Codec.Decode(data, defaults, into)
}

// TestLeanWriteMemo checks, on each store, that the cache takes events of
// writes made through it from the writes' own decodings, instead of
// decoding them a second time. The watch takes a write's decoding only
// when the write has finished before the watch comes to its event, as
// when writes come faster than the watch decodes; so the writes here come
// from several clients at once.
func TestLeanWriteMemo(t *testing.T) {
	ctx := context.Background()
	const clients, pods = 8, 40
	runSuite(t, map[string]suiteTest{"WriteMemo": func(t *testing.T, c *kubernetes.Client, _ storage.Interface) {
		counter := &watchDecodes{Codec: apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)}
		s := newLeanStoreWithCodec(t, c, false, counter)
		var last atomic.Uint64
		var wg sync.WaitGroup
		errs := make(chan error, pods)
		for client := range clients {
			wg.Go(func() {
				for i := client; i < pods; i += clients {
					key := fmt.Sprintf("/pods/memo/p%d", i)
					out := &example.Pod{}
					pod := &example.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "memo"}}
					if err := s.Create(ctx, key, pod, out, 0); err != nil {
						errs <- err
						return
					}
					if err := s.GuaranteedUpdate(ctx, key, out, false, nil, func(input runtime.Object, _ storage.ResponseMeta) (runtime.Object, *uint64, error) {
						p := input.(*example.Pod)
						p.Spec.NodeName = "node-1"
						return p, nil, nil
					}, nil); err != nil {
						errs <- err
						return
					}
					rv, err := strconv.ParseUint(out.ResourceVersion, 10, 64)
					if err != nil {
						errs <- err
						return
					}
					for seen := last.Load(); rv > seen && !last.CompareAndSwap(seen, rv); seen = last.Load() {
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		lastRV := strconv.FormatUint(last.Load(), 10)
		// The cache has seen every write once it serves the last one.
		list := &example.PodList{}
		if err := s.GetList(ctx, "/pods/memo/", storage.ListOptions{
			ResourceVersion: lastRV, ResourceVersionMatch: metav1.ResourceVersionMatchExact, Recursive: true, Predicate: storage.Everything,
		}, list); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != pods {
			t.Fatalf("the cache holds %d pods, want %d", len(list.Items), pods)
		}
		for _, p := range list.Items {
			if p.Spec.NodeName != "node-1" {
				t.Errorf("the cache holds %s without its update", p.Name)
			}
		}
		n := counter.n.Load()
		t.Logf("the store's watch decoded %d of the %d events of writes made through the cache", n, 2*pods)
		if n >= 2*pods {
			t.Errorf("the store's watch decoded every one of the %d events of writes made through the cache", 2*pods)
		}
	}}, newLeanStore)
}
