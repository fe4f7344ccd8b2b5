package apiservice

import (
	"context"
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
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

var target = Target{Namespace: "annex-system", Name: "annex", Port: 8443, CABundle: []byte("annex CA")}

// fixture is the reconciler between a fake annex and a fake cluster.
type fixture struct {
	t *testing.T
	r *Reconciler
}

func newFixture(t *testing.T, hrs []client.Object, cluster ...client.Object) *fixture {
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
		Cluster: fake.NewClientBuilder().WithScheme(clusterScheme).WithObjects(cluster...).Build(),
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
		ObjectMeta: metav1.ObjectMeta{Name: version + "." + group, Labels: map[string]string{v1alpha1.ManagedByLabel: v1alpha1.ManagedByValue}},
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
		if got.Labels[v1alpha1.ManagedByLabel] != v1alpha1.ManagedByValue {
			t.Errorf("APIService %s labels = %v, want %s", want.Name, got.Labels, v1alpha1.ManagedBySelector)
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
