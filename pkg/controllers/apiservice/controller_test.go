package apiservice

import (
	"context"
	"errors"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/clustergroups"
)

var target = Target{Namespace: "annex-system", Name: "annex", Port: 8443, CABundle: []byte("annex CA"), ManagedBy: "annex-system.annex"}

// fixture is the reconciler between a fake annex and a fake cluster.
type fixture struct {
	t *testing.T
	r *Reconciler
}

func newFixture(t *testing.T, hrs []client.Object, cluster ...client.Object) *fixture {
	t.Helper()
	return newFixtureWith(t, interceptor.Funcs{}, hrs, cluster...)
}

// newFixtureWith is newFixture with the cluster's client calls passed
// through funcs.
func newFixtureWith(t *testing.T, funcs interceptor.Funcs, hrs []client.Object, cluster ...client.Object) *fixture {
	t.Helper()
	annexScheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(annexScheme); err != nil {
		t.Fatal(err)
	}
	clusterScheme := runtime.NewScheme()
	if err := apiregistrationv1.AddToScheme(clusterScheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(clusterScheme); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, r: &Reconciler{
		Annex:   fake.NewClientBuilder().WithScheme(annexScheme).WithObjects(hrs...).WithStatusSubresource(&v1alpha1.HostedResource{}).Build(),
		Cluster: fake.NewClientBuilder().WithScheme(clusterScheme).WithObjects(cluster...).WithInterceptorFuncs(funcs).Build(),
		Target:  target,
	}}
}

func (f *fixture) reconcile() {
	f.t.Helper()
	if _, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: "hosted-groups"}}); err != nil {
		f.t.Fatalf("Reconcile: %v", err)
	}
}

// apiService returns the cluster's APIService name, or nil.
func (f *fixture) apiService(name string) *apiregistrationv1.APIService {
	f.t.Helper()
	svc := &apiregistrationv1.APIService{}
	err := f.r.Cluster.Get(context.Background(), client.ObjectKey{Name: name}, svc)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return svc
}

// available returns the APIServiceAvailable condition of HostedResource name.
func (f *fixture) available(name string) metav1.Condition {
	f.t.Helper()
	hr := &v1alpha1.HostedResource{}
	if err := f.r.Annex.Get(context.Background(), client.ObjectKey{Name: name}, hr); err != nil {
		f.t.Fatal(err)
	}
	c := meta.FindStatusCondition(hr.Status.Conditions, v1alpha1.HostedResourceAPIServiceAvailable)
	if c == nil {
		f.t.Fatalf("HostedResource %s has no %s condition: %+v", name, v1alpha1.HostedResourceAPIServiceAvailable, hr.Status.Conditions)
	}
	return *c
}

func (f *fixture) wantAvailable(name string, status metav1.ConditionStatus, reason, message string) {
	f.t.Helper()
	if c := f.available(name); c.Status != status || c.Reason != reason || c.Message != message {
		f.t.Errorf("APIServiceAvailable of %s = %s/%s %q, want %s/%s %q", name, c.Status, c.Reason, c.Message, status, reason, message)
	}
}

func hostedResource(plural, group string, versions ...string) *v1alpha1.HostedResource {
	hr := &v1alpha1.HostedResource{
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + group, Generation: 1},
		Spec:       v1alpha1.HostedResourceSpec{Group: group},
	}
	for _, v := range versions {
		served := v[len(v)-1] != '-'
		if !served {
			v = v[:len(v)-1]
		}
		hr.Spec.Versions = append(hr.Spec.Versions, apiextensionsv1.CustomResourceDefinitionVersion{Name: v, Served: served})
	}
	return hr
}

// registered is the APIService annex makes of group/version.
func registered(group, version string, priority int32, available *apiregistrationv1.APIServiceCondition) *apiregistrationv1.APIService {
	svc := &apiregistrationv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: version + "." + group, Labels: map[string]string{v1alpha1.ManagedByLabel: target.ManagedBy}},
		Spec: apiregistrationv1.APIServiceSpec{
			Service:              &apiregistrationv1.ServiceReference{Namespace: target.Namespace, Name: target.Name, Port: ptr.To(target.Port)},
			Group:                group,
			Version:              version,
			CABundle:             target.CABundle,
			GroupPriorityMinimum: 1000,
			VersionPriority:      priority,
		},
	}
	if available != nil {
		svc.Status.Conditions = []apiregistrationv1.APIServiceCondition{*available}
	}
	return svc
}

