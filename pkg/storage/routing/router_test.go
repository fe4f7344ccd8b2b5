package routing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionslisters "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/tools/cache"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	annexlisters "annex.dev/annex/pkg/generated/listers/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/backend"
	"annex.dev/annex/pkg/storage/secretpolicy"
)

func crd(name, backend string) *apiextensionsv1.CustomResourceDefinition {
	c := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.HostedResourceLabel: name}}}
	if backend != "" {
		c.Annotations = map[string]string{v1alpha1.StorageBackendAnnotation: backend}
	}
	return c
}

func hostedResource(name, backend string) *v1alpha1.HostedResource {
	return &v1alpha1.HostedResource{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.HostedResourceSpec{Storage: v1alpha1.HostedResourceStorage{Backend: backend}}}
}

func storageBackend(name string, ready metav1.ConditionStatus, reason string) *v1alpha1.StorageBackend {
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
	backends := indexer(storageBackend("fast", metav1.ConditionTrue, "Running"), storageBackend("slow", metav1.ConditionFalse, "Unreachable"))
	r := New(Options{Backends: backend.NewFactory(backend.Options{DefaultStore: backend.StoreEmbeddedEtcd})})
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
		{resource: "unready", want: `StorageBackend "slow", which holds the objects of unready.example.com, is not ready (Unreachable); its status says why`},
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
		case err != nil && strings.Contains(err.Error(), "the probe says so"):
			t.Errorf("%s: the error a user gets carries the probe's details, which are for operators: %v", tc.resource, err)
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

// TestBackendThatCannotBeReached starts a PostgreSQL backend whose database
// does not answer: each attempt fails at once with the reason, the Router
// tries again after a wait that doubles, and the types on it are refused
// with that reason meanwhile.
func TestBackendThatCannotBeReached(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("postgres://annex@127.0.0.1:%d/annex?sslmode=disable", l.Addr().(*net.TCPAddr).Port)
	l.Close()

	var mu sync.Mutex
	var attempts []time.Time
	r := New(Options{
		Backends: backend.NewFactory(backend.Options{
			RuntimeDir:   t.TempDir(),
			Postgres:     backend.Postgres{ConnectTimeout: time.Second},
			SecretPolicy: secretpolicy.Policy{Namespaces: []string{secretpolicy.DefaultNamespace}},
			Secrets: func(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
				mu.Lock()
				attempts = append(attempts, time.Now())
				mu.Unlock()
				return &corev1.Secret{Data: map[string][]byte{"dsn": []byte(dsn)}}, nil
			},
		}),
		RetryInterval: 200 * time.Millisecond,
	})
	defer r.Close()
	sb := storageBackend("pg", metav1.ConditionTrue, "Reachable")
	sb.Spec = v1alpha1.StorageBackendSpec{Type: v1alpha1.StorageBackendPostgres,
		Postgres: &v1alpha1.PostgresStorage{DSNSecretRef: v1alpha1.SecretKeySelector{Namespace: secretpolicy.DefaultNamespace, Name: "pg", Key: "dsn"}, Insecure: true}}
	r.SetListers(apiextensionslisters.NewCustomResourceDefinitionLister(indexer(crd("ledgers.example.com", "pg"))),
		annexlisters.NewHostedResourceLister(indexer(hostedResource("ledgers.example.com", "pg"))),
		annexlisters.NewStorageBackendLister(indexer(sb)), func() bool { return true })

	// Requests keep coming, as they would; each may start an attempt.
	// Attempts come at about 0, 0.2, 0.6, 1.4 and 3.0 s (each failure at
	// once, the wait doubling from 200ms): the requests stop at 2.5 s,
	// between two of them, so that no attempt is under way when the
	// errors are read below (at 3 s, one may just be starting).
	var last error
	for deadline := time.Now().Add(2500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		last = r.Check("example.com", "ledgers", false)
	}
	if last == nil || errors.Is(last, ErrStarting) {
		t.Fatalf("a type on a backend that cannot be reached: %v, want the reason it failed", last)
	}
	for _, want := range []string{`StorageBackend "pg"`, "unreachable", "failed attempt", "log says why"} {
		if !strings.Contains(last.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, last)
		}
	}
	// Where the database is and why it failed is for operators: annex's
	// log has it, a user of the type does not get it.
	address := strings.TrimPrefix(strings.Split(dsn, "/annex?")[0], "postgres://annex@")
	if strings.Contains(last.Error(), address) || strings.Contains(last.Error(), "connection refused") {
		t.Errorf("the error a user gets names the database or the detail of the failure: %v", last)
	}
	if _, err := r.backendOf("pg"); err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "tries again") {
		t.Errorf("the operator's error: %v, want the reason it failed and when annex tries again", err)
	}
	mu.Lock()
	defer mu.Unlock()
	// 200ms, 400ms, 800ms: four attempts in 2.5s, not a dozen.
	if len(attempts) < 3 || len(attempts) > 5 {
		t.Fatalf("%d attempts to start the backend in 2.5s with a first retry after 200ms, want 3 to 5", len(attempts))
	}
	for i := 2; i < len(attempts); i++ {
		prev, gap := attempts[i-1].Sub(attempts[i-2]), attempts[i].Sub(attempts[i-1])
		if gap < prev*3/2 {
			t.Errorf("attempt %d came %s after the one before, which came %s after its own: the wait does not grow", i+1, gap, prev)
		}
	}
}

