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

func apiService(name string, labels map[string]string, withService bool) runtime.Object {
	spec := map[string]any{}
	if withService {
		spec["service"] = map[string]any{"namespace": "ns", "name": "svc"}
	}
	return clusterObject("apiregistration.k8s.io/v1", "APIService", name, labels, spec)
}

// newPlugin returns the plugin over a fake cluster holding objs.
func newPlugin(t *testing.T, objs ...runtime.Object) (*plugin, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	cluster := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		crds:        "CustomResourceDefinitionList",
		apiServices: "APIServiceList",
	}, objs...)
	p := &plugin{Handler: admission.NewHandler(admission.Create)}
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
		apiService("v1.hosted.example.com", map[string]string{v1alpha1.ManagedByLabel: v1alpha1.DefaultManagedByValue}, true),
	)
	for _, tc := range []struct {
		group   string
		refused string
	}{
		{group: "crd.example.com", refused: "the cluster already serves this group (CustomResourceDefinition gadgets.crd.example.com, CustomResourceDefinition widgets.crd.example.com)"},
		{group: "metrics.example.com", refused: "the cluster already serves this group (APIService v1beta1.metrics.example.com)"},
		// annex's own APIService: another HostedResource of the group.
		{group: "hosted.example.com"},
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
	Register(plugins)
	if !slices.Contains(plugins.Registered(), PluginName) {
		t.Errorf("registered plugins = %v, want %s", plugins.Registered(), PluginName)
	}
	p := &plugin{Handler: admission.NewHandler(admission.Create)}
	if err := p.ValidateInitialization(); err == nil {
		t.Error("a plugin without a client of the cluster passes its initialization")
	}
}