func TestReconcileRegistersEachServedVersion(t *testing.T) {
	f := newFixture(t, []client.Object{hostedResource("things", "example.com", "v1beta1", "v1", "v2alpha1", "v0-")})
	f.reconcile()
	for _, want := range []*apiregistrationv1.APIService{
		registered("example.com", "v1", 100, nil),
		registered("example.com", "v1beta1", 99, nil),
		registered("example.com", "v2alpha1", 98, nil),
	} {
		got := f.apiService(want.Name)
		if got == nil {
			t.Errorf("APIService %s was not created", want.Name)
			continue
		}
		if got.Labels[v1alpha1.ManagedByLabel] != target.ManagedBy {
			t.Errorf("APIService %s labels = %v, want %s=%s, this install's value", want.Name, got.Labels, v1alpha1.ManagedByLabel, target.ManagedBy)
		}
		if !apiequality.Semantic.DeepEqual(got.Spec, want.Spec) {
			t.Errorf("APIService %s spec = %+v, want %+v", want.Name, got.Spec, want.Spec)
		}
	}
	if f.apiService("v0.example.com") != nil {
		t.Error("a version that is not served was registered")
	}
	f.wantAvailable("things.example.com", metav1.ConditionFalse, v1alpha1.ReasonPending,
		"APIService v1.example.com is not available yet: the aggregator has not checked it yet; "+
			"APIService v1beta1.example.com is not available yet: the aggregator has not checked it yet; "+
			"APIService v2alpha1.example.com is not available yet: the aggregator has not checked it yet")
}

func TestReconcileReportsAvailability(t *testing.T) {
	up := &apiregistrationv1.APIServiceCondition{Type: apiregistrationv1.Available, Status: apiregistrationv1.ConditionTrue, Reason: "Passed"}
	down := &apiregistrationv1.APIServiceCondition{Type: apiregistrationv1.Available, Status: apiregistrationv1.ConditionFalse,
		Reason: "FailedDiscoveryCheck", Message: "failing or missing response from https://10.0.0.1:8443"}
	f := newFixture(t,
		[]client.Object{hostedResource("things", "up.example.com", "v1"), hostedResource("things", "down.example.com", "v1")},
		registered("up.example.com", "v1", 100, up),
		registered("down.example.com", "v1", 100, down),
	)
	f.reconcile()
	f.wantAvailable("things.up.example.com", metav1.ConditionTrue, v1alpha1.ReasonRegistered, "every served version is registered with the cluster and available")
	f.wantAvailable("things.down.example.com", metav1.ConditionFalse, v1alpha1.ReasonPending,
		"APIService v1.down.example.com is not available yet: FailedDiscoveryCheck: failing or missing response from https://10.0.0.1:8443")
}

func TestReconcileLeavesTheClustersGroupsAlone(t *testing.T) {
	clusterCRD := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: "widgets.crd.example.com"}}
	foreign := &apiregistrationv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: "v1.metrics.example.com"},
		Spec: apiregistrationv1.APIServiceSpec{
			Group: "metrics.example.com", Version: "v1", GroupPriorityMinimum: 100, VersionPriority: 15,
			Service: &apiregistrationv1.ServiceReference{Namespace: "monitoring", Name: "metrics"},
		},
	}
	f := newFixture(t,
		[]client.Object{hostedResource("things", "crd.example.com", "v1", "v2"), hostedResource("things", "metrics.example.com", "v1")},
		clusterCRD, foreign,
	)
	f.reconcile()
	if f.apiService("v1.crd.example.com") != nil || f.apiService("v2.crd.example.com") != nil {
		t.Error("annex registered a group that the cluster serves with CRDs")
	}
	served := "GroupServedByCluster: the cluster serves group crd.example.com itself through CustomResourceDefinitions widgets.crd.example.com; annex leaves the cluster untouched"
	f.wantAvailable("things.crd.example.com", metav1.ConditionFalse, v1alpha1.ReasonGroupServedByCluster, served+"; "+served)

	if got := f.apiService("v1.metrics.example.com"); got == nil || got.Spec.Service.Name != "metrics" || got.Labels[v1alpha1.ManagedByLabel] != "" {
		t.Errorf("an APIService annex does not manage was changed: %+v", got)
	}
	f.wantAvailable("things.metrics.example.com", metav1.ConditionFalse, v1alpha1.ReasonAPIServiceConflict,
		"APIServiceConflict: the cluster already has APIService v1.metrics.example.com, which annex does not manage")
}

