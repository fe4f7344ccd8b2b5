// Package dryrunsize holds the admission plugin that holds dry runs to the
// limit on the size of an object (objectsize.MaxBytes).
//
// A real write is refused by the value transformer of the resource's storage,
// which sees the encoded object (package objectsize). A dry run never
// reaches the store, so nothing encodes the object and the transformer never
// sees it. This plugin encodes the object as the store would, for dry-run
// creates and updates (patches and server-side apply are updates) only, and
// refuses it with the same 413: a dry run then answers what the real write
// would. Real writes are left to the transformer, which measures the
// encoding itself.
package dryrunsize

import (
	"context"
	"fmt"
	"io"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured/unstructuredscheme"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/cbor"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/rest"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/storage/objectsize"
)

// PluginName is the name of the plugin in --enable-admission-plugins.
const PluginName = "DryRunObjectSize"

// Register adds the plugin to plugins. annexCodec is the storage codec of
// annex.dev's own types. The plugin needs annex's loopback client
// configuration (backendchange.Initializer gives it).
func Register(plugins *admission.Plugins, annexCodec runtime.Encoder) {
	plugins.Register(PluginName, func(io.Reader) (admission.Interface, error) {
		return newPlugin(annexCodec), nil
	})
}

// New returns the plugin, initialized with the loopback client configuration
// of annex; for standalone mode, which has no admission options.
func New(loopback *rest.Config, annexCodec runtime.Encoder) (admission.ValidationInterface, error) {
	p := newPlugin(annexCodec)
	if err := p.SetLoopbackClientConfig(loopback); err != nil {
		return nil, err
	}
	return p, p.ValidateInitialization()
}

func newPlugin(annexCodec runtime.Encoder) *plugin {
	return &plugin{Handler: admission.NewHandler(admission.Create, admission.Update), annexCodec: annexCodec}
}

type plugin struct {
	*admission.Handler
	// annexCodec encodes annex.dev's types as their store does.
	annexCodec runtime.Encoder
	// hostedCodec encodes a hosted object, in its storage version, as its
	// store does.
	hostedCodec runtime.Encoder
	// storageVersion is the version a hosted type's objects are stored in.
	storageVersion func(ctx context.Context, gr schema.GroupResource) (string, error)
}

var (
	_ admission.ValidationInterface     = &plugin{}
	_ admission.InitializationValidator = &plugin{}
)

// SetLoopbackClientConfig builds the client that reads the internal CRDs,
// which say each hosted type's storage version.
func (p *plugin) SetLoopbackClientConfig(cfg *rest.Config) error {
	client, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	p.storageVersion = func(ctx context.Context, gr schema.GroupResource) (string, error) {
		crd, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, gr.Resource+"."+gr.Group, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return storageVersionOf(crd)
	}
	p.hostedCodec = hostedStorageEncoder()
	return nil
}

// ValidateInitialization fails when the plugin cannot measure hosted objects.
func (p *plugin) ValidateInitialization() error {
	if p.storageVersion == nil || p.hostedCodec == nil || p.annexCodec == nil {
		return fmt.Errorf("%s needs annex's loopback client and the storage codec of annex.dev", PluginName)
	}
	return nil
}

// Validate refuses a dry-run create or update of an object whose encoding in
// the store would be over objectsize.MaxBytes, with the 413 of the real
// write. An update that would store exactly what is stored is not refused:
// the store does not write it, so the real write is not refused either.
func (p *plugin) Validate(ctx context.Context, a admission.Attributes, o admission.ObjectInterfaces) error {
	if !a.IsDryRun() || a.GetObject() == nil {
		return nil
	}
	encode := p.encoder(ctx, a, o)
	if encode == nil {
		return nil
	}
	data, err := encode(a.GetObject())
	if err != nil {
		return apierrors.NewInternalError(fmt.Errorf("measuring the object of a dry run: %w", err))
	}
	if len(data) <= objectsize.MaxBytes {
		return nil
	}
	if a.GetOperation() == admission.Update && a.GetOldObject() != nil {
		if old, err := encode(a.GetOldObject()); err == nil && string(old) == string(data) {
			return nil
		}
	}
	return objectsize.Check(len(data))
}

// encoder returns what encodes an object of the request as its store
// would, or nil for what annex does not hold to the limit: the internal
// CRDs, standalone mode's namespaces, and a scale subresource's Scale
// (whose write changes only a number in the stored object).
func (p *plugin) encoder(ctx context.Context, a admission.Attributes, o admission.ObjectInterfaces) func(runtime.Object) ([]byte, error) {
	switch a.GetObject().(type) {
	case *unstructured.Unstructured:
		gr := a.GetResource().GroupResource()
		if gr.Group == annex.GroupName || o == nil {
			return nil
		}
		return func(in runtime.Object) ([]byte, error) {
			u, ok := in.(*unstructured.Unstructured)
			if !ok {
				return nil, fmt.Errorf("expected an unstructured object, got %T", in)
			}
			return p.encodeHosted(ctx, gr, u, o.GetObjectConvertor())
		}
	default:
		if a.GetResource().Group != annex.GroupName {
			return nil
		}
		return func(in runtime.Object) ([]byte, error) { return encodeForStorage(p.annexCodec, in.DeepCopyObject()) }
	}
}

// encodeHosted encodes a hosted object as its store would: converted to the
// type's storage version (by the request's converter, the type's own, a
// webhook's included), then encoded by the storage codec.
func (p *plugin) encodeHosted(ctx context.Context, gr schema.GroupResource, u *unstructured.Unstructured, convertor runtime.ObjectConvertor) ([]byte, error) {
	version, err := p.storageVersion(ctx, gr)
	if err != nil {
		return nil, fmt.Errorf("finding the storage version of %s: %w", gr, err)
	}
	var obj runtime.Object = u.DeepCopy()
	if u.GroupVersionKind().Version != version {
		if obj, err = convertor.ConvertToVersion(obj, schema.GroupVersion{Group: gr.Group, Version: version}); err != nil {
			return nil, fmt.Errorf("converting to the storage version %s: %w", version, err)
		}
	}
	return encodeForStorage(p.hostedCodec, obj)
}

// encodeForStorage encodes obj, which it changes, as the etcd3 store does:
// without its resourceVersion, which the store keeps in the key's revision.
func encodeForStorage(codec runtime.Encoder, obj runtime.Object) ([]byte, error) {
	if err := (storage.APIObjectVersioner{}).PrepareObjectForStorage(obj); err != nil {
		return nil, err
	}
	return runtime.Encode(codec, obj)
}

// hostedStorageEncoder is the encoder of the storage codec of hosted types,
// chosen as apiextensions' NewCRDRESTOptionsGetter chooses it.
func hostedStorageEncoder() runtime.Encoder {
	if utilfeature.DefaultFeatureGate.Enabled(features.CBORServingAndStorage) {
		return cbor.NewSerializer(unstructuredscheme.NewUnstructuredCreator(), unstructuredscheme.NewUnstructuredObjectTyper())
	}
	return unstructured.UnstructuredJSONScheme
}

// storageVersionOf is the version of a CRD whose objects are stored.
func storageVersionOf(crd *apiextensionsv1.CustomResourceDefinition) (string, error) {
	for _, v := range crd.Spec.Versions {
		if v.Storage {
			return v.Name, nil
		}
	}
	return "", fmt.Errorf("CustomResourceDefinition %s has no storage version", crd.Name)
}
