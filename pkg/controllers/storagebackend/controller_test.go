package storagebackend

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/backend"
)

// prober answers every probe with result, and counts the probes.
type prober struct {
	result backend.Result
	probes int
}

func (p *prober) Probe(context.Context, *v1alpha1.StorageBackend) backend.Result {
	p.probes++
	return p.result
}

var reachable = backend.Result{Ready: true, Reason: "Reachable", Message: "etcd answers", SizeBytes: ptr.To[int64](4096)}

type fixture struct {
	t      *testing.T
	r      *Reconciler
	prober *prober
}

func newFixture(t *testing.T, result backend.Result, objs ...client.Object) *fixture {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.StorageBackend{}, &v1alpha1.HostedResource{}).Build()
	p := &prober{result: result}
	return &fixture{t: t, prober: p, r: &Reconciler{Client: c, Prober: p, Interval: 7 * time.Second}}
}

func (f *fixture) reconcile() reconcile.Result {
	f.t.Helper()
	res, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: "fast"}})
	if err != nil {
		f.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

// storageBackend returns StorageBackend fast, or nil once it is gone.
func (f *fixture) storageBackend() *v1alpha1.StorageBackend {
	f.t.Helper()
	sb := &v1alpha1.StorageBackend{}
	err := f.r.Client.Get(context.Background(), client.ObjectKey{Name: "fast"}, sb)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return sb
}

func fast() *v1alpha1.StorageBackend {
	return &v1alpha1.StorageBackend{
		ObjectMeta: metav1.ObjectMeta{Name: "fast", Generation: 2},
		Spec:       v1alpha1.StorageBackendSpec{Type: v1alpha1.StorageBackendEtcd, Etcd: &v1alpha1.EtcdStorage{Endpoints: []string{"https://etcd:2379"}}},
	}
}

func hostedResource(name, backend string, objects int64) *v1alpha1.HostedResource {
	return &v1alpha1.HostedResource{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.HostedResourceSpec{Storage: v1alpha1.HostedResourceStorage{Backend: backend}},
		Status:     v1alpha1.HostedResourceStatus{ObjectCount: ptr.To(objects)},
	}
}

func TestReconcileReportsTheProbe(t *testing.T) {
	for _, tc := range []struct {
		name   string
		result backend.Result
		status metav1.ConditionStatus
	}{
		{"ready", reachable, metav1.ConditionTrue},
		{"not ready", backend.Result{Reason: "Unreachable", Message: "dial tcp: connection refused"}, metav1.ConditionFalse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.result, fast())
			if res := f.reconcile(); res.RequeueAfter != 7*time.Second {
				t.Errorf("next probe after %v, want the interval, 7s", res.RequeueAfter)
			}
			sb := f.storageBackend()
			ready := meta.FindStatusCondition(sb.Status.Conditions, v1alpha1.StorageBackendReady)
			if ready == nil || ready.Status != tc.status || ready.Reason != tc.result.Reason || ready.Message != tc.result.Message || ready.ObservedGeneration != 2 {
				t.Errorf("Ready = %+v, want %s/%s %q at generation 2", ready, tc.status, tc.result.Reason, tc.result.Message)
			}
			if !ptr.Equal(sb.Status.SizeBytes, tc.result.SizeBytes) {
				t.Errorf("sizeBytes = %v, want %v", ptr.Deref(sb.Status.SizeBytes, -1), ptr.Deref(tc.result.SizeBytes, -1))
			}
			if sb.Status.ObservedGeneration != 2 {
				t.Errorf("observedGeneration = %d, want 2", sb.Status.ObservedGeneration)
			}
			if len(sb.Finalizers) != 0 {
				t.Errorf("a StorageBackend nobody uses got finalizers %v", sb.Finalizers)
			}
		})
	}
}