func TestReconcileUpdatesAndDeletesItsAPIServices(t *testing.T) {
	stale := registered("example.com", "v1", 100, nil)
	stale.Spec.CABundle = []byte("old CA")
	foreign := &apiregistrationv1.APIService{ObjectMeta: metav1.ObjectMeta{Name: "v1.apps"}, Spec: apiregistrationv1.APIServiceSpec{Group: "apps", Version: "v1"}}
	f := newFixture(t,
		[]client.Object{hostedResource("things", "example.com", "v1")},
		stale,
		// No HostedResource serves this group any more.
		registered("gone.example.com", "v1", 100, nil),
		foreign,
	)
	f.reconcile()
	if got := f.apiService("v1.example.com"); got == nil || string(got.Spec.CABundle) != "annex CA" {
		t.Errorf("APIService v1.example.com = %+v, want annex's CA bundle", got)
	}
	if f.apiService("v1.gone.example.com") != nil {
		t.Error("an APIService that no HostedResource serves was kept")
	}
	if f.apiService("v1.apps") == nil {
		t.Error("an APIService annex does not manage was deleted")
	}
}

// withLabel returns apiService with ManagedByLabel set to value.
func withLabel(apiService *apiregistrationv1.APIService, value string) *apiregistrationv1.APIService {
	apiService.Labels = map[string]string{v1alpha1.ManagedByLabel: value}
	return apiService
}

// pointingAt returns apiService pointing at Service namespace/name (nil: no Service).
func pointingAt(apiService *apiregistrationv1.APIService, namespace, name string) *apiregistrationv1.APIService {
	apiService.Spec.Service = nil
	if name != "" {
		apiService.Spec.Service = &apiregistrationv1.ServiceReference{Namespace: namespace, Name: name, Port: ptr.To[int32](443)}
	}
	return apiService
}

func TestOwns(t *testing.T) {
	for _, tc := range []struct {
		name       string
		apiService *apiregistrationv1.APIService
		want       clustergroups.Ownership
	}{
		{"this install's value and Service", registered("example.com", "v1", 100, nil), clustergroups.Owned},
		{"this install's value, its Service on another port", func() *apiregistrationv1.APIService {
			a := registered("example.com", "v1", 100, nil)
			a.Spec.Service.Port = ptr.To[int32](9443)
			return a
		}(), clustergroups.Owned},
		{"the value from before installs had their own, this install's Service",
			withLabel(registered("example.com", "v1", 100, nil), v1alpha1.DefaultManagedByValue), clustergroups.Legacy},
		{"this install's value, another install's Service",
			pointingAt(registered("example.com", "v1", 100, nil), "other", "annex"), clustergroups.NotOwned},
		{"this install's value, a Service of the same name elsewhere",
			pointingAt(registered("example.com", "v1", 100, nil), "default", target.Name), clustergroups.NotOwned},
		{"this install's value, no Service (the kube-apiserver's own)",
			pointingAt(registered("example.com", "v1", 100, nil), "", ""), clustergroups.NotOwned},
		{"the old value, another install's Service",
			pointingAt(withLabel(registered("example.com", "v1", 100, nil), v1alpha1.DefaultManagedByValue), "other", "annex"), clustergroups.NotOwned},
		{"another install's value, this install's Service",
			withLabel(registered("example.com", "v1", 100, nil), "other.annex"), clustergroups.NotOwned},
		{"no label, this install's Service", func() *apiregistrationv1.APIService {
			a := registered("example.com", "v1", 100, nil)
			a.Labels = nil
			return a
		}(), clustergroups.NotOwned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := target.Install().Ownership(tc.apiService); got != tc.want {
				t.Errorf("owns = %d, want %d", got, tc.want)
			}
		})
	}
	// A binary run outside the chart, with no --apiservice-managed-by, owns
	// what carries the default value and points at its Service.
	plain := target
	plain.ManagedBy = ""
	if got := plain.Install().Ownership(withLabel(registered("example.com", "v1", 100, nil), v1alpha1.DefaultManagedByValue)); got != clustergroups.Owned {
		t.Errorf("with no value of its own, owns(default value, its Service) = %d, want owned", got)
	}
}

