package backendready

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

func newClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.HostedResource{}, &v1alpha1.StorageBackend{}).Build()
}

func hostedResource(name, backend string) *v1alpha1.HostedResource {
	return &v1alpha1.HostedResource{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec:       v1alpha1.HostedResourceSpec{Group: "example.com", Storage: v1alpha1.HostedResourceStorage{Backend: backend}},
	}
}

func storageBackend(name string, ready *metav1.Condition) *v1alpha1.StorageBackend {
	sb := &v1alpha1.StorageBackend{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if ready != nil {
		sb.Status.Conditions = []metav1.Condition{*ready}
	}
	return sb
}

func TestReconcile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend string
		sb      *v1alpha1.StorageBackend
		status  metav1.ConditionStatus
		reason  string
		message string
	}{
		{
			name: "default store", backend: annex.DefaultStorageBackend,
			status: metav1.ConditionTrue, reason: v1alpha1.ReasonDefaultStore,
			message: "annex stores this type in its default store, the one given on its command line",
		},
		{
			name: "missing backend", backend: "fast",
			status: metav1.ConditionFalse, reason: v1alpha1.ReasonStorageBackendNotFound,
			message: `StorageBackend "fast" does not exist`,
		},
		{
			name: "backend not probed yet", backend: "fast", sb: storageBackend("fast", nil),
			status: metav1.ConditionUnknown, reason: v1alpha1.ReasonStorageBackendPending,
			message: `StorageBackend "fast" has not been probed yet`,
		},
		{
			name: "backend not ready", backend: "fast",
			sb: storageBackend("fast", &metav1.Condition{
				Type: v1alpha1.StorageBackendReady, Status: metav1.ConditionFalse, Reason: "Unreachable", Message: "dial tcp: connection refused",
			}),
			status: metav1.ConditionFalse, reason: v1alpha1.ReasonStorageBackendNotReady,
			message: `StorageBackend "fast" is not ready (Unreachable): dial tcp: connection refused`,
		},
		{
			name: "backend ready", backend: "fast",
			sb: storageBackend("fast", &metav1.Condition{
				Type: v1alpha1.StorageBackendReady, Status: metav1.ConditionTrue, Reason: "Reachable", Message: "etcd 3.6 answers",
			}),
			status: metav1.ConditionTrue, reason: v1alpha1.ReasonStorageBackendReady,
			message: `annex stores this type in StorageBackend "fast": etcd 3.6 answers`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := []client.Object{hostedResource("things.example.com", tc.backend)}
			if tc.sb != nil {
				objs = append(objs, tc.sb)
			}
			c := newClient(t, objs...)
			r := &Reconciler{Client: c}
			if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: "things.example.com"}}); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			hr := &v1alpha1.HostedResource{}
			if err := c.Get(context.Background(), client.ObjectKey{Name: "things.example.com"}, hr); err != nil {
				t.Fatal(err)
			}
			got := meta.FindStatusCondition(hr.Status.Conditions, v1alpha1.HostedResourceStorageBackendReady)
			if got == nil {
				t.Fatalf("no %s condition: %+v", v1alpha1.HostedResourceStorageBackendReady, hr.Status.Conditions)
			}
			if got.Status != tc.status || got.Reason != tc.reason || got.Message != tc.message {
				t.Errorf("StorageBackendReady = %s/%s %q, want %s/%s %q", got.Status, got.Reason, got.Message, tc.status, tc.reason, tc.message)
			}
			if len(hr.Status.Conditions) != 1 {
				t.Errorf("conditions = %+v, want StorageBackendReady only", hr.Status.Conditions)
			}
		})
	}
}

func TestReconcileLeavesADeletedHostedResource(t *testing.T) {
	hr := hostedResource("things.example.com", "fast")
	hr.Finalizers = []string{v1alpha1.HostedResourceFinalizer}
	c := newClient(t, hr)
	if err := c.Delete(context.Background(), hr); err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{Client: c}
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: hr.Name}}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	got := &v1alpha1.HostedResource{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(hr), got); err != nil {
		t.Fatal(err)
	}
	if len(got.Status.Conditions) != 0 {
		t.Errorf("a HostedResource being deleted got conditions %+v", got.Status.Conditions)
	}
}

func TestNamingBackend(t *testing.T) {
	c := newClient(t,
		hostedResource("a.example.com", "fast"),
		hostedResource("b.example.com", annex.DefaultStorageBackend),
		hostedResource("c.example.com", "fast"),
	)
	r := &Reconciler{Client: c}
	got := r.namingBackend(context.Background(), storageBackend("fast", nil))
	want := []reconcile.Request{
		{NamespacedName: client.ObjectKey{Name: "a.example.com"}},
		{NamespacedName: client.ObjectKey{Name: "c.example.com"}},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("a change of StorageBackend fast wakes %v, want %v", got, want)
	}
}
