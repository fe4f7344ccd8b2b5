package backendchange

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsfake "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/fake"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	metadatafake "k8s.io/client-go/metadata/fake"
	"k8s.io/client-go/rest"
	clienttesting "k8s.io/client-go/testing"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	annexfake "annex.dev/annex/pkg/generated/clientset/versioned/fake"
)

const name = "things.example.com"

var (
	thingsV1 = schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "things"}
	object   = apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object"}}
)

// servedCRD is the established type things.example.com/v1, with objects
// stored in v1, as annex made it for HostedResource things.example.com on
// the default backend.
func servedCRD() *apiextensionsv1.CustomResourceDefinition {
	names := apiextensionsv1.CustomResourceDefinitionNames{Plural: "things", Singular: "thing", Kind: "Thing", ListKind: "ThingList"}
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.HostedResourceLabel: name}, ResourceVersion: "1"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "example.com", Names: names, Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true, Schema: object.DeepCopy()}},
		},
		Status: apiextensionsv1.CustomResourceDefinitionStatus{
			AcceptedNames:  names,
			StoredVersions: []string{"v1"},
			Conditions: []apiextensionsv1.CustomResourceDefinitionCondition{
				{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue},
			},
		},
	}
}

// hostedResource is the HostedResource of servedCRD, on backend.
func hostedResource(backend string) *annex.HostedResource {
	crd := servedCRD()
	return &annex.HostedResource{
		ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "1"},
		Spec: annex.HostedResourceSpec{
			Group: crd.Spec.Group, Names: crd.Spec.Names, Scope: crd.Spec.Scope, Versions: crd.Spec.Versions,
			Storage: annex.HostedResourceStorage{Backend: backend},
		},
	}
}

// fixture is the plugin over a fake annex.
type fixture struct {
	t       *testing.T
	p       *plugin
	annex   *annexfake.Clientset
	crds    *apiextensionsfake.Clientset
	objects *metadatafake.FakeMetadataClient
}

func newFixture(t *testing.T, crds ...runtime.Object) *fixture {
	t.Helper()
	mdScheme := metadatafake.NewTestScheme()
	mdScheme.AddKnownTypeWithName(schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Thing"}, &metav1.PartialObjectMetadata{})
	mdScheme.AddKnownTypeWithName(schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "ThingList"}, &metav1.PartialObjectMetadataList{})
	f := &fixture{
		t:       t,
		annex:   annexfake.NewSimpleClientset(),
		crds:    apiextensionsfake.NewSimpleClientset(crds...),
		objects: metadatafake.NewSimpleMetadataClient(mdScheme),
	}
	f.p = newPlugin()
	f.p.annex, f.p.crds, f.p.objects = f.annex, f.crds, f.objects
	return f
}

// withObject stores one object of the type.
func (f *fixture) withObject() *fixture {
	f.t.Helper()
	obj := &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "example.com/v1", Kind: "Thing"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "one"},
	}
	if err := f.objects.Tracker().Create(thingsV1, obj, "a"); err != nil {
		f.t.Fatal(err)
	}
	return f
}

func (f *fixture) validate(obj, old runtime.Object, resource, subresource string) error {
	f.t.Helper()
	a := admission.NewAttributesRecord(obj, old, annex.Kind(kindOf(obj)).WithVersion(""), "", obj.(metav1.Object).GetName(),
		annex.Resource(resource).WithVersion(""), subresource, admission.Update, &metav1.UpdateOptions{}, false, nil)
	if !f.p.Handles(admission.Update) {
		f.t.Fatal("the plugin does not handle updates")
	}
	return f.p.Validate(context.Background(), a, nil)
}

func kindOf(obj runtime.Object) string {
	if _, ok := obj.(*annex.StorageBackend); ok {
		return "StorageBackend"
	}
	return "HostedResource"
}

