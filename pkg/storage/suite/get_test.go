//go:build integration

package suite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/kubernetes"
	apitesting "k8s.io/apimachinery/pkg/api/apitesting"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/storage"

	"annex.dev/annex/pkg/storage/lean"
)

// TestLeanGetEncoded checks, on each store, the gets the lean cache answers
// from its encodings (lean.Storage.GetEncoded): the object as the store's
// get returns it, byte for byte once encoded; never older than a write
// acknowledged before the get, however soon after it, and from the cache
// when the get may wait for the cache's watch to bring the write; not from
// the cache while the store has moved on through writes the cache's watch
// does not see (other keys) and the get may not wait, and from the cache
// again once a progress notification has brought the cache there, which a
// get that may wait asks for and waits for; and nothing for an object the
// cache does not hold.
func TestLeanGetEncoded(t *testing.T) {
	ctx := context.Background()
	runSuite(t, map[string]suiteTest{"GetEncoded": func(t *testing.T, c *kubernetes.Client, _ storage.Interface) {
		s := newLeanStoreWith(t, c, false, leanOptions{})
		codec := apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)
		const key = "/pods/get/p1"
		pod := &example.Pod{}
		if err := s.Create(ctx, key, &example.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: "get"}}, pod, 0); err != nil {
			t.Fatal(err)
		}
		// served waits until the cache answers, and returns its answer.
		served := func(what string) *lean.EncodedObject {
			t.Helper()
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				obj, _, err := s.GetEncoded(ctx, key, 0)
				if err != nil {
					t.Fatal(err)
				}
				if obj != nil {
					return obj
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: the cache did not answer the get within 10 s", what)
				}
			}
		}

		// The object as the store's get returns it.
		obj := served("after the create")
		stored := &example.Pod{}
		if err := s.Get(ctx, key, storage.GetOptions{}, stored); err != nil {
			t.Fatal(err)
		}
		var got, want bytes.Buffer
		if err := (lean.JSONEncoder{}).Encode(obj, &got); err != nil {
			t.Fatal(err)
		}
		if err := codec.Encode(stored, &want); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("the cache's answer:\n%s\nthe store's get, encoded:\n%s", got.Bytes(), want.Bytes())
		}

		// Never older than an acknowledged write: each update is followed
		// at once by a get, answered from the cache or left to the store;
		// one that may wait is answered from the cache.
		fromCache, waited := 0, 0
		for i := range 50 {
			out := &example.Pod{}
			if err := s.GuaranteedUpdate(ctx, key, out, false, nil, func(input runtime.Object, _ storage.ResponseMeta) (runtime.Object, *uint64, error) {
				p := input.(*example.Pod).DeepCopy()
				p.Labels = map[string]string{"round": strconv.Itoa(i)}
				return p, nil, nil
			}, nil); err != nil {
				t.Fatal(err)
			}
			wait := time.Duration(0)
			if i%2 == 1 {
				wait = 10 * time.Second
			}
			obj, _, err := s.GetEncoded(ctx, key, wait)
			if err != nil {
				t.Fatal(err)
			}
			if obj == nil {
				if wait > 0 {
					t.Fatalf("round %d: a get that may wait %s right after an update was not answered from the cache", i, wait)
				}
				continue
			}
			if wait > 0 {
				waited++
			} else {
				fromCache++
			}
			if got, acked := rv(t, obj.ResourceVersion()), rv(t, out.ResourceVersion); got < acked {
				t.Fatalf("round %d: the cache answered resourceVersion %d after an update acknowledged at %d", i, got, acked)
			}
		}
		t.Logf("%d of 25 gets right after an update that may not wait were answered from the cache, %d of 25 that may", fromCache, waited)

		// The same from eight clients at once, each on an object of its
		// own, so that the gets share their reads of the store's revision.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for client := range 8 {
			wg.Go(func() {
				key := fmt.Sprintf("/pods/get/c%d", client)
				out := &example.Pod{}
				if err := s.Create(ctx, key, &example.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c%d", client), Namespace: "get"}}, out, 0); err != nil {
					errs <- err
					return
				}
				for i := range 30 {
					if err := s.GuaranteedUpdate(ctx, key, out, false, nil, func(input runtime.Object, _ storage.ResponseMeta) (runtime.Object, *uint64, error) {
						p := input.(*example.Pod).DeepCopy()
						p.Labels = map[string]string{"round": strconv.Itoa(i)}
						return p, nil, nil
					}, nil); err != nil {
						errs <- err
						return
					}
					obj, _, err := s.GetEncoded(ctx, key, 10*time.Second)
					if err != nil {
						errs <- err
						return
					}
					if obj == nil {
						errs <- fmt.Errorf("client %d, round %d: a get that may wait right after an update was not answered from the cache", client, i)
						return
					}
					got, err1 := strconv.ParseUint(obj.ResourceVersion(), 10, 64)
					acked, err2 := strconv.ParseUint(out.ResourceVersion, 10, 64)
					if err := errors.Join(err1, err2); err != nil {
						errs <- err
						return
					}
					if got < acked {
						errs <- fmt.Errorf("client %d, round %d: the cache answered resourceVersion %s after an update acknowledged at %s",
							client, i, obj.ResourceVersion(), out.ResourceVersion)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}

		// A write the cache's watch does not see: the store's revision moves
		// past the cache's, and the get is left to the store, until a
		// progress notification brings the cache there.
		served("before a write elsewhere")
		if _, err := c.KV.Put(ctx, "/elsewhere/x", "y"); err != nil {
			t.Fatal(err)
		}
		obj, stale, err := s.GetEncoded(ctx, key, 0)
		if err != nil || obj != nil || !stale {
			t.Fatalf("a get right after a write elsewhere: %v, stale %v, %v; want nothing from the cache, and stale", obj, stale, err)
		}
		served("after a write elsewhere")
		// A get that may wait asks for the progress notification, and
		// waits for it.
		if _, err := c.KV.Put(ctx, "/elsewhere/x", "z"); err != nil {
			t.Fatal(err)
		}
		obj, stale, err = s.GetEncoded(ctx, key, 10*time.Second)
		if err != nil || obj == nil || stale {
			t.Fatalf("a get that may wait, right after a write elsewhere: %v, stale %v, %v; want it from the cache", obj, stale, err)
		}

		// An object the cache does not hold.
		obj, stale, err = s.GetEncoded(ctx, "/pods/get/none", 10*time.Second)
		if err != nil || obj != nil || stale {
			t.Fatalf("a get of an object that does not exist: %v, stale %v, %v; want nothing, not stale", obj, stale, err)
		}
	}}, newLeanStore)
}