// Two installs used one label value before each had its own: an APIService
// of another install keeps it, and must be neither taken over nor deleted,
// and an APIService labelled with this install's value but pointing
// elsewhere is left alone too.
func TestReconcileLeavesOtherInstallsAPIServicesAlone(t *testing.T) {
	otherShared := pointingAt(withLabel(registered("shared.example.com", "v1", 100, nil), v1alpha1.DefaultManagedByValue), "other", "annex")
	otherOnly := pointingAt(withLabel(registered("other.example.com", "v1", 100, nil), v1alpha1.DefaultManagedByValue), "other", "annex")
	otherNew := pointingAt(withLabel(registered("new.example.com", "v1", 100, nil), "other.annex"), "other", "annex")
	relabelled := pointingAt(registered("labelled.example.com", "v1", 100, nil), "monitoring", "metrics")
	local := pointingAt(registered("local.example.com", "v1", 100, nil), "", "")
	f := newFixture(t,
		[]client.Object{
			hostedResource("things", "shared.example.com", "v1"),
			hostedResource("things", "labelled.example.com", "v1"),
		},
		otherShared.DeepCopy(), otherOnly.DeepCopy(), otherNew.DeepCopy(), relabelled.DeepCopy(), local.DeepCopy(),
	)
	f.reconcile()
	for _, want := range []*apiregistrationv1.APIService{otherShared, otherOnly, otherNew, relabelled, local} {
		got := f.apiService(want.Name)
		if got == nil {
			t.Errorf("APIService %s, which this install does not own, was deleted", want.Name)
			continue
		}
		if !apiequality.Semantic.DeepEqual(got.Spec, want.Spec) || !apiequality.Semantic.DeepEqual(got.Labels, want.Labels) {
			t.Errorf("APIService %s, which this install does not own, was changed: labels %v spec %+v, want labels %v spec %+v",
				want.Name, got.Labels, got.Spec, want.Labels, want.Spec)
		}
	}
	f.wantAvailable("things.shared.example.com", metav1.ConditionFalse, v1alpha1.ReasonAPIServiceConflict,
		"APIServiceConflict: the cluster already has APIService v1.shared.example.com, labelled annex.dev/managed-by=annex-apiserver "+
			"but pointing at Service other/annex, not at this install's Service annex-system/annex; annex leaves it alone")
	f.wantAvailable("things.labelled.example.com", metav1.ConditionFalse, v1alpha1.ReasonAPIServiceConflict,
		"APIServiceConflict: the cluster already has APIService v1.labelled.example.com, labelled annex.dev/managed-by=annex-system.annex "+
			"but pointing at Service monitoring/metrics, not at this install's Service annex-system/annex; annex leaves it alone")
}