func TestReconcileReportsHowTheStoreIsReached(t *testing.T) {
	for _, tc := range []struct {
		name       string
		connection *backend.Connection
		status     metav1.ConditionStatus
		reason     string
		message    string
	}{
		{"over TLS", &backend.Connection{Message: "annex reaches every endpoint over TLS"}, metav1.ConditionTrue, v1alpha1.ReasonTLS, "annex reaches every endpoint over TLS"},
		{"plaintext allowed", &backend.Connection{Plaintext: true, Message: "spec.etcd.insecure allows plaintext: annex reaches http://etcd:2379 without TLS, unencrypted"},
			metav1.ConditionFalse, v1alpha1.ReasonPlaintext, "spec.etcd.insecure allows plaintext: annex reaches http://etcd:2379 without TLS, unencrypted"},
		{"not known", nil, metav1.ConditionUnknown, v1alpha1.ReasonNotChecked, "the Ready condition says why"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			result := reachable
			result.Connection = tc.connection
			f := newFixture(t, result, fast())
			f.reconcile()
			secure := meta.FindStatusCondition(f.storageBackend().Status.Conditions, v1alpha1.StorageBackendSecure)
			if secure == nil || secure.Status != tc.status || secure.Reason != tc.reason || !strings.Contains(secure.Message, tc.message) || secure.ObservedGeneration != 2 {
				t.Errorf("Secure = %+v, want %s/%s saying %q at generation 2", secure, tc.status, tc.reason, tc.message)
			}
		})
	}
}

func TestReconcileWritesOnlyChanges(t *testing.T) {
	f := newFixture(t, reachable, fast())
	f.reconcile()
	before := f.storageBackend().ResourceVersion
	f.reconcile()
	if f.prober.probes != 2 {
		t.Errorf("%d probes, want one per reconcile", f.prober.probes)
	}
	if after := f.storageBackend().ResourceVersion; after != before {
		t.Errorf("the same probe result was written again (resourceVersion %s -> %s)", before, after)
	}
}

func TestReconcileHoldsABackendInUse(t *testing.T) {
	crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{
		Name: "moving.example.com", Labels: map[string]string{v1alpha1.HostedResourceLabel: "moving.example.com"},
		Annotations: map[string]string{v1alpha1.StorageBackendAnnotation: "fast"},
	}}
	f := newFixture(t, reachable, fast(),
		hostedResource("a.example.com", "fast", 3),
		hostedResource("b.example.com", "fast", 4),
		hostedResource("other.example.com", "", 100),
		// Moving away from fast: its type is still bound there.
		hostedResource("moving.example.com", "", 0), crd,
	)
	f.reconcile()
	sb := f.storageBackend()
	if !slices.Contains(sb.Finalizers, v1alpha1.StorageBackendInUseFinalizer) {
		t.Errorf("finalizers = %v, want %s on a backend in use", sb.Finalizers, v1alpha1.StorageBackendInUseFinalizer)
	}
	if got := ptr.Deref(sb.Status.ObjectCount, -1); got != 7 {
		t.Errorf("objectCount = %d, want 7, the objects of the types that name the backend", got)
	}

	// Deleting it waits for its users, and says so.
	if err := f.r.Client.Delete(context.Background(), sb); err != nil {
		t.Fatal(err)
	}
	f.reconcile()
	sb = f.storageBackend()
	if sb == nil {
		t.Fatal("a StorageBackend in use was deleted")
	}
	deleting := meta.FindStatusCondition(sb.Status.Conditions, v1alpha1.StorageBackendDeleting)
	want := "the deletion waits until no HostedResource keeps objects here; in use by a.example.com, b.example.com, moving.example.com"
	if deleting == nil || deleting.Status != metav1.ConditionTrue || deleting.Reason != v1alpha1.ReasonInUse || deleting.Message != want {
		t.Errorf("Deleting = %+v, want True/%s %q", deleting, v1alpha1.ReasonInUse, want)
	}
}

func TestReconcileReleasesABackendNoLongerInUse(t *testing.T) {
	sb := fast()
	sb.Finalizers = []string{v1alpha1.StorageBackendInUseFinalizer}
	f := newFixture(t, reachable, sb)
	if err := f.r.Client.Delete(context.Background(), sb); err != nil {
		t.Fatal(err)
	}
	f.reconcile()
	if sb := f.storageBackend(); sb != nil {
		t.Errorf("a deleted StorageBackend that nobody uses is kept: finalizers %v", sb.Finalizers)
	}
	if f.prober.probes != 0 {
		t.Errorf("a released StorageBackend was probed %d times", f.prober.probes)
	}
}

func TestReconcileReleasesAnUnusedBackend(t *testing.T) {
	sb := fast()
	sb.Finalizers = []string{v1alpha1.StorageBackendInUseFinalizer}
	f := newFixture(t, reachable, sb)
	f.reconcile()
	if got := f.storageBackend().Finalizers; len(got) != 0 {
		t.Errorf("finalizers = %v, want none on a backend nobody uses", got)
	}
}
