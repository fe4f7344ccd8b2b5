package namespace

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	fakediscovery "k8s.io/client-go/discovery/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
)

func object(kind, namespace, name string, finalizers ...string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "example.com/v1", Kind: kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID(namespace + "-" + name), Finalizers: finalizers},
	}
}

func resource(name string, verbs ...string) metav1.APIResource {
	return metav1.APIResource{Name: name, Namespaced: true, Verbs: verbs}
}

// TestDeleteContent deletes with deletecollection where it is offered and
// works, object by object elsewhere, and counts what finalizers hold.
func TestDeleteContent(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	client := metadatafake.NewSimpleMetadataClient(scheme,
		object("Widget", "doomed", "w1"), object("Widget", "doomed", "w2"), object("Widget", "other", "w3"),
		object("Gadget", "doomed", "g1"),
		object("Gizmo", "doomed", "z1"),
		object("Hold", "doomed", "h1", "example.com/hold"), object("Hold", "doomed", "h2", "example.com/hold"),
	)
	gv := schema.GroupVersion{Group: "example.com", Version: "v1"}
	var collections []string
	client.PrependReactor("delete-collection", "*", func(action clienttesting.Action) (bool, runtime.Object, error) {
		gvr, ns := action.GetResource(), action.GetNamespace()
		collections = append(collections, gvr.Resource)
		if gvr.Resource == "gizmos" {
			return true, nil, apierrors.NewMethodNotSupported(gvr.GroupResource(), "deletecollection")
		}
		list, err := client.Tracker().List(gvr, schema.GroupVersionKind{Group: "fake-metadata-client-group", Version: "v1"}, ns)
		if err != nil {
			return true, nil, err
		}
		for _, item := range list.(*metav1.List).Items {
			if err := client.Tracker().Delete(gvr, ns, item.Object.(*metav1.PartialObjectMetadata).Name); err != nil {
				return true, nil, err
			}
		}
		return true, nil, nil
	})
	// Objects with finalizers stay, as a real server keeps them.
	client.PrependReactor("delete", "holds", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, nil
	})

	discovery := &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}
	discovery.Resources = []*metav1.APIResourceList{{
		GroupVersion: gv.String(),
		APIResources: []metav1.APIResource{
			resource("widgets", "list", "delete", "deletecollection"),
			resource("widgets/status", "get", "update"),
			resource("gadgets", "list", "delete"),
			resource("gizmos", "list", "delete", "deletecollection"),
			resource("holds", "list", "delete"),
			resource("readonlies", "list", "get"),
		},
	}}

	c := &Controller{metadata: client, discovery: discovery}
	result := c.deleteContent(context.Background(), "doomed")
	if result.discoveryErr != nil || len(result.deleteErrs) > 0 {
		t.Fatalf("errors: discovery %v, delete %v", result.discoveryErr, result.deleteErrs)
	}
	if want := map[string]int{"holds.example.com": 2}; len(result.remaining) != 1 || result.remaining["holds.example.com"] != 2 {
		t.Errorf("remaining %v, want %v", result.remaining, want)
	}
	if result.finalizers["example.com/hold"] != 2 {
		t.Errorf("finalizers %v, want example.com/hold in 2", result.finalizers)
	}
	if !errors.Is(result.err(), errContentRemaining) {
		t.Errorf("err() = %v, want errContentRemaining", result.err())
	}
	// The resources are deleted in no particular order.
	sort.Strings(collections)
	if strings.Join(collections, ",") != "gizmos,widgets" {
		t.Errorf("deletecollection called for %v, want widgets and gizmos", collections)
	}
	for _, o := range []struct{ resource, namespace, name string }{
		{"widgets", "doomed", "w1"}, {"widgets", "doomed", "w2"}, {"gadgets", "doomed", "g1"}, {"gizmos", "doomed", "z1"},
	} {
		if _, err := client.Tracker().Get(gv.WithResource(o.resource), o.namespace, o.name); !apierrors.IsNotFound(err) {
			t.Errorf("%s %s/%s was not deleted: %v", o.resource, o.namespace, o.name, err)
		}
	}
	if _, err := client.Tracker().Get(gv.WithResource("widgets"), "other", "w3"); err != nil {
		t.Errorf("a widget of another namespace was deleted: %v", err)
	}

	conditions := result.conditions()
	var message string
	for _, cond := range conditions {
		if cond.Type == "NamespaceContentRemaining" {
			message = cond.Message
		}
	}
	if !strings.Contains(message, "holds.example.com has 2 resource instances") {
		t.Errorf("NamespaceContentRemaining message: %q", message)
	}
}
