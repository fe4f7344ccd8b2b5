package objectsize

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/value"

	"annex.dev/annex/pkg/storage/embedded"
	"annex.dev/annex/pkg/storage/lean"
)

// upperCase stands for encryption at rest: what it stores differs from what
// it was given.
type upperCase struct{}

func (upperCase) TransformFromStorage(_ context.Context, data []byte, _ value.Context) ([]byte, bool, error) {
	return []byte(strings.ToLower(string(data))), false, nil
}

func (upperCase) TransformToStorage(_ context.Context, data []byte, _ value.Context) ([]byte, error) {
	return []byte(strings.ToUpper(string(data))), nil
}

func TestTransformerRefusesOnlyWhatIsOverTheLimit(t *testing.T) {
	tr := transformer{Transformer: upperCase{}, limit: 4}
	out, err := tr.TransformToStorage(context.Background(), []byte("abcd"), nil)
	if err != nil || string(out) != "ABCD" {
		t.Errorf("storing 4 bytes under a limit of 4: got %q, %v; want the inner transformer's ABCD", out, err)
	}
	_, refused := tr.TransformToStorage(context.Background(), []byte("abcde"), nil)
	var tooLarge *TooLargeError
	if !errors.As(refused, &tooLarge) || tooLarge.Size != 5 || tooLarge.Limit != 4 {
		t.Fatalf("storing 5 bytes under a limit of 4: got %v, want a TooLargeError of 5 and 4 bytes", refused)
	}
	// Reads are never refused, whatever their size.
	read, _, err := tr.TransformFromStorage(context.Background(), []byte("ABCDEFGH"), nil)
	if err != nil || string(read) != "abcdefgh" {
		t.Errorf("reading 8 bytes under a limit of 4: got %q, %v; want the inner transformer's abcdefgh", read, err)
	}

	// The etcd3 store wraps the transformer's error; the client gets the 413.
	got := refusal(storage.NewInternalError(refused))
	if apierrors.ReasonForError(got) != metav1.StatusReasonRequestEntityTooLarge {
		t.Fatalf("refusal of a wrapped TooLargeError = %v, want 413 RequestEntityTooLarge", got)
	}
	const msg = "Request entity too large: the object is 5 bytes encoded, and annex stores objects of at most 4 bytes"
	if status := apierrors.APIStatus(nil); !errors.As(got, &status) || status.Status().Code != http.StatusRequestEntityTooLarge || status.Status().Message != msg {
		t.Errorf("refusal = %v, want code 413 and the message %q", got, msg)
	}
	other := storage.NewInternalError(errors.New("something else"))
	if got := refusal(other); !storage.IsInternalError(got) {
		t.Errorf("refusal of another error = %v, want it unchanged", got)
	}
}

const prefix = "/objectsize-test"

var widgets = schema.GroupResource{Group: "example.com", Resource: "widgets"}

func widget(name, data string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1", "kind": "Widget",
		"metadata": map[string]any{"name": name, "namespace": "ns"},
		"spec":     map[string]any{"data": data},
	}}
}

// widgetOfSize is a widget whose encoding in the store is size bytes.
func widgetOfSize(t *testing.T, name string, size int) *unstructured.Unstructured {
	t.Helper()
	empty, err := runtime.Encode(unstructured.UnstructuredJSONScheme, widget(name, ""))
	if err != nil {
		t.Fatal(err)
	}
	w := widget(name, strings.Repeat("x", size-len(empty)))
	if encoded, _ := runtime.Encode(unstructured.UnstructuredJSONScheme, w); len(encoded) != size {
		t.Fatalf("the widget encodes to %d bytes, want %d", len(encoded), size)
	}
	return w
}

func keyOf(name string) string { return "/" + widgets.Group + "/" + widgets.Resource + "/ns/" + name }

func dataOf(obj runtime.Object) string {
	data, _, _ := unstructured.NestedString(obj.(*unstructured.Unstructured).Object, "spec", "data")
	return data
}

