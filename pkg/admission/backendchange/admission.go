// Package backendchange holds the admission plugin that refuses to change the
// StorageBackend of a HostedResource whose type has objects: annex cannot move
// a type's objects from one store to another, and changing the backend under
// them would strand them. For the same reason it refuses to change where a
// StorageBackend connects while a HostedResource uses it.
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
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/apis/annex/validation"
	annexclientset "annex.dev/annex/pkg/generated/clientset/versioned"
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
	annex   annexclientset.Interface
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
	annexClient, err := annexclientset.NewForConfig(cfg)
	if err != nil {
		return err
	}
	p.annex, p.crds, p.objects = annexClient, crds, objects
	return nil
}

// ValidateInitialization fails when the plugin has no client of annex.
func (p *plugin) ValidateInitialization() error {
	if p.annex == nil || p.crds == nil || p.objects == nil {
		return fmt.Errorf("%s needs annex's loopback client", PluginName)
	}
	return nil
}

// Validate refuses a change of spec.storage.backend while the type has
// objects, and a change of a StorageBackend's spec while it is in use.
func (p *plugin) Validate(ctx context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	if a.GetSubresource() != "" {
		return nil
	}
	switch a.GetResource().GroupResource() {
	case annex.Resource("hostedresources"):
		return p.validateHostedResource(ctx, a)
	case annex.Resource("storagebackends"):
		return p.validateStorageBackend(ctx, a)
	}
	return nil
}

// validateStorageBackend refuses to change where a StorageBackend connects
// while a HostedResource uses it: two replicas could then serve one type
// from two stores, and the objects in the first would be stranded.
func (p *plugin) validateStorageBackend(ctx context.Context, a admission.Attributes) error {
	sb, ok := a.GetObject().(*annex.StorageBackend)
	if !ok {
		return apierrors.NewBadRequest(fmt.Sprintf("expected a StorageBackend, got %T", a.GetObject()))
	}
	old, ok := a.GetOldObject().(*annex.StorageBackend)
	if !ok {
		return apierrors.NewBadRequest(fmt.Sprintf("expected the old StorageBackend, got %T", a.GetOldObject()))
	}
	if apiequality.Semantic.DeepEqual(storeOf(sb.Spec), storeOf(old.Spec)) {
		return nil
	}
	hrs, err := p.annex.AnnexV1alpha1().HostedResources().List(ctx, metav1.ListOptions{})
	if err != nil {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("cannot tell whether StorageBackend %s is in use, so it cannot be changed now: %v", sb.Name, err))
	}
	crds, err := p.crds.ApiextensionsV1().CustomResourceDefinitions().List(ctx, metav1.ListOptions{})
	if err != nil {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("cannot tell whether StorageBackend %s is in use, so it cannot be changed now: %v", sb.Name, err))
	}
	users := routing.BackendUsers(sb.Name, hrs.Items, crds.Items)
	if len(users) == 0 {
		return nil
	}
	return apierrors.NewInvalid(annex.Kind("StorageBackend"), sb.Name, field.ErrorList{
		field.Forbidden(field.NewPath("spec"), fmt.Sprintf(
			"cannot be changed while HostedResources keep objects in this backend (%s): annex does not move objects between stores; "+
				"create another StorageBackend for the new store", strings.Join(users, ", "))),
	})
}

// storeOf is what of a StorageBackend's spec names its store: all of it but
// whether annex may reach the store without TLS (insecure), which changes
// how annex connects, not where. A backend in use may allow or forbid
// plaintext; forbidding it makes the backend not Ready where it is plaintext.
func storeOf(spec annex.StorageBackendSpec) annex.StorageBackendSpec {
	if spec.Etcd != nil {
		etcd := *spec.Etcd
		etcd.Insecure = false
		spec.Etcd = &etcd
	}
	if spec.Postgres != nil {
		pg := *spec.Postgres
		pg.Insecure = false
		spec.Postgres = &pg
	}
	return spec
}

// validateHostedResource refuses an update of a HostedResource that the
// CRD serving its type could not take (see
// validation.ValidateHostedResourceAgainstCRD), and a change of
// spec.storage.backend while the type has objects.
func (p *plugin) validateHostedResource(ctx context.Context, a admission.Attributes) error {
	hr, ok := a.GetObject().(*annex.HostedResource)
	if !ok {
		return apierrors.NewBadRequest(fmt.Sprintf("expected a HostedResource, got %T", a.GetObject()))
	}
	old, ok := a.GetOldObject().(*annex.HostedResource)
	if !ok {
		return apierrors.NewBadRequest(fmt.Sprintf("expected the old HostedResource, got %T", a.GetOldObject()))
	}
	typeSpec, oldTypeSpec := hr.Spec, old.Spec
	typeSpec.Storage, oldTypeSpec.Storage = annex.HostedResourceStorage{}, annex.HostedResourceStorage{}
	typeChanged := !apiequality.Semantic.DeepEqual(typeSpec, oldTypeSpec)
	backendChanged := hr.Spec.Storage.Backend != old.Spec.Storage.Backend
	if !typeChanged && !backendChanged {
		return nil
	}
	crd, err := p.servingCRD(ctx, old.Name)
	if err != nil {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("cannot read the type of %s, so its spec cannot be changed now: %v", old.Name, err))
	}
	if crd == nil {
		// The type is not served, so it holds nothing: the CRD goes only
		// after its objects.
		return nil
	}
	if typeChanged {
		if errs := validation.ValidateHostedResourceAgainstCRD(ctx, hr, crd); len(errs) > 0 {
			return apierrors.NewInvalid(annex.Kind("HostedResource"), hr.Name, errs)
		}
	}
	if !backendChanged {
		return nil
	}
	backend := hr.Spec.Storage.Backend
	if backend == "" {
		backend = annex.DefaultStorageBackend
	}
	if backend == routing.BackendOf(crd) {
		// Back to the backend the type is on, where its objects are: a move
		// refused, or given up, is undone this way.
		return nil
	}
	has, err := routing.HasObjects(ctx, p.objects, crd)
	if err != nil {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("cannot tell whether %s has objects, so its storage backend cannot be changed now: %v", old.Name, err))
	}
	if !has {
		return nil
	}
	return apierrors.NewInvalid(annex.Kind("HostedResource"), hr.Name, field.ErrorList{
		field.Invalid(field.NewPath("spec", "storage", "backend"), hr.Spec.Storage.Backend, fmt.Sprintf(
			"the type has objects in StorageBackend %q, and moving a type between backends is not supported; "+
				"delete its objects first, or keep the backend", routing.BackendOf(crd))),
	})
}

// servingCRD returns the internal CRD that serves the type of HostedResource
// name, or nil if there is none. It reads the CRD rather than the
// HostedResource because the CRD says how the type is served right now:
// which versions, and which have stored objects.
func (p *plugin) servingCRD(ctx context.Context, name string) (*apiextensionsv1.CustomResourceDefinition, error) {
	crd, err := p.crds.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if crd.Labels[v1alpha1.HostedResourceLabel] != name {
		// A CRD created on annex directly: not this HostedResource's type.
		return nil, nil
	}
	return crd, nil
}
