package usage

import (
	"context"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

const name = "things.example.com"

func newClient(t *testing.T, hr *v1alpha1.HostedResource) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(hr).WithStatusSubresource(hr).Build()
}

func established() *v1alpha1.HostedResource {
	return &v1alpha1.HostedResource{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Status: v1alpha1.HostedResourceStatus{Conditions: []metav1.Condition{{
			Type: v1alpha1.HostedResourceEstablished, Status: metav1.ConditionTrue, Reason: "InitialNamesAccepted", LastTransitionTime: metav1.Now(),
		}}},
	}
}

func reconcileOnce(t *testing.T, r *Reconciler) (reconcile.Result, *v1alpha1.HostedResource) {
	t.Helper()
	res, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	hr := &v1alpha1.HostedResource{}
	if err := r.Client.Get(context.Background(), client.ObjectKey{Name: name}, hr); err != nil {
		t.Fatal(err)
	}
	return res, hr
}

func TestReconcileCopiesTheCount(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stats storage.Stats
		count int64
		size  *int64
	}{
		{"counted and sized", storage.Stats{ObjectCount: 5, EstimatedAverageObjectSizeBytes: 100}, 5, ptr.To[int64](500)},
		{"empty", storage.Stats{}, 0, ptr.To[int64](0)},
		// The storage has counted the objects but not sized them yet.
		{"counted, not sized", storage.Stats{ObjectCount: 3}, 3, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked string
			r := &Reconciler{Client: newClient(t, established()), Interval: 11 * time.Second, Stats: func(resource string) (storage.Stats, error) {
				asked = resource
				return tc.stats, nil
			}}
			res, hr := reconcileOnce(t, r)
			if asked != name {
				t.Errorf("the storage was asked for %q, want %q", asked, name)
			}
			if res.RequeueAfter != 11*time.Second {
				t.Errorf("next count after %v, want the interval, 11s", res.RequeueAfter)
			}
			if got := ptr.Deref(hr.Status.ObjectCount, -1); got != tc.count {
				t.Errorf("objectCount = %d, want %d", got, tc.count)
			}
			if !ptr.Equal(hr.Status.EstimatedSizeBytes, tc.size) {
				t.Errorf("estimatedSizeBytes = %d, want %d (-1: none)", ptr.Deref(hr.Status.EstimatedSizeBytes, -1), ptr.Deref(tc.size, -1))
			}
			if len(hr.Status.Conditions) != 1 {
				t.Errorf("writing the count changed the conditions: %+v", hr.Status.Conditions)
			}
		})
	}
}

func TestReconcileWritesOnlyChanges(t *testing.T) {
	stats := storage.Stats{ObjectCount: 5, EstimatedAverageObjectSizeBytes: 100}
	r := &Reconciler{Client: newClient(t, established()), Stats: func(string) (storage.Stats, error) { return stats, nil }}
	_, hr := reconcileOnce(t, r)
	if res, again := reconcileOnce(t, r); again.ResourceVersion != hr.ResourceVersion || res.RequeueAfter != DefaultInterval {
		t.Errorf("an unchanged count: resourceVersion %s -> %s, next count after %v; want no write, and the default interval %v",
			hr.ResourceVersion, again.ResourceVersion, res.RequeueAfter, DefaultInterval)
	}
	stats.ObjectCount = 6
	if _, hr := reconcileOnce(t, r); ptr.Deref(hr.Status.ObjectCount, -1) != 6 || ptr.Deref(hr.Status.EstimatedSizeBytes, -1) != 600 {
		t.Errorf("after a change: objectCount %d, estimatedSizeBytes %d; want 6 and 600", ptr.Deref(hr.Status.ObjectCount, -1), ptr.Deref(hr.Status.EstimatedSizeBytes, -1))
	}
}

func TestReconcileWithoutACount(t *testing.T) {
	hr := established()
	hr.Status.ObjectCount = ptr.To[int64](9)
	r := &Reconciler{Client: newClient(t, hr), Stats: func(string) (storage.Stats, error) {
		return storage.Stats{}, errors.New("not counted yet")
	}}
	res, got := reconcileOnce(t, r)
	if res.RequeueAfter != DefaultInterval {
		t.Errorf("next count after %v, want %v", res.RequeueAfter, DefaultInterval)
	}
	if ptr.Deref(got.Status.ObjectCount, -1) != 9 {
		t.Errorf("objectCount = %d, want the last count, 9, kept while the storage has none", ptr.Deref(got.Status.ObjectCount, -1))
	}
}

func TestReconcileLeavesADeletedHostedResource(t *testing.T) {
	hr := established()
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	c := newClient(t, hr)
	if err := c.Delete(context.Background(), hr); err != nil {
		t.Fatal(err)
	}
	asked := false
	r := &Reconciler{Client: c, Stats: func(string) (storage.Stats, error) {
		asked = true
		return storage.Stats{ObjectCount: 1}, nil
	}}
	if res, got := reconcileOnce(t, r); res.RequeueAfter != 0 || asked || got.Status.ObjectCount != nil {
		t.Errorf("a HostedResource being deleted: requeue %v, storage asked %v, objectCount %v; want nothing done", res.RequeueAfter, asked, got.Status.ObjectCount)
	}
}
