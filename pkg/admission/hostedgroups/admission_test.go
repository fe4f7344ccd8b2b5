package hostedgroups

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/clustergroups"
)

func clusterObject(apiVersion, kind, name string, labels map[string]string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "spec": spec}}
	u.SetName(name)
	u.SetLabels(labels)
	return u
}

func crd(name string) runtime.Object {
	return clusterObject("apiextensions.k8s.io/v1", "CustomResourceDefinition", name, nil, map[string]any{})
}

// install is the install of annex the plugin belongs to: its Service is ns/svc.
var install = clustergroups.Install{Namespace: "ns", Name: "svc", ManagedBy: "ns.annex"}

func apiService(name string, labels map[string]string, withService bool) runtime.Object {
	spec := map[string]any{}
	if withService {
		spec["service"] = map[string]any{"namespace": "ns", "name": "svc"}
	}
	return clusterObject("apiregistration.k8s.io/v1", "APIService", name, labels, spec)
}

// otherService is an APIService pointing at a Service that is not the install's.
func otherService(name string, labels map[string]string) runtime.Object {
	return clusterObject("apiregistration.k8s.io/v1", "APIService", name, labels,
		map[string]any{"service": map[string]any{"namespace": "other", "name": "annex"}})
}

// newPlugin returns the plugin over a fake cluster holding objs.
func newPlugin(t *testing.T, objs ...runtime.Object) (*plugin, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	cluster := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		crds:        "CustomResourceDefinitionList",
		apiServices: "APIServiceList",
	}, objs...)
	p := &plugin{Handler: admission.NewHandler(admission.Create), install: install}
	p.SetDynamicClient(cluster)
	if err := p.ValidateInitialization(); err != nil {
		t.Fatal(err)
	}
	return p, cluster
}

func create(p *plugin, group, subresource string) error {
	hr := &annex.HostedResource{ObjectMeta: metav1.ObjectMeta{Name: "things." + group}, Spec: annex.HostedResourceSpec{Group: group}}
	a := admission.NewAttributesRecord(hr, nil, annex.Kind("HostedResource").WithVersion(""), "", hr.Name,
		annex.Resource("hostedresources").WithVersion(""), subresource, admission.Create, &metav1.CreateOptions{}, false, nil)
	return p.Validate(context.Background(), a, nil)
}

func TestValidate(t *testing.T) {
	p, _ := newPlugin(t,
		crd("widgets.crd.example.com"),
		crd("gadgets.crd.example.com"),
		// The aggregator's local APIService of the CRDs' group.
		apiService("v1.crd.example.com", nil, false),
		apiService("v1beta1.metrics.example.com", nil, true),
		apiService("v1.hosted.example.com", map[string]string{v1alpha1.ManagedByLabel: "ns.annex"}, true),
		apiService("v1.legacy.example.com", map[string]string{v1alpha1.ManagedByLabel: v1alpha1.DefaultManagedByValue}, true),
		// Another install's, with its own value, at its own Service.
		otherService("v1.other.example.com", map[string]string{v1alpha1.ManagedByLabel: "other.annex"}),
		// Another install's value at this install's Service.
		apiService("v1.relabelled.example.com", map[string]string{v1alpha1.ManagedByLabel: "other.annex"}, true),
		// This install's value at another Service: the label alone.
		otherService("v1.labelled.example.com", map[string]string{v1alpha1.ManagedByLabel: "ns.annex"}),
		// The old default value at another install's Service.
		otherService("v1.oldother.example.com", map[string]string{v1alpha1.ManagedByLabel: v1alpha1.DefaultManagedByValue}),
	)
	for _, tc := range []struct {
		group   string
		refused string
	}{
		{group: "crd.example.com", refused: "the cluster already serves this group (CustomResourceDefinition gadgets.crd.example.com, CustomResourceDefinition widgets.crd.example.com)"},
		{group: "metrics.example.com", refused: "the cluster already serves this group (APIService v1beta1.metrics.example.com)"},
		// This install's own APIService: another HostedResource of the group.
		{group: "hosted.example.com"},
		// One it registered before installs had their own label values.
		{group: "legacy.example.com"},
		// Any other APIService, labelled or not, is the cluster's.
		{group: "other.example.com", refused: "the cluster already serves this group (APIService v1.other.example.com)"},
		{group: "relabelled.example.com", refused: "the cluster already serves this group (APIService v1.relabelled.example.com)"},
		{group: "labelled.example.com", refused: "the cluster already serves this group (APIService v1.labelled.example.com)"},
		{group: "oldother.example.com", refused: "the cluster already serves this group (APIService v1.oldother.example.com)"},
		{group: "free.example.com"},
	} {
		t.Run(tc.group, func(t *testing.T) {
			err := create(p, tc.group, "")
			if tc.refused == "" {
				if err != nil {
					t.Errorf("creating a HostedResource of group %s: %v, want it allowed", tc.group, err)
				}
				return
			}
			var status apierrors.APIStatus
			if !errors.As(err, &status) || status.Status().Code != http.StatusUnprocessableEntity {
				t.Fatalf("creating a HostedResource of group %s: %v, want 422", tc.group, err)
			}
			causes := status.Status().Details.Causes
			if len(causes) != 1 || causes[0].Field != "spec.group" || !strings.Contains(causes[0].Message, tc.refused) {
				t.Errorf("causes = %+v, want one on spec.group saying %q", causes, tc.refused)
			}
		})
	}
	if err := create(p, "crd.example.com", "status"); err != nil {
		t.Errorf("a status write: %v, want it left alone", err)
	}
	if p.Handles(admission.Update) {
		t.Error("the plugin handles updates; a HostedResource's group cannot change")
	}
}

