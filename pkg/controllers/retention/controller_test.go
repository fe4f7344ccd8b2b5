package retention

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/routing"
)

// fixture is a reconciler over one hosted type, with a fake clock, the
// HostedResource in a fake client and the objects in a fake metadata client.
type fixture struct {
	t     *testing.T
	r     *Reconciler
	hr    *v1alpha1.HostedResource
	md    *metadatafake.FakeMetadataClient
	gvr   schema.GroupVersionResource
	clock time.Time
}

// fixtures numbers the fixtures, so that each has a type of its own and the
// metrics of one (global, as in annex) do not count in another.
var fixtures int

// newFixture hosts the namespaced type <resource><n>.example.com with objects
// r01..r<count> in namespace a, r01 the oldest.
func newFixture(t *testing.T, resource string, policy v1alpha1.RetentionPolicy, count int, opts Options) *fixture {
	t.Helper()
	RegisterMetrics()
	fixtures++
	resource = fmt.Sprintf("%s%d", resource, fixtures)
	gvr := schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: resource}
	hr := &v1alpha1.HostedResource{
		ObjectMeta: metav1.ObjectMeta{Name: resource + ".example.com", UID: "hr-uid", Generation: 1},
		Spec: v1alpha1.HostedResourceSpec{
			Group: "example.com",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: resource, Kind: "Thing"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{
				{Name: "v1beta1", Served: true},
				{Name: "v1", Served: true, Storage: true},
			},
			Storage: v1alpha1.HostedResourceStorage{Backend: annex.DefaultStorageBackend, Retention: &policy},
		},
		Status: v1alpha1.HostedResourceStatus{Conditions: []metav1.Condition{{
			Type: v1alpha1.HostedResourceEstablished, Status: metav1.ConditionTrue, Reason: "Established", LastTransitionTime: metav1.Now(),
		}}},
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, hr: hr, gvr: gvr, clock: now}
	var objects []runtime.Object
	for i := 1; i <= count; i++ {
		objects = append(objects, &metav1.PartialObjectMetadata{
			TypeMeta: metav1.TypeMeta{APIVersion: "example.com/v1", Kind: "Thing"},
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "a", Name: fmt.Sprintf("r%02d", i), UID: types.UID(fmt.Sprintf("uid-%02d", i)),
				CreationTimestamp: metav1.NewTime(now.Add(time.Duration(i-count) * time.Minute)),
			},
		})
	}
	mdScheme := metadatafake.NewTestScheme()
	mdScheme.AddKnownTypeWithName(schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Thing"}, &metav1.PartialObjectMetadata{})
	mdScheme.AddKnownTypeWithName(schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "ThingList"}, &metav1.PartialObjectMetadataList{})
	f.md = metadatafake.NewSimpleMetadataClient(mdScheme)
	for _, o := range objects {
		// Under the type's resource, which the fake would not guess from the kind.
		if err := f.md.Tracker().Create(gvr, o, "a"); err != nil {
			t.Fatal(err)
		}
	}
	f.r = &Reconciler{
		Client:   fake.NewClientBuilder().WithScheme(scheme).WithObjects(hr).Build(),
		Metadata: f.md,
		Options:  opts,
		now:      func() time.Time { return f.clock },
	}
	f.r.init()
	return f
}

// reconcile runs the reconciler once and returns how long until it wants to run again.
func (f *fixture) reconcile() time.Duration {
	f.t.Helper()
	res, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: f.hr.Name}})
	if err != nil {
		f.t.Fatalf("Reconcile: %v", err)
	}
	return res.RequeueAfter
}

// remaining lists the names of the objects left in namespace a.
func (f *fixture) remaining() []string {
	f.t.Helper()
	list, err := f.md.Resource(f.gvr).Namespace("a").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	var names []string
	for _, o := range list.Items {
		names = append(names, o.Name)
	}
	slices.Sort(names)
	return names
}

// deletes returns the deletes the fake metadata client saw, with the UID
// each one was conditioned on.
func (f *fixture) deletes() []string {
	var out []string
	for _, a := range f.md.Actions() {
		d, ok := a.(clienttesting.DeleteActionImpl)
		if !ok {
			continue
		}
		uid := "none"
		if p := d.DeleteOptions.Preconditions; p != nil && p.UID != nil {
			uid = string(*p.UID)
		}
		out = append(out, d.Name+"@"+uid)
	}
	slices.Sort(out)
	return out
}