// wantInvalid fails unless err refuses the request with 422 on field path.
func wantInvalid(t *testing.T, err error, path, message string) {
	t.Helper()
	if !apierrors.IsInvalid(err) {
		t.Fatalf("err = %v, want a 422 Invalid", err)
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Code != http.StatusUnprocessableEntity {
		t.Fatalf("err = %v, want code 422", err)
	}
	details := status.Status().Details
	if details == nil || len(details.Causes) != 1 || details.Causes[0].Field != path || !strings.Contains(details.Causes[0].Message, message) {
		t.Errorf("causes = %+v, want one on %s saying %q", details, path, message)
	}
}

func TestBackendChange(t *testing.T) {
	t.Run("a type with objects", func(t *testing.T) {
		f := newFixture(t, servedCRD()).withObject()
		err := f.validate(hostedResource("fast"), hostedResource(annex.DefaultStorageBackend), "hostedresources", "")
		wantInvalid(t, err, "spec.storage.backend", "the type has objects in StorageBackend \"default\"")
	})
	t.Run("back to the backend of a type with objects", func(t *testing.T) {
		// The HostedResource names another backend, and annex refused to
		// move the type because an object came meanwhile: setting the
		// backend back is how its status says to serve the type again.
		f := newFixture(t, servedCRD()).withObject()
		if err := f.validate(hostedResource(""), hostedResource("fast"), "hostedresources", ""); err != nil {
			t.Errorf("setting the backend back to the type's: %v, want it allowed", err)
		}
		if err := f.validate(hostedResource(annex.DefaultStorageBackend), hostedResource("fast"), "hostedresources", ""); err != nil {
			t.Errorf("setting the backend back to the type's by name: %v, want it allowed", err)
		}
		err := f.validate(hostedResource("slow"), hostedResource("fast"), "hostedresources", "")
		wantInvalid(t, err, "spec.storage.backend", "the type has objects in StorageBackend \"default\"")
	})
	t.Run("a type without objects", func(t *testing.T) {
		f := newFixture(t, servedCRD())
		if err := f.validate(hostedResource("fast"), hostedResource(annex.DefaultStorageBackend), "hostedresources", ""); err != nil {
			t.Errorf("moving a type without objects: %v, want it allowed", err)
		}
	})
	t.Run("a type that is not served", func(t *testing.T) {
		f := newFixture(t).withObject()
		if err := f.validate(hostedResource("fast"), hostedResource(annex.DefaultStorageBackend), "hostedresources", ""); err != nil {
			t.Errorf("moving a type whose CRD is gone: %v, want it allowed", err)
		}
	})
	t.Run("a CRD that the HostedResource does not own", func(t *testing.T) {
		foreign := servedCRD()
		foreign.Labels = nil
		f := newFixture(t, foreign).withObject()
		if err := f.validate(hostedResource("fast"), hostedResource(annex.DefaultStorageBackend), "hostedresources", ""); err != nil {
			t.Errorf("a CRD created on annex directly: %v, want it left out", err)
		}
	})
	t.Run("the status", func(t *testing.T) {
		f := newFixture(t, servedCRD()).withObject()
		if err := f.validate(hostedResource("fast"), hostedResource(annex.DefaultStorageBackend), "hostedresources", "status"); err != nil {
			t.Errorf("a status update: %v, want it left alone", err)
		}
	})
	t.Run("annex cannot tell", func(t *testing.T) {
		f := newFixture(t, servedCRD())
		f.crds.PrependReactor("get", "customresourcedefinitions", func(clienttesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("connection refused")
		})
		err := f.validate(hostedResource("fast"), hostedResource(annex.DefaultStorageBackend), "hostedresources", "")
		if !apierrors.IsServiceUnavailable(err) {
			t.Errorf("err = %v, want 503 while annex cannot read the type", err)
		}
	})
}

func TestTypeChange(t *testing.T) {
	f := newFixture(t, servedCRD())
	added := hostedResource(annex.DefaultStorageBackend)
	added.Spec.Versions = append(added.Spec.Versions, apiextensionsv1.CustomResourceDefinitionVersion{Name: "v2", Served: true, Schema: object.DeepCopy()})
	if err := f.validate(added, hostedResource(annex.DefaultStorageBackend), "hostedresources", ""); err != nil {
		t.Errorf("adding a version: %v, want it allowed", err)
	}

	// The objects are stored in v1: dropping it would strand them.
	replaced := hostedResource(annex.DefaultStorageBackend)
	replaced.Spec.Versions = []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v2", Served: true, Storage: true, Schema: object.DeepCopy()}}
	err := f.validate(replaced, hostedResource(annex.DefaultStorageBackend), "hostedresources", "")
	wantInvalid(t, err, "spec.versions", "must keep every version the type has stored objects in (v1)")
}

func storageBackend(endpoint string) *annex.StorageBackend {
	return &annex.StorageBackend{
		ObjectMeta: metav1.ObjectMeta{Name: "fast", ResourceVersion: "1"},
		Spec:       annex.StorageBackendSpec{Type: annex.StorageBackendEtcd, Etcd: &annex.EtcdStorage{Endpoints: []string{endpoint}}},
	}
}

func TestStorageBackendChange(t *testing.T) {
	inUse := &v1alpha1.HostedResource{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.HostedResourceSpec{Storage: v1alpha1.HostedResourceStorage{Backend: "fast"}},
	}
	t.Run("in use", func(t *testing.T) {
		f := newFixture(t)
		if _, err := f.annex.AnnexV1alpha1().HostedResources().Create(context.Background(), inUse, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		err := f.validate(storageBackend("https://etcd-b:2379"), storageBackend("https://etcd-a:2379"), "storagebackends", "")
		wantInvalid(t, err, "spec", "cannot be changed while HostedResources keep objects in this backend ("+name+")")

		// Its labels, say, may change.
		labelled := storageBackend("https://etcd-a:2379")
		labelled.Labels = map[string]string{"tier": "fast"}
		if err := f.validate(labelled, storageBackend("https://etcd-a:2379"), "storagebackends", ""); err != nil {
			t.Errorf("changing a label of a StorageBackend in use: %v, want it allowed", err)
		}
		// Whether it may reach its store without TLS may change too: a
		// backend written before annex asked can allow plaintext.
		plaintext := storageBackend("http://etcd-a:2379")
		allowed := storageBackend("http://etcd-a:2379")
		allowed.Spec.Etcd.Insecure = true
		if err := f.validate(allowed, plaintext, "storagebackends", ""); err != nil {
			t.Errorf("allowing plaintext on a StorageBackend in use: %v, want it allowed", err)
		}
		if err := f.validate(plaintext, allowed, "storagebackends", ""); err != nil {
			t.Errorf("forbidding plaintext on a StorageBackend in use: %v, want it allowed", err)
		}
		moved := storageBackend("http://etcd-b:2379")
		moved.Spec.Etcd.Insecure = true
		wantInvalid(t, f.validate(moved, plaintext, "storagebackends", ""), "spec", "cannot be changed while")
	})
	t.Run("a type still bound to it", func(t *testing.T) {
		crd := servedCRD()
		crd.Annotations = map[string]string{v1alpha1.StorageBackendAnnotation: "fast"}
		f := newFixture(t, crd)
		err := f.validate(storageBackend("https://etcd-b:2379"), storageBackend("https://etcd-a:2379"), "storagebackends", "")
		wantInvalid(t, err, "spec", "("+name+")")
	})
	t.Run("unused", func(t *testing.T) {
		f := newFixture(t)
		if err := f.validate(storageBackend("https://etcd-b:2379"), storageBackend("https://etcd-a:2379"), "storagebackends", ""); err != nil {
			t.Errorf("changing a StorageBackend nobody uses: %v, want it allowed", err)
		}
	})
}

func TestInitialization(t *testing.T) {
	plugins := admission.NewPlugins()
	Register(plugins)
	if !slices.Contains(plugins.Registered(), PluginName) {
		t.Errorf("registered plugins = %v, want %s", plugins.Registered(), PluginName)
	}
	p := newPlugin()
	if err := p.ValidateInitialization(); err == nil {
		t.Error("a plugin without annex's loopback client passes its initialization")
	}
	Initializer{Loopback: &rest.Config{Host: "https://127.0.0.1:1"}}.Initialize(p)
	if err := p.ValidateInitialization(); err != nil {
		t.Errorf("a plugin given annex's loopback client: %v", err)
	}
}