// newStorage is the storage of widgets on the etcd at endpoint, made by
// decorator held to MaxBytes, as the registry makes it.
func newStorage(t *testing.T, e *embedded.Etcd, decorator generic.StorageDecorator) storage.Interface {
	t.Helper()
	config := storagebackend.NewDefaultConfig(prefix, unstructured.UnstructuredJSONScheme)
	config.Transport.ServerList = []string{e.ClientURL}
	config.Transport.CertFile, config.Transport.KeyFile, config.Transport.TrustedCAFile = e.CertFile, e.KeyFile, e.CAFile
	resourcePrefix := "/" + widgets.Group + "/" + widgets.Resource
	keyFunc := func(obj runtime.Object) (string, error) {
		m, err := meta.Accessor(obj)
		if err != nil {
			return "", err
		}
		return resourcePrefix + "/" + m.GetNamespace() + "/" + m.GetName(), nil
	}
	newFunc := func() runtime.Object { return &unstructured.Unstructured{} }
	newListFunc := func() runtime.Object { return &unstructured.UnstructuredList{} }
	s, destroy, err := Decorate(decorator)(config.ForResource(widgets), resourcePrefix, keyFunc, newFunc, newListFunc,
		storage.DefaultNamespaceScopedAttr, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(destroy)
	return s
}

// TestWritesOverTheLimitAreRefused writes through the upstream etcd3 store on
// the embedded etcd, with each of the caches annex offers in front: an object
// of MaxBytes is stored and read back, one byte more is refused with the
// 413 before anything is stored, by a create and by an update; an object a
// store took before the limit existed is read, shrunk and deleted.
func TestWritesOverTheLimitAreRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, embedded.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	tlsConfig, err := e.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{e.ClientURL}, TLS: tlsConfig, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	wantRefusal := func(t *testing.T, err error) {
		t.Helper()
		want := fmt.Sprintf("Request entity too large: the object is %d bytes encoded, and annex stores objects of at most %d bytes", MaxBytes+1, MaxBytes)
		var status apierrors.APIStatus
		if !errors.As(err, &status) || status.Status().Code != http.StatusRequestEntityTooLarge || status.Status().Message != want {
			t.Fatalf("got %v, want a 413 saying %q", err, want)
		}
	}
	for name, decorator := range map[string]generic.StorageDecorator{
		"no cache":    generic.UndecoratedStorage,
		"watch cache": genericregistry.StorageWithCacher(),
		"lean cache":  lean.Decorator,
	} {
		t.Run(name, func(t *testing.T) {
			s := newStorage(t, e, decorator)
			run := strings.ReplaceAll(name, " ", "-")

			// At the limit: stored, and read back whole.
			atLimit := widgetOfSize(t, run+"-at-limit", MaxBytes)
			if err := s.Create(ctx, keyOf(atLimit.GetName()), atLimit, &unstructured.Unstructured{}, 0); err != nil {
				t.Fatalf("creating an object of MaxBytes: %v", err)
			}
			got := &unstructured.Unstructured{}
			if err := s.Get(ctx, keyOf(atLimit.GetName()), storage.GetOptions{}, got); err != nil || dataOf(got) != dataOf(atLimit) {
				t.Fatalf("reading the object of MaxBytes back: %v (spec.data of %d bytes, want %d)", err, len(dataOf(got)), len(dataOf(atLimit)))
			}

			// One byte over: refused, nothing stored.
			over := widgetOfSize(t, run+"-over", MaxBytes+1)
			wantRefusal(t, s.Create(ctx, keyOf(over.GetName()), over, &unstructured.Unstructured{}, 0))
			resp, err := client.Get(ctx, prefix+keyOf(over.GetName()))
			if err != nil || len(resp.Kvs) != 0 {
				t.Errorf("after the refused create the store holds %d keys (%v), want none", len(resp.Kvs), err)
			}

			// An update one byte over: refused, the stored object unchanged.
			grow := func(input runtime.Object, _ storage.ResponseMeta) (runtime.Object, *uint64, error) {
				u := input.DeepCopyObject().(*unstructured.Unstructured)
				_ = unstructured.SetNestedField(u.Object, dataOf(u)+"x", "spec", "data")
				return u, nil, nil
			}
			wantRefusal(t, s.GuaranteedUpdate(ctx, keyOf(atLimit.GetName()), &unstructured.Unstructured{}, false, nil, grow, nil))
			got = &unstructured.Unstructured{}
			if err := s.Get(ctx, keyOf(atLimit.GetName()), storage.GetOptions{}, got); err != nil || dataOf(got) != dataOf(atLimit) {
				t.Errorf("after the refused update: %v (spec.data of %d bytes, want %d unchanged)", err, len(dataOf(got)), len(dataOf(atLimit)))
			}

			// An object stored before the limit existed: read (from the
			// cache too), shrunk by an update, deleted.
			legacy := widgetOfSize(t, run+"-legacy", MaxBytes+1000)
			encoded, err := runtime.Encode(unstructured.UnstructuredJSONScheme, legacy)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.Put(ctx, prefix+keyOf(legacy.GetName()), string(encoded)); err != nil {
				t.Fatal(err)
			}
			waitCached := func() {
				t.Helper()
				err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
					got := &unstructured.Unstructured{}
					err := s.Get(ctx, keyOf(legacy.GetName()), storage.GetOptions{ResourceVersion: "0"}, got)
					return err == nil && dataOf(got) == dataOf(legacy), nil
				})
				if err != nil {
					t.Fatalf("the object over the limit stored before it is not read back: %v", err)
				}
			}
			waitCached()
			shrink := func(input runtime.Object, _ storage.ResponseMeta) (runtime.Object, *uint64, error) {
				u := input.DeepCopyObject().(*unstructured.Unstructured)
				_ = unstructured.SetNestedField(u.Object, "small", "spec", "data")
				return u, nil, nil
			}
			shrunk := &unstructured.Unstructured{}
			if err := s.GuaranteedUpdate(ctx, keyOf(legacy.GetName()), shrunk, false, nil, shrink, nil); err != nil || dataOf(shrunk) != "small" {
				t.Fatalf("shrinking the object stored over the limit: %v", err)
			}
			if _, err := client.Put(ctx, prefix+keyOf(legacy.GetName()), string(encoded)); err != nil {
				t.Fatal(err)
			}
			// A cache hands the store its copy of the object to delete.
			waitCached()
			if err := s.Delete(ctx, keyOf(legacy.GetName()), &unstructured.Unstructured{}, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{}); err != nil {
				t.Fatalf("deleting the object stored over the limit: %v", err)
			}
		})
	}
}
