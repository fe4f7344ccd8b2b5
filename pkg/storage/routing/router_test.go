package routing

import (
	"errors"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionslisters "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	annexlisters "annex.dev/annex/pkg/generated/listers/annex/v1alpha1"
)

func crd(name, backend string) *apiextensionsv1.CustomResourceDefinition {
	c := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{OwnerLabel: name}}}
	if backend != "" {
		c.Annotations = map[string]string{BackendAnnotation: backend}
	}
	return c
}

func hostedResource(name, backend string) *v1alpha1.HostedResource {
	return &v1alpha1.HostedResource{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.HostedResourceSpec{Storage: v1alpha1.HostedResourceStorage{Backend: backend}}}
}

func backend(name string, ready metav1.ConditionStatus, reason string) *v1alpha1.StorageBackend {
	sb := &v1alpha1.StorageBackend{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.StorageBackendSpec{Type: v1alpha1.StorageBackendEmbedded}}
	if ready != "" {
		sb.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: ready, Reason: reason, Message: "the probe says so"}}
	}
	return sb
}

func indexer(objs ...any) cache.Indexer {
	i := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, o := range objs {
		if err := i.Add(o); err != nil {
			panic(err)
		}
	}
	return i
}

func TestCheck(t *testing.T) {
	crds := indexer(
		crd("onDefault.example.com", ""),
		crd("explicit.example.com", "default"),
		crd("ready.example.com", "fast"),
		crd("unready.example.com", "slow"),
		crd("missing.example.com", "nowhere"),
		crd("moving.example.com", "default"),
	)
	hrs := indexer(
		hostedResource("onDefault.example.com", ""),
		hostedResource("ready.example.com", "fast"),
		hostedResource("unready.example.com", "slow"),
		hostedResource("missing.example.com", "nowhere"),
		hostedResource("moving.example.com", "fast"),
	)
	backends := indexer(backend("fast", metav1.ConditionTrue, "Running"), backend("slow", metav1.ConditionFalse, "Unreachable"))
	r := New(Options{EmbeddedDefault: true})
	defer r.Close()

	if err := r.Check("example.com", "onDefault", false); !errors.Is(err, ErrStarting) {
		t.Errorf("before the listers are set: %v, want ErrStarting", err)
	}
	synced := false
	r.SetListers(apiextensionslisters.NewCustomResourceDefinitionLister(crds), annexlisters.NewHostedResourceLister(hrs),
		annexlisters.NewStorageBackendLister(backends), func() bool { return synced })
	if err := r.Check("example.com", "onDefault", false); !errors.Is(err, ErrStarting) {
		t.Errorf("before the informers synced: %v, want ErrStarting", err)
	}
	synced = true

	for _, tc := range []struct {
		resource  string
		fromAnnex bool
		want      string // "" for no error
	}{
		{resource: "onDefault"},
		{resource: "explicit"},
		{resource: "unknown"},
		{resource: "unready", want: `StorageBackend "slow", which holds the objects of unready.example.com, is not ready (Unreachable): the probe says so`},
		{resource: "missing", want: `StorageBackend "nowhere", which holds the objects of missing.example.com, does not exist`},
		{resource: "moving", want: `moves from StorageBackend "default" to "fast"`},
		{resource: "moving", fromAnnex: true},
	} {
		err := r.Check("example.com", tc.resource, tc.fromAnnex)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s (from annex %v): %v, want no error", tc.resource, tc.fromAnnex, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s (from annex %v): %v, want an error with %q", tc.resource, tc.fromAnnex, err, tc.want)
		}
	}

	// A ready Embedded backend on an annex that runs its embedded etcd is
	// the default store: it starts at once.
	err := r.Check("example.com", "ready", false)
	if err != nil && !errors.Is(err, ErrStarting) {
		t.Errorf("ready backend: %v", err)
	}
	// Backends start in the background: the first answer says so.
	var err2 error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err2 = r.GetRESTOptions(schema.GroupResource{Group: "example.com", Resource: "missing"}, nil); !errors.Is(err2, ErrStarting) {
			break
		}
	}
	if err := err2; err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("storage of a type on a missing backend: %v, want an error saying it does not exist", err)
	}
}

func TestBackendOf(t *testing.T) {
	if got := BackendOf(crd("a.example.com", "")); got != "default" {
		t.Errorf("a CRD without the annotation is on %q, want default", got)
	}
	if got := BackendOf(crd("a.example.com", "pg")); got != "pg" {
		t.Errorf("BackendOf = %q, want pg", got)
	}
	if got := BackendOfHostedResource(hostedResource("a.example.com", "")); got != "default" {
		t.Errorf("a HostedResource without a backend asks for %q, want default", got)
	}
}
