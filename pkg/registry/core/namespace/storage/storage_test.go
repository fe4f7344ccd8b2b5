package storage_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage/storagebackend"

	"annex.dev/annex/pkg/registry/core"
	"annex.dev/annex/pkg/registry/core/namespace/storage"
	"annex.dev/annex/pkg/registry/status"
	"annex.dev/annex/pkg/storage/embedded"
)

const prefix = "/annex-test"

type fixture struct {
	ns       *storage.REST
	status   *status.REST
	finalize *storage.FinalizeREST
	etcd     *clientv3.Client
}

// newFixture starts an embedded etcd and builds the storage as annex does:
// through core.RESTOptionsGetter, with the watch cache.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	etcd, err := embedded.Start(ctx, embedded.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)

	// The codec given here is annex's in real life; the getter replaces it.
	config := storagebackend.NewDefaultConfig(prefix, nil)
	config.Transport = storagebackend.TransportConfig{
		ServerList: []string{etcd.ClientURL}, TrustedCAFile: etcd.CAFile, CertFile: etcd.CertFile, KeyFile: etcd.KeyFile,
	}
	resource := corev1.Resource("namespaces")
	opts := generic.RESTOptions{
		StorageConfig:           config.ForResource(resource),
		Decorator:               genericregistry.StorageWithCacher(),
		DeleteCollectionWorkers: 1,
		EnableGarbageCollection: true,
		ResourcePrefix:          "/namespaces",
	}
	ns, st, fin, err := storage.NewREST(core.Scheme, core.RESTOptionsGetter(opts))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Destroy)

	tlsInfo := transport.TLSInfo{CertFile: etcd.CertFile, KeyFile: etcd.KeyFile, TrustedCAFile: etcd.CAFile}
	tlsConfig, err := tlsInfo.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.ClientURL}, TLS: tlsConfig, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return &fixture{ns: ns, status: st, finalize: fin, etcd: client}
}

func (f *fixture) create(t *testing.T, ctx context.Context, ns *corev1.Namespace) *corev1.Namespace {
	t.Helper()
	obj, err := f.ns.Create(ctx, ns, rest.ValidateAllObjectFunc, &metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace %s: %v", ns.Name, err)
	}
	return obj.(*corev1.Namespace)
}

func (f *fixture) get(t *testing.T, ctx context.Context, name string) (*corev1.Namespace, error) {
	t.Helper()
	obj, err := f.ns.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return obj.(*corev1.Namespace), nil
}

func (f *fixture) setFinalizers(t *testing.T, ctx context.Context, ns *corev1.Namespace, finalizers ...corev1.FinalizerName) (*corev1.Namespace, error) {
	t.Helper()
	ns = ns.DeepCopy()
	ns.Spec.Finalizers = finalizers
	obj, _, err := f.finalize.Update(ctx, ns.Name, rest.DefaultUpdatedObjectInfo(ns), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	return obj.(*corev1.Namespace), nil
}

func list(t *testing.T, ctx context.Context, r rest.Lister, label, field string) []string {
	t.Helper()
	opts := &metainternalversion.ListOptions{LabelSelector: labels.Everything(), FieldSelector: fields.Everything()}
	var err error
	if label != "" {
		if opts.LabelSelector, err = labels.Parse(label); err != nil {
			t.Fatal(err)
		}
	}
	if field != "" {
		if opts.FieldSelector, err = fields.ParseSelector(field); err != nil {
			t.Fatal(err)
		}
	}
	obj, err := r.List(ctx, opts)
	if err != nil {
		t.Fatalf("list with labels %q and fields %q: %v", label, field, err)
	}
	var names []string
	for _, ns := range obj.(*corev1.NamespaceList).Items {
		names = append(names, ns.Name)
	}
	return names
}

func nextEvent(t *testing.T, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case e, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("the watch ended")
		}
		// The watch cache wraps objects to serialize them once.
		if c, ok := e.Object.(runtime.CacheableObject); ok {
			e.Object = c.GetObject()
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event within 10s")
	}
	return watch.Event{}
}

func TestNamespaceLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := genericapirequest.WithNamespace(genericapirequest.NewContext(), metav1.NamespaceNone)

	alpha := f.create(t, ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "alpha", Labels: map[string]string{"team": "a"}}})
	if alpha.Status.Phase != corev1.NamespaceActive {
		t.Errorf("phase after create: %q, want Active", alpha.Status.Phase)
	}
	if !slices.Equal(alpha.Spec.Finalizers, []corev1.FinalizerName{corev1.FinalizerKubernetes}) {
		t.Errorf("spec.finalizers after create: %v, want [kubernetes]", alpha.Spec.Finalizers)
	}
	if alpha.Labels[corev1.LabelMetadataName] != "alpha" {
		t.Errorf("labels after create: %v, want %s=alpha", alpha.Labels, corev1.LabelMetadataName)
	}
	f.create(t, ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "beta"}})

	t.Run("etcd holds v1 JSON", func(t *testing.T) {
		resp, err := f.etcd.Get(context.Background(), prefix+"/namespaces/alpha")
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 {
			t.Fatalf("%d keys at %s/namespaces/alpha, want 1", len(resp.Kvs), prefix)
		}
		if v := string(resp.Kvs[0].Value); !strings.Contains(v, `"apiVersion":"v1"`) || !strings.Contains(v, `"kind":"Namespace"`) {
			t.Errorf("stored value is not v1 JSON: %s", v)
		}
	})

	t.Run("names are DNS labels", func(t *testing.T) {
		for _, name := range []string{"Upper", "dot.ted", strings.Repeat("a", 64)} {
			_, err := f.ns.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, rest.ValidateAllObjectFunc, &metav1.CreateOptions{})
			if !apierrors.IsInvalid(err) {
				t.Errorf("create %q: got %v, want Invalid", name, err)
			}
		}
	})

	t.Run("selectors", func(t *testing.T) {
		for _, tc := range []struct {
			label, field string
			want         []string
		}{
			{"", "", []string{"alpha", "beta"}},
			{"team=a", "", []string{"alpha"}},
			{"", "metadata.name=beta", []string{"beta"}},
			{"", "status.phase=Active", []string{"alpha", "beta"}},
			{"", "status.phase=Terminating", nil},
		} {
			if got := list(t, ctx, f.ns, tc.label, tc.field); !slices.Equal(got, tc.want) {
				t.Errorf("list labels %q fields %q: %v, want %v", tc.label, tc.field, got, tc.want)
			}
		}
	})

	t.Run("an update changes neither spec.finalizers nor status", func(t *testing.T) {
		ns := alpha.DeepCopy()
		ns.Spec.Finalizers = nil
		ns.Status.Phase = corev1.NamespaceTerminating
		ns.Labels["updated"] = "yes"
		obj, _, err := f.ns.Update(ctx, ns.Name, rest.DefaultUpdatedObjectInfo(ns), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := obj.(*corev1.Namespace)
		if got.Labels["updated"] != "yes" || len(got.Spec.Finalizers) != 1 || got.Status.Phase != corev1.NamespaceActive {
			t.Errorf("after update: labels %v, finalizers %v, phase %q", got.Labels, got.Spec.Finalizers, got.Status.Phase)
		}
		alpha = got
	})

	t.Run("a status update must agree with the deletion timestamp", func(t *testing.T) {
		ns := alpha.DeepCopy()
		ns.Status.Phase = corev1.NamespaceTerminating
		_, _, err := f.status.Update(ctx, ns.Name, rest.DefaultUpdatedObjectInfo(ns), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{})
		if !apierrors.IsInvalid(err) {
			t.Errorf("status update to Terminating with no deletionTimestamp: got %v, want Invalid", err)
		}
		ns = alpha.DeepCopy()
		ns.Status.Conditions = []corev1.NamespaceCondition{{Type: "Example", Status: corev1.ConditionTrue}}
		ns.Spec.Finalizers = nil
		obj, _, err := f.status.Update(ctx, ns.Name, rest.DefaultUpdatedObjectInfo(ns), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := obj.(*corev1.Namespace)
		if len(got.Status.Conditions) != 1 || len(got.Spec.Finalizers) != 1 {
			t.Errorf("after status update: conditions %v, finalizers %v", got.Status.Conditions, got.Spec.Finalizers)
		}
		alpha = got
	})

	t.Run("delete terminates, finalize removes", func(t *testing.T) {
		w, err := f.ns.Watch(ctx, &metainternalversion.ListOptions{
			ResourceVersion: alpha.ResourceVersion,
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", "alpha"),
			LabelSelector:   labels.Everything(),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()

		obj, deleted, err := f.ns.Delete(ctx, "alpha", rest.ValidateAllObjectFunc, &metav1.DeleteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns := obj.(*corev1.Namespace)
		if deleted || ns.DeletionTimestamp.IsZero() || ns.Status.Phase != corev1.NamespaceTerminating {
			t.Fatalf("delete: deleted=%v, deletionTimestamp %v, phase %q; want a Terminating namespace", deleted, ns.DeletionTimestamp, ns.Status.Phase)
		}
		if e := nextEvent(t, w); e.Type != watch.Modified || e.Object.(*corev1.Namespace).Status.Phase != corev1.NamespaceTerminating {
			t.Errorf("watch: %s %v, want MODIFIED to Terminating", e.Type, e.Object)
		}
		if got := list(t, ctx, f.ns, "", "status.phase=Terminating"); !slices.Equal(got, []string{"alpha"}) {
			t.Errorf("terminating namespaces: %v", got)
		}

		// Deleting again changes nothing while spec.finalizers remain.
		obj, deleted, err = f.ns.Delete(ctx, "alpha", rest.ValidateAllObjectFunc, nil)
		if err != nil || deleted || obj.(*corev1.Namespace).ResourceVersion != ns.ResourceVersion {
			t.Errorf("second delete: deleted=%v, err %v", deleted, err)
		}
		// A status update cannot make it Active again.
		back := ns.DeepCopy()
		back.Status.Phase = corev1.NamespaceActive
		if _, _, err := f.status.Update(ctx, "alpha", rest.DefaultUpdatedObjectInfo(back), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("status update to Active while terminating: got %v, want Invalid", err)
		}
		if _, err := f.setFinalizers(t, ctx, ns, "not-qualified"); !apierrors.IsInvalid(err) {
			t.Errorf("finalize with an unqualified finalizer: got %v, want Invalid", err)
		}

		if _, err := f.setFinalizers(t, ctx, ns); err != nil {
			t.Fatal(err)
		}
		if _, err := f.get(t, ctx, "alpha"); !apierrors.IsNotFound(err) {
			t.Errorf("get after finalize: got %v, want NotFound", err)
		}
		if e := nextEvent(t, w); e.Type != watch.Deleted {
			t.Errorf("watch: %s, want DELETED", e.Type)
		}
	})

	t.Run("metadata.finalizers hold a finalized namespace", func(t *testing.T) {
		ns := f.create(t, ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gamma", Finalizers: []string{"example.com/keep"}}})
		if _, _, err := f.ns.Delete(ctx, "gamma", rest.ValidateAllObjectFunc, nil); err != nil {
			t.Fatal(err)
		}
		ns, err := f.get(t, ctx, "gamma")
		if err != nil {
			t.Fatal(err)
		}
		if ns, err = f.setFinalizers(t, ctx, ns); err != nil {
			t.Fatal(err)
		}
		if len(ns.Spec.Finalizers) != 0 || ns.Status.Phase != corev1.NamespaceTerminating {
			t.Errorf("after finalize: finalizers %v, phase %q", ns.Spec.Finalizers, ns.Status.Phase)
		}
		ns.Finalizers = nil
		if _, _, err := f.ns.Update(ctx, "gamma", rest.DefaultUpdatedObjectInfo(ns), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.get(t, ctx, "gamma"); !apierrors.IsNotFound(err) {
			t.Errorf("get after the last finalizer went: got %v, want NotFound", err)
		}
	})

	t.Run("a namespace with no finalizers goes at once", func(t *testing.T) {
		ns, err := f.get(t, ctx, "beta")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.setFinalizers(t, ctx, ns); err != nil {
			t.Fatal(err)
		}
		_, deleted, err := f.ns.Delete(ctx, "beta", rest.ValidateAllObjectFunc, &metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationForeground)})
		if err != nil || !deleted {
			t.Errorf("delete: deleted=%v, err %v; want deleted", deleted, err)
		}
		if _, err := f.get(t, ctx, "beta"); !apierrors.IsNotFound(err) {
			t.Errorf("get after delete: got %v, want NotFound", err)
		}
	})

	t.Run("a UID precondition that does not match conflicts", func(t *testing.T) {
		f.create(t, ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "delta"}})
		uid := alpha.UID
		_, _, err := f.ns.Delete(ctx, "delta", rest.ValidateAllObjectFunc, &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if !apierrors.IsConflict(err) {
			t.Errorf("delete with another UID: got %v, want Conflict", err)
		}
	})

	t.Run("a dry-run delete changes nothing", func(t *testing.T) {
		_, _, err := f.ns.Delete(ctx, "delta", rest.ValidateAllObjectFunc, &metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		ns, err := f.get(t, ctx, "delta")
		if err != nil || !ns.DeletionTimestamp.IsZero() {
			t.Errorf("after a dry-run delete: %v, %v", ns, err)
		}
	})
}

func ptr[T any](v T) *T { return &v }
