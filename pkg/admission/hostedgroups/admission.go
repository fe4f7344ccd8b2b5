// Package hostedgroups holds the admission plugin that refuses a
// HostedResource whose group the cluster already serves: two servers for one
// group would split it, and taking a group over from a cluster CRD is the
// job of a deliberate migration, not of a create.
package hostedgroups

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/client-go/dynamic"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/clustergroups"
)

// PluginName is the name of the plugin in --enable-admission-plugins.
const PluginName = "HostedGroupOwnership"

var (
	crds        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
)

// Register adds the plugin to plugins. install says which install of annex
// this is, once the options are parsed: its own APIServices do not make a
// group the cluster's.
func Register(plugins *admission.Plugins, install func() clustergroups.Install) {
	plugins.Register(PluginName, func(io.Reader) (admission.Interface, error) {
		return &plugin{Handler: admission.NewHandler(admission.Create), install: install()}, nil
	})
}

type plugin struct {
	*admission.Handler
	cluster dynamic.Interface
	install clustergroups.Install
}

var (
	_ admission.ValidationInterface     = &plugin{}
	_ admission.InitializationValidator = &plugin{}
)

// SetDynamicClient receives the client of the cluster.
func (p *plugin) SetDynamicClient(client dynamic.Interface) { p.cluster = client }

// ValidateInitialization fails when the plugin has no client of the cluster.
func (p *plugin) ValidateInitialization() error {
	if p.cluster == nil {
		return fmt.Errorf("%s needs a client of the cluster", PluginName)
	}
	return nil
}

// Validate refuses a new HostedResource whose group the cluster serves with
// CustomResourceDefinitions or with APIServices that this install does not
// own (clustergroups.Install.Ownership): another install's APIService, or
// one that only carries annex's label, makes the group the cluster's.
// It asks the cluster at the time of the request: HostedResources are
// created rarely, and a cache could let a fresh CRD slip through.
func (p *plugin) Validate(ctx context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	if a.GetResource().GroupResource() != annex.Resource("hostedresources") || a.GetSubresource() != "" {
		return nil
	}
	hr, ok := a.GetObject().(*annex.HostedResource)
	if !ok {
		return apierrors.NewBadRequest(fmt.Sprintf("expected a HostedResource, got %T", a.GetObject()))
	}
	group := hr.Spec.Group
	groups, err := p.clusterGroups(ctx)
	if err != nil {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("cannot check whether the cluster serves group %s: %v", group, err))
	}
	owners := groups.Owners(group)
	if hr.Spec.Adoption != nil {
		// An adoption takes the group over from the cluster's CRDs; what
		// else serves it stays the cluster's.
		name := hr.Spec.Adoption.CustomResourceDefinition
		if !slices.Contains(groups.CRDs(group), name) {
			return apierrors.NewInvalid(annex.Kind("HostedResource"), hr.Name, field.ErrorList{
				field.NotFound(field.NewPath("spec", "adoption", "customResourceDefinition"), name)})
		}
		owners = slices.DeleteFunc(owners, func(owner string) bool { return strings.HasPrefix(owner, "CustomResourceDefinition ") })
	}
	if len(owners) == 0 {
		return nil
	}
	return apierrors.NewInvalid(annex.Kind("HostedResource"), hr.Name, field.ErrorList{
		field.Invalid(field.NewPath("spec", "group"), group, fmt.Sprintf(
			"the cluster already serves this group (%s); annex leaves it to the cluster", strings.Join(owners, ", "))),
	})
}

func (p *plugin) clusterGroups(ctx context.Context) (*clustergroups.Groups, error) {
	crdList, err := p.cluster.Resource(crds).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	crdNames := make([]string, 0, len(crdList.Items))
	for _, crd := range crdList.Items {
		crdNames = append(crdNames, crd.GetName())
	}
	apiServiceList, err := p.cluster.Resource(apiServices).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	services := make([]apiregistrationv1.APIService, len(apiServiceList.Items))
	for i := range apiServiceList.Items {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(apiServiceList.Items[i].Object, &services[i]); err != nil {
			return nil, fmt.Errorf("reading APIService %s: %w", apiServiceList.Items[i].GetName(), err)
		}
	}
	return clustergroups.New(crdNames, services, p.install), nil
}
