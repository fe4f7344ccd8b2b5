package inprocess

import (
	"context"
	"testing"
	"time"

	apitesting "k8s.io/apimachinery/pkg/api/apitesting"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/storagebackend"

	"annex.dev/annex/pkg/storage/embedded"
)

// TestRegisteredServerIsReachedInProcess opens a resource's storage on an
// endpoint where nothing listens, registered as the embedded etcd's: the
// writes, reads and watches of the store all reach the etcd in-process.
// The store of every resource shares one compactor, which stops with the
// last store.
func TestRegisteredServerIsReachedInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, embedded.Options{DataDir: t.TempDir(), LogLevel: "error"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	const nowhere = "https://127.0.0.1:1"
	unregister := Register(nowhere, e.NewClient)
	defer unregister()

	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
	codec := apitesting.TestCodec(serializer.NewCodecFactory(scheme), examplev1.SchemeGroupVersion)
	config := storagebackend.NewDefaultConfig("/annex", codec).ForResource(schema.GroupResource{Resource: "pods"})
	config.Transport.ServerList = []string{nowhere}
	config.CompactionInterval = time.Hour

	open := func() (storage.Interface, func()) {
		s, destroy, err := NewRawStorage(config, func() runtime.Object { return &example.Pod{} }, func() runtime.Object { return &example.PodList{} }, "/pods")
		if err != nil {
			t.Fatal(err)
		}
		return s, destroy
	}
	s, destroy := open()
	other, destroyOther := open()

	w, err := other.Watch(ctx, "/pods/ns", storage.ListOptions{ResourceVersion: "0", Predicate: storage.Everything, Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	created := &example.Pod{}
	if err := s.Create(ctx, "/pods/ns/a", &example.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"}}, created, 0); err != nil {
		t.Fatalf("creating through the in-process client: %v", err)
	}
	got := &example.Pod{}
	if err := other.Get(ctx, "/pods/ns/a", storage.GetOptions{}, got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != created.ResourceVersion {
		t.Errorf("got resourceVersion %s, created %s", got.ResourceVersion, created.ResourceVersion)
	}
	select {
	case ev := <-w.ResultChan():
		if pod, ok := ev.Object.(*example.Pod); !ok || pod.Name != "a" || pod.ResourceVersion != created.ResourceVersion {
			t.Errorf("watch event %s %#v, want the ADDED pod a at %s", ev.Type, ev.Object, created.ResourceVersion)
		}
	case <-ctx.Done():
		t.Fatal("no watch event")
	}

	srv := registered(config.Transport)
	if srv == nil || srv.compactor == nil || srv.compactor.refs != 2 {
		t.Fatalf("want one compactor for both stores, got %+v", srv.compactor)
	}
	destroy()
	destroy() // subresources destroy their storage again
	if srv.compactor == nil || srv.compactor.refs != 1 {
		t.Fatalf("after one store is destroyed, want the compactor kept for the other, got %+v", srv.compactor)
	}
	destroyOther()
	if srv.compactor != nil {
		t.Fatalf("after the last store is destroyed, want no compactor, got %+v", srv.compactor)
	}

	unregister()
	if registered(config.Transport) != nil {
		t.Fatal("the endpoint is still registered")
	}
}
