// Package backendchange holds the admission plugin that refuses to change the
// StorageBackend of a HostedResource whose type has objects: annex cannot move
// a type's objects from one store to another, and changing the backend under
// them would strand them.
//
// It is an admission plugin, not a check in the registry, because it must ask
// annex's own API (the hosted type's objects, served by the embedded
// apiextensions server) whether any object exists; the registry of
// HostedResources knows nothing of the hosted types' storage.
package backendchange

import (
	"context"
	"fmt"
	"io"

	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/storage/routing"
)

// PluginName is the name of the plugin in --enable-admission-plugins.
const PluginName = "HostedResourceBackendChange"

// Register adds the plugin to plugins. It needs the Initializer.
func Register(plugins *admission.Plugins) {
	plugins.Register(PluginName, func(io.Reader) (admission.Interface, error) {
		return newPlugin(), nil
	})
}

// New returns the plugin, initialized with the loopback client configuration
// of annex; for standalone mode, which has no admission options.
func New(loopback *rest.Config) (admission.ValidationInterface, error) {
	p := newPlugin()
	if err := p.SetLoopbackClientConfig(loopback); err != nil {
		return nil, err
	}
	return p, p.ValidateInitialization()
}

func newPlugin() *plugin {
	return &plugin{Handler: admission.NewHandler(admission.Update)}
}

// WantsLoopbackClientConfig is a plugin that reaches annex itself.
type WantsLoopbackClientConfig interface {
	SetLoopbackClientConfig(*rest.Config) error
}

// Initializer hands annex's loopback client configuration to the plugins that want it.
type Initializer struct {
	Loopback *rest.Config
}

var _ admission.PluginInitializer = Initializer{}

// Initialize gives p the loopback client configuration if it wants it.
func (i Initializer) Initialize(p admission.Interface) {
	if w, ok := p.(WantsLoopbackClientConfig); ok && i.Loopback != nil {
		// An error leaves the plugin without clients, which
		// ValidateInitialization reports.
		_ = w.SetLoopbackClientConfig(i.Loopback)
	}
}

type plugin struct {
	*admission.Handler
	crds    apiextensionsclient.Interface
	objects metadata.Interface
}

var (
	_ admission.ValidationInterface     = &plugin{}
	_ admission.InitializationValidator = &plugin{}
	_ WantsLoopbackClientConfig         = &plugin{}
)

// SetLoopbackClientConfig builds the clients of annex's own API.
func (p *plugin) SetLoopbackClientConfig(cfg *rest.Config) error {
	crds, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	objects, err := metadata.NewForConfig(cfg)
	if err != nil {
		return err
	}
	p.crds, p.objects = crds, objects
	return nil
}

// ValidateInitialization fails when the plugin has no client of annex.
func (p *plugin) ValidateInitialization() error {
	if p.crds == nil || p.objects == nil {
		return fmt.Errorf("%s needs annex's loopback client", PluginName)
	}
	return nil
}

// Validate refuses a change of spec.storage.backend while the type has objects.
func (p *plugin) Validate(ctx context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	if a.GetResource().GroupResource() != annex.Resource("hostedresources") || a.GetSubresource() != "" {
		return nil
	}
	hr, ok := a.GetObject().(*annex.HostedResource)
	if !ok {
		return apierrors.NewBadRequest(fmt.Sprintf("expected a HostedResource, got %T", a.GetObject()))
	}
	old, ok := a.GetOldObject().(*annex.HostedResource)
	if !ok {
		return apierrors.NewBadRequest(fmt.Sprintf("expected the old HostedResource, got %T", a.GetOldObject()))
	}
	if hr.Spec.Storage.Backend == old.Spec.Storage.Backend {
		return nil
	}
	has, err := p.hasObjects(ctx, old.Name)
	if err != nil {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("cannot tell whether %s has objects, so its storage backend cannot be changed now: %v", old.Name, err))
	}
	if !has {
		return nil
	}
	return apierrors.NewInvalid(annex.Kind("HostedResource"), hr.Name, field.ErrorList{
		field.Invalid(field.NewPath("spec", "storage", "backend"), hr.Spec.Storage.Backend, fmt.Sprintf(
			"the type has objects in StorageBackend %q, and moving a type between backends is not supported; "+
				"delete its objects first, or keep the backend", old.Spec.Storage.Backend)),
	})
}

// hasObjects says whether the hosted type of HostedResource name has at
// least one object, in any namespace. It reads the internal CRD that annex
// serves the type with, rather than the HostedResource, because the CRD says
// which versions are served right now.
func (p *plugin) hasObjects(ctx context.Context, name string) (bool, error) {
	crd, err := p.crds.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		// The type is not served, so it holds nothing: the CRD goes only
		// after its objects.
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if crd.Labels[routing.OwnerLabel] != name {
		// A CRD created on annex directly: its objects are not this HostedResource's.
		return false, nil
	}
	return routing.HasObjects(ctx, p.objects, crd)
}