// A type's cache is the one its CRD records: the watch cache unless the
// HostedResource chose another, and none for a type being deleted on a
// backend that does not exist.
func TestStorageCache(t *testing.T) {
	etcd := genericoptions.NewEtcdOptions(storagebackend.NewDefaultConfig("/annex", nil))
	etcd.StorageConfig.Transport.ServerList = []string{"https://127.0.0.1:2379"}
	r := New(Options{Backends: backend.NewFactory(backend.Options{Etcd: *etcd, RuntimeDir: t.TempDir()})})
	defer r.Close()

	deleted := crd("gone.example.com", "nowhere")
	deleted.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	withCache := func(name string, cache v1alpha1.StorageCache) *apiextensionsv1.CustomResourceDefinition {
		c := crd(name, "")
		c.Annotations = map[string]string{v1alpha1.StorageCacheAnnotation: string(cache)}
		return c
	}
	r.SetListers(apiextensionslisters.NewCustomResourceDefinitionLister(indexer(crd("busy.example.com", ""), deleted,
		withCache("quiet.example.com", v1alpha1.StorageCacheNone), withCache("many.example.com", v1alpha1.StorageCacheLean))),
		annexlisters.NewHostedResourceLister(indexer()), annexlisters.NewStorageBackendLister(indexer()), func() bool { return true })

	decorator := map[uintptr]string{
		reflect.ValueOf(generic.UndecoratedStorage).Pointer():    "none",
		reflect.ValueOf(r.Lean().Decorator("", 0, "")).Pointer(): "lean",
	}
	for _, tc := range []struct{ resource, want string }{
		{"busy", "the watch cache"},
		{"quiet", "none"},
		{"many", "lean"},
		{"gone", "none"},
	} {
		gr := schema.GroupResource{Group: "example.com", Resource: tc.resource}
		opts, err := r.restOptions(gr, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.resource, err)
		}
		// GetRESTOptions holds the cache's storage to the size limit
		// (package objectsize tests the limit on each cache).
		if limited, err := r.GetRESTOptions(gr, nil); err != nil || reflect.ValueOf(limited.Decorator).Pointer() == reflect.ValueOf(opts.Decorator).Pointer() {
			t.Errorf("%s.example.com: the storage options served (%v) are not held to the object size limit", tc.resource, err)
		}
		got, ok := decorator[reflect.ValueOf(opts.Decorator).Pointer()]
		if !ok {
			got = "the watch cache"
		}
		if got != tc.want {
			t.Errorf("%s.example.com has cache %s, want %s", tc.resource, got, tc.want)
		}
	}
}

// A type's keys are under the prefix its CRD records, and under the store's
// own prefix when it records none (a type created before installs had
// prefixes of their own), whatever its cache.
func TestKeyPrefix(t *testing.T) {
	etcd := genericoptions.NewEtcdOptions(storagebackend.NewDefaultConfig("/annex", nil))
	etcd.StorageConfig.Transport.ServerList = []string{"https://127.0.0.1:2379"}
	r := New(Options{Backends: backend.NewFactory(backend.Options{Etcd: *etcd, RuntimeDir: t.TempDir()})})
	defer r.Close()

	withPrefix := func(name, prefix string, cache v1alpha1.StorageCache) *apiextensionsv1.CustomResourceDefinition {
		c := crd(name, "")
		c.Annotations = map[string]string{v1alpha1.StorageCacheAnnotation: string(cache)}
		if prefix != "" {
			c.Annotations[v1alpha1.StorageKeyPrefixAnnotation] = prefix
		}
		return c
	}
	r.SetListers(apiextensionslisters.NewCustomResourceDefinitionLister(indexer(
		withPrefix("old.example.com", "", v1alpha1.StorageCacheWatchCache),
		withPrefix("mine.example.com", "/annex/installs/team-a.annex", v1alpha1.StorageCacheWatchCache),
		withPrefix("lean.example.com", "/annex/installs/team-b.annex", v1alpha1.StorageCacheLean),
	)), annexlisters.NewHostedResourceLister(indexer()), annexlisters.NewStorageBackendLister(indexer()), func() bool { return true })

	for resource, want := range map[string]string{
		"old":  "/annex",
		"mine": "/annex/installs/team-a.annex",
		"lean": "/annex/installs/team-b.annex",
	} {
		opts, err := r.GetRESTOptions(schema.GroupResource{Group: "example.com", Resource: resource}, nil)
		if err != nil {
			t.Fatalf("%s: %v", resource, err)
		}
		if got := opts.StorageConfig.Prefix; got != want {
			t.Errorf("%s.example.com keeps its objects under %q, want %q", resource, got, want)
		}
	}
	// Each type's options are its own: the store's prefix is unchanged.
	if got := etcd.StorageConfig.Prefix; got != "/annex" {
		t.Errorf("the store's prefix became %q", got)
	}
	opts, err := r.opts.Backends.Default().GetRESTOptions(schema.GroupResource{Group: "example.com", Resource: "other"}, nil)
	if err != nil || opts.StorageConfig.Prefix != "/annex" {
		t.Errorf("another type on the store gets prefix %q (%v), want /annex", opts.StorageConfig.Prefix, err)
	}
}