func (f *fixture) counter(name, reason string) float64 {
	f.t.Helper()
	var v float64
	var err error
	switch name {
	case "deleted":
		v, err = testutil.GetCounterMetricValue(deletedObjects.WithLabelValues(f.gvr.Group, f.gvr.Resource, reason))
	case "skipped":
		v, err = testutil.GetCounterMetricValue(skippedObjects.WithLabelValues(f.gvr.Group, f.gvr.Resource, reason))
	case "errors":
		v, err = testutil.GetCounterMetricValue(errorsTotal.WithLabelValues(f.gvr.Group, f.gvr.Resource))
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func (f *fixture) backlog() float64 {
	f.t.Helper()
	v, err := testutil.GetGaugeMetricValue(backlogObjects.WithLabelValues(f.gvr.Group, f.gvr.Resource))
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func seq(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%02d", prefix, i))
	}
	return out
}

func TestBatchesAndSchedule(t *testing.T) {
	f := newFixture(t, "batched", v1alpha1.RetentionPolicy{MaxObjectsPerNamespace: ptr.To[int64](2)}, 10,
		Options{Interval: time.Minute, BatchSize: 3, DeletesPerSecond: 10000})

	// 8 objects are over the bound; a pass deletes 3, the oldest, and comes back in a second.
	if next := f.reconcile(); next != backlogDelay {
		t.Errorf("after a cut batch, the next pass is in %v, want %v", next, backlogDelay)
	}
	if got, want := f.remaining(), seq("r", 4, 10); !slices.Equal(got, want) {
		t.Errorf("after the first pass: %v, want %v", got, want)
	}
	if got := f.backlog(); got != 5 {
		t.Errorf("backlog = %v, want 5", got)
	}
	// An event before the pass is due runs none.
	f.clock = f.clock.Add(backlogDelay / 2)
	if next := f.reconcile(); next != backlogDelay/2 {
		t.Errorf("woken early, the reconciler waits %v, want %v", next, backlogDelay/2)
	}
	if got := len(f.remaining()); got != 7 {
		t.Errorf("a pass ran before it was due: %d objects left, want 7", got)
	}

	f.clock = f.clock.Add(backlogDelay / 2)
	f.reconcile()
	f.clock = f.clock.Add(backlogDelay)
	if next := f.reconcile(); next != time.Minute {
		t.Errorf("after the last batch, the next pass is in %v, want the interval", next)
	}
	if got, want := f.remaining(), []string{"r09", "r10"}; !slices.Equal(got, want) {
		t.Errorf("after three passes: %v, want %v", got, want)
	}
	if got := f.backlog(); got != 0 {
		t.Errorf("backlog = %v, want 0", got)
	}
	if got := f.counter("deleted", "maxObjects"); got != 8 {
		t.Errorf("deleted{reason=maxObjects} = %v, want 8", got)
	}
	want := []string{}
	for i := 1; i <= 8; i++ {
		want = append(want, fmt.Sprintf("r%02d@uid-%02d", i, i))
	}
	if got := f.deletes(); !slices.Equal(got, want) {
		t.Errorf("deletes (name@UID precondition) = %v, want %v", got, want)
	}

	// A change of the policy runs a pass at once.
	f.clock = f.clock.Add(time.Second)
	if next := f.reconcile(); next != time.Minute-time.Second {
		t.Errorf("the next pass is in %v, want %v", next, time.Minute-time.Second)
	}
	f.hr.Generation = 2
	f.hr.Spec.Storage.Retention.MaxObjectsPerNamespace = ptr.To[int64](1)
	if err := f.r.Client.Update(context.Background(), f.hr); err != nil {
		t.Fatal(err)
	}
	f.reconcile()
	if got, want := f.remaining(), []string{"r10"}; !slices.Equal(got, want) {
		t.Errorf("after the policy changed to 1: %v, want %v", got, want)
	}
}

func TestDeleteOutcomes(t *testing.T) {
	f := newFixture(t, "outcomes", v1alpha1.RetentionPolicy{MaxAge: &metav1.Duration{Duration: 90 * time.Second}}, 8,
		Options{Interval: time.Minute, BatchSize: 100, DeletesPerSecond: 10000})
	// r01..r06 are older than 90s. Someone deleted r01 meanwhile, r02 was
	// replaced by a new object of the same name, and a webhook refuses to
	// let r03 go; r04..r06 are deleted.
	gr := f.gvr.GroupResource()
	f.md.PrependReactor("delete", f.gvr.Resource, func(a clienttesting.Action) (bool, runtime.Object, error) {
		switch a.(clienttesting.DeleteAction).GetName() {
		case "r01":
			return true, nil, apierrors.NewNotFound(gr, "r01")
		case "r02":
			return true, nil, apierrors.NewConflict(gr, "r02", fmt.Errorf("the UID in the precondition does not match"))
		case "r03":
			return true, nil, apierrors.NewForbidden(gr, "r03", fmt.Errorf("admission webhook denied the request"))
		}
		return false, nil, nil
	})
	if next := f.reconcile(); next != time.Minute {
		t.Errorf("next pass in %v, want the interval", next)
	}
	if got, want := f.remaining(), []string{"r01", "r02", "r03", "r07", "r08"}; !slices.Equal(got, want) {
		t.Errorf("left: %v, want %v", got, want)
	}
	for _, c := range []struct {
		name, reason string
		want         float64
	}{
		{"deleted", "maxAge", 3}, {"deleted", "maxObjects", 0},
		{"skipped", "NotFound", 1}, {"skipped", "Conflict", 1}, {"errors", "", 1},
	} {
		if got := f.counter(c.name, c.reason); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.reason, got, c.want)
		}
	}
	// r03 is still past maxAge: the backlog counts it.
	if got := f.backlog(); got != 1 {
		t.Errorf("backlog = %v, want 1", got)
	}
}