func rv(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(fmt.Errorf("resourceVersion %q: %w", s, err))
	}
	return v
}

// TestLeanCurrentResourceVersion checks, on each store, the lean cache's
// read of the store's current revision (a read of one key, where the
// store's own lists the resource with a limit of one): the same revision
// as the store's own read, with the resource empty, holding objects, and
// after writes of other keys and other types, and never older than the
// last acknowledged write.
func TestLeanCurrentResourceVersion(t *testing.T) {
	ctx := context.Background()
	runSuite(t, map[string]suiteTest{"CurrentResourceVersion": func(t *testing.T, c *kubernetes.Client, _ storage.Interface) {
		s, raw := newLeanStoreWith(t, c, false, leanOptions{}), newStore(t, c)
		same := func(what string, acked uint64) {
			t.Helper()
			want, err := raw.GetCurrentResourceVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.GetCurrentResourceVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s: the lean cache read the store's revision as %d, the store's own read %d", what, got, want)
			}
			if got < acked {
				t.Errorf("%s: the lean cache read the store's revision as %d after a write acknowledged at %d", what, got, acked)
			}
		}
		put := func(key, value string) uint64 {
			t.Helper()
			resp, err := c.KV.Put(ctx, key, value)
			if err != nil {
				t.Fatal(err)
			}
			return uint64(resp.Header.Revision)
		}
		same("with the resource empty", put("/elsewhere/first", "x"))
		var acked uint64
		for i := range 5 {
			out := &example.Pod{}
			name := fmt.Sprintf("p%d", i)
			if err := s.Create(ctx, "/pods/rv/"+name, &example.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "rv"}}, out, 0); err != nil {
				t.Fatal(err)
			}
			acked = rv(t, out.ResourceVersion)
		}
		same("after creates", acked)
		same("after a write of another type", put("/elsewhere/x", "y"))
		same("after a write next to the resource's prefix", put("/pods", "z"))
	}}, newLeanStore)
}