func TestValidateWhenTheClusterDoesNotAnswer(t *testing.T) {
	p, cluster := newPlugin(t)
	cluster.PrependReactor("list", "apiservices", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	err := create(p, "free.example.com", "")
	if !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), "cannot check whether the cluster serves group free.example.com") {
		t.Errorf("err = %v, want 503 saying what could not be checked", err)
	}
}

func TestInitialization(t *testing.T) {
	plugins := admission.NewPlugins()
	Register(plugins, func() clustergroups.Install { return install })
	if !slices.Contains(plugins.Registered(), PluginName) {
		t.Errorf("registered plugins = %v, want %s", plugins.Registered(), PluginName)
	}
	p := &plugin{Handler: admission.NewHandler(admission.Create)}
	if err := p.ValidateInitialization(); err == nil {
		t.Error("a plugin without a client of the cluster passes its initialization")
	}
}

func TestValidateAdoption(t *testing.T) {
	p, _ := newPlugin(t,
		crd("widgets.crd.example.com"),
		crd("gadgets.crd.example.com"),
		apiService("v1.crd.example.com", nil, false),
		apiService("v1beta1.metrics.example.com", nil, true),
	)
	adopt := func(group, plural string) error {
		hr := &annex.HostedResource{ObjectMeta: metav1.ObjectMeta{Name: plural + "." + group}, Spec: annex.HostedResourceSpec{
			Group: group, Adoption: &annex.Adoption{CustomResourceDefinition: plural + "." + group}}}
		a := admission.NewAttributesRecord(hr, nil, annex.Kind("HostedResource").WithVersion(""), "", hr.Name,
			annex.Resource("hostedresources").WithVersion(""), "", admission.Create, &metav1.CreateOptions{}, false, nil)
		return p.Validate(context.Background(), a, nil)
	}
	// Each CRD of a group the cluster serves with CRDs can be adopted.
	if err := adopt("crd.example.com", "widgets"); err != nil {
		t.Errorf("adopting a CRD of the cluster: %v, want it allowed", err)
	}
	if err := adopt("crd.example.com", "gadgets"); err != nil {
		t.Errorf("adopting the group's other CRD: %v, want it allowed", err)
	}
	for _, tc := range []struct {
		group, plural, field, message string
	}{
		{group: "crd.example.com", plural: "things", field: "spec.adoption.customResourceDefinition", message: "Not found"},
		// A group served by another server is not a CRD's to adopt.
		{group: "metrics.example.com", plural: "things", field: "spec.adoption.customResourceDefinition", message: "Not found"},
	} {
		err := adopt(tc.group, tc.plural)
		var status apierrors.APIStatus
		if !errors.As(err, &status) || status.Status().Code != http.StatusUnprocessableEntity {
			t.Fatalf("adopting %s.%s: %v, want 422", tc.plural, tc.group, err)
		}
		causes := status.Status().Details.Causes
		if len(causes) != 1 || causes[0].Field != tc.field || !strings.Contains(err.Error(), tc.message) {
			t.Errorf("adopting %s.%s: %v (causes %+v), want %q on %s", tc.plural, tc.group, err, causes, tc.message, tc.field)
		}
	}
}