// An install upgraded from a chart whose installs shared one label value
// adopts its own APIServices: those pointing at its Service are relabelled
// with its value (and brought up to date) or, when no HostedResource serves
// them any more, deleted; none is left unserved.
func TestReconcileAdoptsItsAPIServicesFromBeforeItHadAValue(t *testing.T) {
	up := &apiregistrationv1.APIServiceCondition{Type: apiregistrationv1.Available, Status: apiregistrationv1.ConditionTrue, Reason: "Passed"}
	served := withLabel(registered("example.com", "v1", 100, up), v1alpha1.DefaultManagedByValue)
	served.Spec.CABundle = []byte("old CA")
	current := withLabel(registered("current.example.com", "v1", 100, up), v1alpha1.DefaultManagedByValue)
	gone := withLabel(registered("gone.example.com", "v1", 100, nil), v1alpha1.DefaultManagedByValue)
	f := newFixture(t,
		[]client.Object{hostedResource("things", "example.com", "v1"), hostedResource("things", "current.example.com", "v1")},
		served, current, gone,
	)
	f.reconcile()
	for _, name := range []string{"v1.example.com", "v1.current.example.com"} {
		got := f.apiService(name)
		if got == nil {
			t.Fatalf("APIService %s was deleted: it is this install's, and a HostedResource serves it", name)
		}
		if got.Labels[v1alpha1.ManagedByLabel] != target.ManagedBy {
			t.Errorf("APIService %s labels = %v, want it relabelled %s=%s", name, got.Labels, v1alpha1.ManagedByLabel, target.ManagedBy)
		}
		if string(got.Spec.CABundle) != "annex CA" {
			t.Errorf("APIService %s caBundle = %q, want annex's", name, got.Spec.CABundle)
		}
	}
	if f.apiService("v1.gone.example.com") != nil {
		t.Error("an APIService of this install that no HostedResource serves was kept: it would point at annex for a group annex does not serve")
	}
	f.wantAvailable("things.example.com", metav1.ConditionTrue, v1alpha1.ReasonRegistered, "every served version is registered with the cluster and available")
}

// A write the cluster refuses (the chart's policy on the groups annex may
// register) is reported on the HostedResources of that group, and the other
// groups are registered all the same.
func TestReconcileReportsARefusedAPIService(t *testing.T) {
	refuse := interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		if a, ok := obj.(*apiregistrationv1.APIService); ok && a.Spec.Group == "refused.example.com" {
			return apierrors.NewForbidden(apiregistrationv1.Resource("apiservices"), a.Name,
				errors.New("annex may register only the API groups that rbac.apiServiceGroups lists"))
		}
		return c.Create(ctx, obj, opts...)
	}}
	f := newFixtureWith(t, refuse, []client.Object{hostedResource("things", "refused.example.com", "v1"), hostedResource("things", "example.com", "v1")})
	result, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: "hosted-groups"}})
	if err != nil {
		t.Fatalf("Reconcile: %v, want the refusal reported and no error", err)
	}
	// What refused it (the chart's policy) may change with no event the
	// controller sees: it tries again.
	if result.RequeueAfter != RefusedRetryInterval {
		t.Errorf("Reconcile's result %+v, want a retry after %s", result, RefusedRetryInterval)
	}
	if f.apiService("v1.example.com") == nil {
		t.Error("a refused group kept another group from being registered")
	}
	c := f.available("things.refused.example.com")
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonAPIServiceRefused || !strings.Contains(c.Message, "rbac.apiServiceGroups") {
		t.Errorf("APIServiceAvailable of a refused group = %s/%s %q, want False/%s with the cluster's reason", c.Status, c.Reason, c.Message, v1alpha1.ReasonAPIServiceRefused)
	}
}

// An APIService changed between the list and the delete (re-pointed at
// another Service, here) is not deleted: it is judged again.
func TestReconcileDeletesOnlyTheAPIServiceItJudged(t *testing.T) {
	repoint := interceptor.Funcs{Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
		current := &apiregistrationv1.APIService{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), current); err != nil {
			return err
		}
		if err := c.Update(ctx, pointingAt(current, "other", "annex")); err != nil {
			return err
		}
		return c.Delete(ctx, obj, opts...)
	}}
	f := newFixtureWith(t, repoint, nil, registered("gone.example.com", "v1", 100, nil))
	f.reconcile()
	if got := f.apiService("v1.gone.example.com"); got == nil || got.Spec.Service.Namespace != "other" {
		t.Errorf("an APIService re-pointed at another install's Service after it was listed was deleted: %+v", got)
	}
}
