package retention

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
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

// pager serves the objects of the fake metadata client page by page, as
// the apiserver does for a list with a limit (a continue token is the offset
// of the next page), records the options of every list request, and answers
// 410 Gone to the continue tokens that expire says have expired.
type pager struct {
	metadata.Interface

	mu sync.Mutex
	// lists are the options of the list requests, in order.
	lists []metav1.ListOptions
	// expire says whether list request n (from 0), which carries a
	// continue token, finds that token expired.
	expire func(n int) bool
}

func (p *pager) Resource(gvr schema.GroupVersionResource) metadata.Getter {
	return pagedResource{Getter: p.Interface.Resource(gvr), p: p}
}

func (p *pager) requests() []metav1.ListOptions {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lists)
}

type pagedResource struct {
	metadata.Getter
	p *pager
}

func (r pagedResource) List(ctx context.Context, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	r.p.mu.Lock()
	n := len(r.p.lists)
	r.p.lists = append(r.p.lists, opts)
	r.p.mu.Unlock()
	if opts.Continue != "" && r.p.expire != nil && r.p.expire(n) {
		return nil, apierrors.NewResourceExpired("The provided continue parameter is too old to display a consistent list result.")
	}
	all, err := r.Getter.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	items := all.Items
	slices.SortFunc(items, func(a, b metav1.PartialObjectMetadata) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	start := 0
	if opts.Continue != "" {
		if start, err = strconv.Atoi(opts.Continue); err != nil {
			return nil, apierrors.NewBadRequest("invalid continue token")
		}
	}
	end := len(items)
	if opts.Limit > 0 {
		end = min(end, start+int(opts.Limit))
	}
	page := &metav1.PartialObjectMetadataList{Items: items[start:end]}
	if end < len(items) {
		page.Continue = strconv.Itoa(end)
	}
	return page, nil
}

// pagedFixture is a fixture of 1201 objects, three pages, of which
// maxObjectsPerNamespace=1000 keeps the newest, listed through a pager.
func pagedFixture(t *testing.T, resource string, expire func(n int) bool) (*fixture, *pager) {
	t.Helper()
	f := newFixture(t, resource, v1alpha1.RetentionPolicy{MaxObjectsPerNamespace: ptr.To[int64](1000)}, 1201,
		Options{Interval: time.Minute, BatchSize: 1000, DeletesPerSecond: 1e6})
	p := &pager{Interface: f.md, expire: expire}
	f.r.Metadata = p
	return f, p
}

// checkPaged checks that every list request asked for a page of pageSize.
func checkPaged(t *testing.T, lists []metav1.ListOptions) {
	t.Helper()
	for i, opts := range lists {
		if opts.Limit != pageSize {
			t.Errorf("list request %d has limit %d (continue %q), want %d: every list must be paged", i, opts.Limit, opts.Continue, pageSize)
		}
	}
}

// describe shows the limit and continue token of each list request.
func describe(lists []metav1.ListOptions) string {
	var parts []string
	for _, opts := range lists {
		parts = append(parts, fmt.Sprintf("(limit %d, continue %q)", opts.Limit, opts.Continue))
	}
	return strings.Join(parts, " ")
}

// checkDeletedOldest checks that retention deleted exactly the 201 oldest
// objects, each on its UID, and kept the 1000 newest.
func checkDeletedOldest(t *testing.T, f *fixture) {
	t.Helper()
	var want []string
	for i := 1; i <= 201; i++ {
		want = append(want, fmt.Sprintf("r%02d@uid-%02d", i, i))
	}
	slices.Sort(want)
	if got := f.deletes(); !slices.Equal(got, want) {
		t.Errorf("deleted %d objects (%v...), want exactly the 201 oldest", len(got), got[:min(len(got), 5)])
	}
	kept := seq("r", 202, 1201)
	slices.Sort(kept)
	if got := f.remaining(); !slices.Equal(got, kept) {
		t.Errorf("%d objects left, want the 1000 newest", len(got))
	}
}

func TestListIsPaged(t *testing.T) {
	f, p := pagedFixture(t, "paged", nil)
	if next := f.reconcile(); next != time.Minute {
		t.Errorf("next pass in %v, want the interval", next)
	}
	lists := p.requests()
	checkPaged(t, lists)
	if len(lists) != 3 || lists[0].Continue != "" || lists[1].Continue == "" || lists[2].Continue == "" {
		t.Errorf("list requests %s, want three pages: the first without a continue token, the others with one", describe(lists))
	}
	checkDeletedOldest(t, f)
}

func TestExpiredContinueRestartsPaged(t *testing.T) {
	// The second request, the first with a continue token, finds it expired.
	f, p := pagedFixture(t, "expired", func(n int) bool { return n == 1 })
	if next := f.reconcile(); next != time.Minute {
		t.Errorf("next pass in %v, want the interval", next)
	}
	lists := p.requests()
	checkPaged(t, lists)
	// Page 1, page 2 (410), then from the beginning: pages 1, 2 and 3.
	if len(lists) != 5 || lists[2].Continue != "" || lists[3].Continue == "" || lists[4].Continue == "" {
		t.Errorf("list requests %s, want the list started again from the first page after the 410, and paged to its end", describe(lists))
	}
	if got, err := testutil.GetCounterMetricValue(listRestarts.WithLabelValues(f.gvr.Group, f.gvr.Resource)); err != nil || got != 1 {
		t.Errorf("list_restarts_total = %v (%v), want 1", got, err)
	}
	if got := f.counter("errors", ""); got != 0 {
		t.Errorf("errors_total = %v, want 0: a restarted list is no error", got)
	}
	checkDeletedOldest(t, f)
}

func TestContinueThatKeepsExpiringFailsThePass(t *testing.T) {
	f, p := pagedFixture(t, "alwaysexpired", func(int) bool { return true })
	if next := f.reconcile(); next != time.Minute {
		t.Errorf("after a failed list, the next pass is in %v, want the interval", next)
	}
	lists := p.requests()
	checkPaged(t, lists)
	// Each attempt reads the first page and finds the second's token
	// expired: the first attempt and maxListRestarts more.
	if want := 2 * (maxListRestarts + 1); len(lists) != want {
		t.Errorf("list requests %s, want %d", describe(lists), want)
	}
	if got := f.deletes(); len(got) != 0 {
		t.Errorf("a pass whose list never completed deleted %d objects, want none", len(got))
	}
	if got := f.counter("errors", ""); got != 1 {
		t.Errorf("errors_total = %v, want 1", got)
	}
}
