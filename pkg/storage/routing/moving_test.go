package routing

import (
	"context"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionslisters "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/client-go/tools/cache"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// twoObjects is a store holding two objects of a type, which records the
// deletes it is asked for.
type twoObjects struct {
	storage.Interface
	deleted []string
}

func (s *twoObjects) GetList(_ context.Context, _ string, _ storage.ListOptions, listObj runtime.Object) error {
	list := listObj.(*unstructured.UnstructuredList)
	list.SetResourceVersion("7")
	for _, name := range []string{"a", "b"} {
		item := unstructured.Unstructured{}
		item.SetName(name)
		list.Items = append(list.Items, item)
	}
	return nil
}

func (s *twoObjects) Delete(_ context.Context, key string, _ runtime.Object, _ *storage.Preconditions, _ storage.ValidateObjectFunc, _ runtime.Object, _ storage.DeleteOptions) error {
	s.deleted = append(s.deleted, key)
	return nil
}

// The storage of a type whose CRD is deleted for a move lists no object and
// deletes none, so that the CRD finalizer leaves every object in the old
// store; any other deletion of a CRD, or the CRD before its deletion, or a
// new CRD of the same name, lists and deletes as the store does.
func TestKeepOnMove(t *testing.T) {
	const uid = types.UID("0b7c3a52-old")
	now := &metav1.Time{Time: time.Now()}
	the := func(uid types.UID, deleting, marked bool) *apiextensionsv1.CustomResourceDefinition {
		c := crd("things.example.com", "fast")
		c.UID = uid
		if deleting {
			c.DeletionTimestamp = now
		}
		if marked {
			c.Annotations[v1alpha1.MoveObservedAnnotation] = "2 2026-12-02T05:00:00Z"
		}
		return c
	}
	for _, tc := range []struct {
		name string
		crd  *apiextensionsv1.CustomResourceDefinition
		keep bool
	}{
		{"served", the(uid, false, false), false},
		{"a move observed, not deleted yet", the(uid, false, true), false},
		{"deleted, with its objects", the(uid, true, false), false},
		{"deleted for a move", the(uid, true, true), true},
		{"re-created under the same name", the("9f1d-new", true, true), false},
	} {
		lister := apiextensionslisters.NewCustomResourceDefinitionLister(indexer(tc.crd))
		inner := &twoObjects{}
		decorator := func(*storagebackend.ConfigForResource, string, func(runtime.Object) (string, error), func() runtime.Object,
			func() runtime.Object, storage.AttrFunc, storage.IndexerFuncs, *cache.Indexers) (storage.Interface, factory.DestroyFunc, error) {
			return inner, func() {}, nil
		}
		s, _, err := keepOnMove(decorator, lister.Get, "things.example.com", uid, "fast")(
			&storagebackend.ConfigForResource{Config: storagebackend.Config{Prefix: "/annex/installs/a"}}, "/example.com/things", nil, nil, nil, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		list := &unstructured.UnstructuredList{}
		if err := s.GetList(context.Background(), "/example.com/things", storage.ListOptions{}, list); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		deleteErr := s.Delete(context.Background(), "/example.com/things/a", &unstructured.Unstructured{}, nil, nil, nil, storage.DeleteOptions{})
		if tc.keep {
			if len(list.Items) != 0 || list.GetResourceVersion() != "7" {
				t.Errorf("%s: the list has %d objects at %q, want none at the store's revision", tc.name, len(list.Items), list.GetResourceVersion())
			}
			if deleteErr == nil || len(inner.deleted) > 0 {
				t.Errorf("%s: a delete reached the store (%v): want it refused", tc.name, inner.deleted)
			}
			continue
		}
		if len(list.Items) != 2 || deleteErr != nil || len(inner.deleted) != 1 {
			t.Errorf("%s: listed %d objects, deleted %v (%v); want the store's 2, and the delete done", tc.name, len(list.Items), inner.deleted, deleteErr)
		}
	}
}
