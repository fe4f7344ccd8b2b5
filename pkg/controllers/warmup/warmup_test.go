package warmup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsfake "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"

	"annex.dev/annex/pkg/storage/routing"
)

// crd is the type <plural>.example.com, served in the given versions
// (a "-" suffix: not served), established or not.
func crd(plural string, established bool, versions ...string) *apiextensionsv1.CustomResourceDefinition {
	c := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + ".example.com", UID: types.UID(plural)},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "example.com",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: plural},
		},
	}
	for _, v := range versions {
		name, notServed := v, false
		if v[len(v)-1] == '-' {
			name, notServed = v[:len(v)-1], true
		}
		c.Spec.Versions = append(c.Spec.Versions, apiextensionsv1.CustomResourceDefinitionVersion{Name: name, Served: !notServed})
	}
	if established {
		c.Status.Conditions = []apiextensionsv1.CustomResourceDefinitionCondition{{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue}}
	}
	return c
}

// fixture is a Warmer over a fake annex, running until the test ends.
type fixture struct {
	t        *testing.T
	w        *Warmer
	crds     *apiextensionsfake.Clientset
	metadata *metadatafake.FakeMetadataClient

	mu     sync.Mutex
	listed []string
}

func newFixture(t *testing.T, available func(group, resource string) error, crds ...*apiextensionsv1.CustomResourceDefinition) *fixture {
	t.Helper()
	f := &fixture{t: t, crds: apiextensionsfake.NewSimpleClientset()}
	for _, c := range crds {
		if _, err := f.crds.ApiextensionsV1().CustomResourceDefinitions().Create(context.Background(), c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.metadata = metadatafake.NewSimpleMetadataClient(metadatafake.NewTestScheme())
	f.metadata.PrependReactor("list", "*", func(action clienttesting.Action) (bool, runtime.Object, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		gvr := action.GetResource()
		f.listed = append(f.listed, gvr.Resource+"/"+gvr.Version)
		return true, &metav1.List{}, nil
	})
	f.w = &Warmer{Available: available, crds: f.crds, metadata: f.metadata, warmed: map[types.UID]bool{}}
	return f
}

// run starts the Warmer and waits until it is ready.
func (f *fixture) run() {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.w.Run(ctx)
	}()
	f.t.Cleanup(func() {
		cancel()
		<-done
	})
	if err := f.w.Check(nil); err == nil {
		f.t.Error("the replica is ready before the hosted types' storage is open")
	}
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return f.w.Check(nil) == nil, nil
	}); err != nil {
		f.t.Fatalf("the Warmer did not become ready: %v", err)
	}
}

func (f *fixture) lists() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(slices.Values(f.listed))
}

func TestWarmsEstablishedTypesBeforeReady(t *testing.T) {
	f := newFixture(t, nil,
		crd("things", true, "v1", "v2", "v0-"),
		crd("pending", false, "v1"),
	)
	terminating := crd("leaving", true, "v1")
	now := metav1.Now()
	terminating.DeletionTimestamp = &now
	terminating.Finalizers = []string{apiextensionsv1.CustomResourceCleanupFinalizer}
	if _, err := f.crds.ApiextensionsV1().CustomResourceDefinitions().Create(context.Background(), terminating, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.run()
	// Ready means warmed: the lists have been made by then.
	if got, want := f.lists(), []string{"things/v1", "things/v2"}; !slices.Equal(got, want) {
		t.Errorf("lists made = %v, want %v: every served version of each established type, and nothing else", got, want)
	}
}

func TestWarmsATypeOnceItIsEstablished(t *testing.T) {
	pending := crd("things", false, "v1")
	f := newFixture(t, nil, pending)
	f.run()
	if got := f.lists(); len(got) != 0 {
		t.Fatalf("lists made = %v before the type is established", got)
	}
	established := crd("things", true, "v1")
	for range 2 {
		// The second update is for a type already warmed.
		established.Annotations = map[string]string{"touched": fmt.Sprint(time.Now().UnixNano())}
		if _, err := f.crds.ApiextensionsV1().CustomResourceDefinitions().Update(context.Background(), established, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return len(f.lists()) > 0, nil
	}); err != nil {
		t.Fatal("a type that became established was not warmed")
	}
	time.Sleep(100 * time.Millisecond)
	if got, want := f.lists(), []string{"things/v1"}; !slices.Equal(got, want) {
		t.Errorf("lists made = %v, want %v: once per type", got, want)
	}
}

func TestLeavesUnavailableBackendsToTheFirstRequest(t *testing.T) {
	f := newFixture(t, func(group, resource string) error {
		switch resource {
		case "broken":
			return errors.New(`StorageBackend "slow" is unreachable`)
		case "starting":
			// Still starting, not unavailable: the list is tried.
			return fmt.Errorf("annex is %w", routing.ErrStarting)
		}
		return nil
	}, crd("broken", true, "v1"), crd("starting", true, "v1"), crd("things", true, "v1"))
	start := time.Now()
	f.run()
	if got, want := f.lists(), []string{"starting/v1", "things/v1"}; !slices.Equal(got, want) {
		t.Errorf("lists made = %v, want %v: none on an unavailable backend", got, want)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("an unavailable backend held readiness for %v", elapsed)
	}
}