func TestServerErrorStopsThePass(t *testing.T) {
	f := newFixture(t, "overloaded", v1alpha1.RetentionPolicy{MaxObjectsPerNamespace: ptr.To[int64](1)}, 50,
		Options{Interval: time.Minute, BatchSize: 100, DeletesPerSecond: 10000})
	var mu sync.Mutex
	calls := 0
	f.md.PrependReactor("delete", f.gvr.Resource, func(a clienttesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return true, nil, apierrors.NewTooManyRequests("slow down", 1)
	})
	// The next pass waits the whole interval, not the backlog's second.
	if next := f.reconcile(); next != time.Minute {
		t.Errorf("after a throttled pass, the next is in %v, want the interval", next)
	}
	if calls > workers {
		t.Errorf("the pass went on after being throttled: %d deletes sent, want at most %d (those in flight)", calls, workers)
	}
	if got := f.backlog(); got != 49 {
		t.Errorf("backlog = %v, want 49", got)
	}
}

func TestNothingToDo(t *testing.T) {
	for name, mutate := range map[string]func(*v1alpha1.HostedResource){
		"no retention":    func(hr *v1alpha1.HostedResource) { hr.Spec.Storage.Retention = nil },
		"empty retention": func(hr *v1alpha1.HostedResource) { hr.Spec.Storage.Retention = &v1alpha1.RetentionPolicy{} },
		"not established": func(hr *v1alpha1.HostedResource) { hr.Status.Conditions[0].Status = metav1.ConditionFalse },
		"no served version": func(hr *v1alpha1.HostedResource) {
			hr.Spec.Versions[0].Served, hr.Spec.Versions[1].Served = false, false
		},
		"being deleted":       func(hr *v1alpha1.HostedResource) { hr.DeletionTimestamp = ptr.To(metav1.Now()) },
		"condition not found": func(hr *v1alpha1.HostedResource) { hr.Status.Conditions = nil },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, "idle", v1alpha1.RetentionPolicy{MaxObjectsPerNamespace: ptr.To[int64](1)}, 0, Options{})
			mutate(f.hr)
			if _, ok := targetOf(f.hr); ok {
				t.Error("retention would run")
			}
		})
	}
}

func TestServedVersion(t *testing.T) {
	v := func(name string, served, storage bool) apiextensionsv1.CustomResourceDefinitionVersion {
		return apiextensionsv1.CustomResourceDefinitionVersion{Name: name, Served: served, Storage: storage}
	}
	for _, tc := range []struct {
		versions []apiextensionsv1.CustomResourceDefinitionVersion
		want     string
	}{
		{[]apiextensionsv1.CustomResourceDefinitionVersion{v("v1alpha1", true, false), v("v1", true, true)}, "v1"},
		{[]apiextensionsv1.CustomResourceDefinitionVersion{v("v1alpha1", false, false), v("v1beta1", true, false), v("v1", false, true)}, "v1beta1"},
		{[]apiextensionsv1.CustomResourceDefinitionVersion{v("v1", false, true)}, ""},
	} {
		if got := routing.ServedVersion(tc.versions); got != tc.want {
			t.Errorf("ServedVersion(%v) = %q, want %q", tc.versions, got, tc.want)
		}
	}
}
