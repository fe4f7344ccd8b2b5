//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"annex.dev/annex/pkg/controllers/adoption"
	"annex.dev/annex/test/integration/framework"
)

var configMapsGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

// thirdPartyCRD is a CRD written the way a project ships one: two versions
// (v1 stored), a status subresource, printer columns, a default and a
// required field.
func thirdPartyCRD(group string) *apiextensionsv1.CustomResourceDefinition {
	schemaProps := &apiextensionsv1.JSONSchemaProps{
		Type: "object",
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"spec": {
				Type:     "object",
				Required: []string{"size"},
				Properties: map[string]apiextensionsv1.JSONSchemaProps{
					"size":  {Type: "integer"},
					"color": {Type: "string", Default: &apiextensionsv1.JSON{Raw: []byte(`"blue"`)}},
				},
			},
			"status": {
				Type:       "object",
				Properties: map[string]apiextensionsv1.JSONSchemaProps{"ready": {Type: "boolean"}},
			},
		},
	}
	version := func(name string, storage bool) apiextensionsv1.CustomResourceDefinitionVersion {
		return apiextensionsv1.CustomResourceDefinitionVersion{
			Name: name, Served: true, Storage: storage,
			Schema:       &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: schemaProps.DeepCopy()},
			Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
			AdditionalPrinterColumns: []apiextensionsv1.CustomResourceColumnDefinition{
				{Name: "Size", Type: "integer", JSONPath: ".spec.size"},
				{Name: "Ready", Type: "boolean", JSONPath: ".status.ready"},
			},
		}
	}
	return &apiextensionsv1.CustomResourceDefinition{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition"},
		ObjectMeta: metav1.ObjectMeta{Name: "widgets." + group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: group,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "widgets", Singular: "widget", Kind: "Widget", ListKind: "WidgetList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{
				version("v1", true), version("v1beta1", false),
			},
		},
	}
}

func toUnstructured(t *testing.T, obj any) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

// writer keeps creating and updating objects while the adoption runs, as a
// controller of the type would: it retries a write the freeze refuses, and
// remembers every write the server acknowledged.
type writer struct {
	t     *testing.T
	gvr   schema.GroupVersionResource
	ns    string
	mu    sync.Mutex
	acked map[string]int64 // name -> spec.size acknowledged last
	// tried is the spec.size of the last write of each name, acknowledged
	// or not: one cut off when the writer stops may have been applied.
	tried   map[string]int64
	refused int
	errs    []string
	// freeze is the refusal's message, which the writer retries.
	freeze string
	// retryUnavailable: the writer retries a 503 too (annex restarting
	// while it serves the type), and counts it in unavailable.
	retryUnavailable bool
	unavailable      int
	// conflicts counts updates answered 409 and retried from a new read.
	// The writer reads, then updates; the one update whose read the
	// cluster answered before the switch and whose write annex answers
	// after it (or the reverse, for a release) carries a resourceVersion of
	// the other store, and the store refuses it, as it must. The writer is
	// sequential and sees one switch, so there is at most one.
	conflicts int
}

func (w *writer) run(ctx context.Context) {
	dyn := adminClient(w.t).Resource(w.gvr).Namespace(w.ns)
	for i := 0; ctx.Err() == nil; i++ {
		name := fmt.Sprintf("written-%04d", i/3)
		size := int64(i)
		var err error
		w.mu.Lock()
		w.tried[name] = size
		w.mu.Unlock()
		retriedUnavailable := false
		for attempt := 0; ; attempt++ {
			if i%3 == 0 {
				obj := widget(w.gvr, w.ns, name, size)
				_, err = dyn.Create(ctx, obj, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) && retriedUnavailable {
					// The attempt answered 503 was applied after all (annex
					// was killed after the write, before its answer): it
					// counts if the object is the one it wrote.
					if got, gerr := dyn.Get(ctx, name, metav1.GetOptions{}); gerr == nil {
						if s, _, _ := unstructured.NestedInt64(got.Object, "spec", "size"); s == size {
							err = nil
						}
					}
				}
			} else {
				var current *unstructured.Unstructured
				if current, err = dyn.Get(ctx, name, metav1.GetOptions{}); err == nil {
					_ = unstructured.SetNestedField(current.Object, size, "spec", "size")
					_, err = dyn.Update(ctx, current, metav1.UpdateOptions{})
				}
			}
			if err == nil || ctx.Err() != nil {
				break
			}
			unavailable := w.retryUnavailable && (apierrors.IsServiceUnavailable(err) || strings.Contains(err.Error(), "connection refused"))
			conflict := i%3 != 0 && apierrors.IsConflict(err)
			if !unavailable && !conflict && !strings.Contains(err.Error(), w.freeze) {
				break
			}
			retriedUnavailable = retriedUnavailable || unavailable
			w.mu.Lock()
			switch {
			case unavailable:
				w.unavailable++
			case conflict:
				w.conflicts++
			default:
				w.refused++
			}
			w.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
		w.mu.Lock()
		switch {
		case err == nil:
			w.acked[name] = size
		case ctx.Err() == nil:
			w.errs = append(w.errs, err.Error())
		}
		w.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
}

func widget(gvr schema.GroupVersionResource, ns, name string, size int64) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(),
		"kind":       "Widget",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       map[string]any{"size": size},
	}}
	return obj
}

// createWidget creates the i-th object of the adoption test, with what a
// project's controller leaves on its objects: labels, annotations, an owner,
// on some a finalizer, on half of them a status.
func createWidget(ctx context.Context, dyn dynamic.ResourceInterface, gvr schema.GroupVersionResource, ns string, i int, owner types.UID) (*unstructured.Unstructured, error) {
	obj := widget(gvr, ns, fmt.Sprintf("w-%04d", i), int64(i))
	obj.SetLabels(map[string]string{"app": "demo", "shard": fmt.Sprint(i % 5)})
	obj.SetAnnotations(map[string]string{"example.com/note": fmt.Sprintf("widget %d", i)})
	obj.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", UID: owner}})
	if i%500 == 0 {
		obj.SetFinalizers([]string{"example.com/keep"})
	}
	created, err := dyn.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", obj.GetName(), err)
	}
	if i%2 == 0 {
		_ = unstructured.SetNestedField(created.Object, true, "status", "ready")
		if created, err = dyn.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return nil, fmt.Errorf("writing the status of %s: %w", obj.GetName(), err)
		}
	}
	return created, nil
}

// identity is what must survive an adoption unchanged.
func identity(obj *unstructured.Unstructured) map[string]any {
	return map[string]any{
		"uid":               obj.GetUID(),
		"creationTimestamp": obj.GetCreationTimestamp().UTC().Format(time.RFC3339),
		"generation":        obj.GetGeneration(),
		"labels":            obj.GetLabels(),
		"annotations":       obj.GetAnnotations(),
		"finalizers":        obj.GetFinalizers(),
		"deletionTimestamp": obj.Object["metadata"].(map[string]any)["deletionTimestamp"],
		"ownerReferences":   obj.Object["metadata"].(map[string]any)["ownerReferences"],
		"managedFields":     obj.Object["metadata"].(map[string]any)["managedFields"],
		"spec":              obj.Object["spec"],
		"status":            obj.Object["status"],
	}
}

// adoptionFixture is a third party's CRD in the cluster, in a group of its
// own, with count objects in a new namespace.
type adoptionFixture struct {
	crd    *apiextensionsv1.CustomResourceDefinition
	group  string
	gvr    schema.GroupVersionResource
	ns     string
	dyn    dynamic.ResourceInterface
	before map[string]map[string]any
	// rvBefore is each object's resourceVersion in the cluster before the
	// adoption.
	rvBefore map[string]string
}

func newAdoptionFixture(t *testing.T, ctx context.Context, count int) *adoptionFixture {
	t.Helper()
	return newAdoptionFixtureWith(t, ctx, count, nil)
}

// newAdoptionFixtureWith is newAdoptionFixture with the CRD changed by
// change, when not nil, before the cluster gets it.
func newAdoptionFixtureWith(t *testing.T, ctx context.Context, count int, change func(*apiextensionsv1.CustomResourceDefinition)) *adoptionFixture {
	t.Helper()
	group := uniqueName("adopt") + ".example.com"
	crd := thirdPartyCRD(group)
	if change != nil {
		change(crd)
	}
	create(t, adminClient(t), crdsGVR, toUnstructured(t, crd))
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "widgets"}
	ns := createNamespace(t, "adopt")
	dyn := adminClient(t).Resource(gvr).Namespace(ns)
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := dyn.List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("the cluster does not serve %s: %v", gvr, err)
	}

	// The objects, as a project's controller leaves them.
	owner, err := adminClient(t).Resource(configMapsGVR).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "owner", "namespace": ns}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before, rvBefore := map[string]map[string]any{}, map[string]string{}
	var mu sync.Mutex
	var creating sync.WaitGroup
	failures := make(chan error, count)
	next := make(chan int)
	for range 8 {
		creating.Go(func() {
			for i := range next {
				created, err := createWidget(ctx, dyn, gvr, ns, i, owner.GetUID())
				if err != nil {
					failures <- err
					continue
				}
				mu.Lock()
				before[created.GetName()] = identity(created)
				rvBefore[created.GetName()] = created.GetResourceVersion()
				mu.Unlock()
			}
		})
	}
	for i := range count {
		next <- i
	}
	close(next)
	creating.Wait()
	close(failures)
	for err := range failures {
		t.Fatal(err)
	}

	return &adoptionFixture{crd: crd, group: group, gvr: gvr, ns: ns, dyn: dyn, before: before, rvBefore: rvBefore}
}

// addGadgets declares a second CRD in the fixture's group, cluster-scoped
// gadgets, and creates count of them; it returns the CRD, its resource and
// each gadget's uid by name. At the end of the test both adoptions are undone
// in reverse: the widgets' HostedResource first, then the gadgets' (the
// group's APIServices go with the last), then the finalizers of the widgets
// the cluster serves again.
func (f *adoptionFixture) addGadgets(t *testing.T, ctx context.Context, count int) (*apiextensionsv1.CustomResourceDefinition, schema.GroupVersionResource, map[string]types.UID) {
	t.Helper()
	gadgets := thirdPartyCRD(f.group)
	gadgets.Name = "gadgets." + f.group
	gadgets.Spec.Names = apiextensionsv1.CustomResourceDefinitionNames{Plural: "gadgets", Singular: "gadget", Kind: "Gadget", ListKind: "GadgetList"}
	gadgets.Spec.Scope = apiextensionsv1.ClusterScoped
	create(t, adminClient(t), crdsGVR, toUnstructured(t, gadgets))
	gvr := schema.GroupVersionResource{Group: f.group, Version: "v1", Resource: "gadgets"}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := adminClient(t).Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("the cluster does not serve %s: %v", gvr, err)
	}
	uids := map[string]types.UID{}
	for i := range count {
		obj := widget(gvr, "", fmt.Sprintf("%s-g-%02d", f.ns, i), int64(i))
		obj.SetKind("Gadget")
		created, err := adminClient(t).Resource(gvr).Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uids[created.GetName()] = created.GetUID()
		t.Cleanup(func() {
			_ = adminClient(t).Resource(gvr).Delete(context.Background(), created.GetName(), metav1.DeleteOptions{})
		})
	}
	t.Cleanup(func() { removeFinalizers(t, f.gvr, f.ns) })
	t.Cleanup(func() { undoAdoption(t, gadgets.Name, gvr, "") })
	t.Cleanup(func() { undoAdoption(t, f.crd.Name, f.gvr, f.ns) })
	return gadgets, gvr, uids
}

// gadgetUIDs lists, through the cluster, the gadgets addGadgets created and
// returns each one's uid by name.
func (f *adoptionFixture) gadgetUIDs(t *testing.T, ctx context.Context, gvr schema.GroupVersionResource) map[string]types.UID {
	t.Helper()
	list, err := adminClient(t).Resource(gvr).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing the gadgets through the cluster: %v", err)
	}
	uids := map[string]types.UID{}
	for _, item := range list.Items {
		if strings.HasPrefix(item.GetName(), f.ns+"-g-") {
			uids[item.GetName()] = item.GetUID()
		}
	}
	return uids
}

// restartWithFreezeSettle restarts annex so that an adoption or a release
// keeps writes refused for settle, and with the default settle again at
// the end of the test.
func restartWithFreezeSettle(t *testing.T, ctx context.Context, settle time.Duration) {
	t.Helper()
	if _, err := env.RestartAnnex(ctx, time.Minute, "--adoption-freeze-settle="+settle.String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := env.RestartAnnex(context.Background(), time.Minute, "--adoption-freeze-settle="+adoption.DefaultFreezeSettle.String()); err != nil {
			t.Errorf("restarting annex with its default settle: %v", err)
		}
	})
}

// killAnnex kills annex with SIGKILL and waits for it to be ready again;
// when says what the test was doing, for the messages.
func killAnnex(t *testing.T, ctx context.Context, when string) {
	t.Helper()
	took, err := env.KillAndRestartAnnex(ctx, 2*time.Minute)
	if err != nil {
		t.Fatalf("killing annex %s and starting it again: %v", when, err)
	}
	t.Logf("killed annex %s; ready again in %s", when, took.Round(time.Millisecond))
}

// adoptionPhase reads the phase of the HostedResource's adoption, and how
// many objects it copied.
func adoptionPhase(t *testing.T, ctx context.Context, name string) (phase string, copied int64) {
	hr, err := adminClient(t).Resource(framework.HostedResources).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", 0
	}
	phase, _, _ = unstructured.NestedString(hr.Object, "status", "adoption", "phase")
	copied, _, _ = unstructured.NestedInt64(hr.Object, "status", "adoption", "copied")
	return phase, copied
}

// startWriter starts a writer on the fixture's type; stop stops it and
// waits for it.
func (f *adoptionFixture) startWriter(t *testing.T, ctx context.Context) (w *writer, stop func()) {
	return f.startWriterWith(t, ctx, &writer{freeze: adoption.FreezeMessage(f.group)})
}

// startWriterWith is startWriter with the writer w: its freeze message, and
// whether it retries 503s.
func (f *adoptionFixture) startWriterWith(t *testing.T, ctx context.Context, w *writer) (_ *writer, stop func()) {
	w.t, w.gvr, w.ns, w.acked, w.tried = t, f.gvr, f.ns, map[string]int64{}, map[string]int64{}
	writing, stopWriting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.run(writing) })
	return w, func() {
		stopWriting()
		wg.Wait()
		if len(w.errs) > 0 {
			t.Errorf("the writer saw %d errors other than the freeze's refusals, the first: %s", len(w.errs), w.errs[0])
		}
		if w.conflicts > 1 {
			t.Errorf("the writer's updates were refused as conflicts %d times: at most one, across the switch, is expected (a stale read?)", w.conflicts)
		}
		t.Logf("the writer wrote %d objects, and retried %d refused writes, %d refused as unavailable and %d conflicts", len(w.acked), w.refused, w.unavailable, w.conflicts)
	}
}

// verifyAdopted checks what a user of an adopted type expects: the
// cluster no longer serves the CRD, its APIServices point at annex, no
// freeze is left, and every object and every acknowledged write is served,
// through the cluster and by annex, exactly as the cluster held it.
func (f *adoptionFixture) verifyAdopted(t *testing.T, ctx context.Context, w *writer) {
	t.Helper()
	crd, group, gvr, ns, dyn, before := f.crd, f.group, f.gvr, f.ns, f.dyn, f.before
	// The cluster no longer serves the CRD; its APIServices point at annex.
	got, err := adminClient(t).Resource(crdsGVR).Get(ctx, crd.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(got.Object, "spec", "versions")
	for _, v := range versions {
		if served, _, _ := unstructured.NestedBool(v.(map[string]any), "served"); served {
			t.Errorf("the CRD's version %v is still served", v.(map[string]any)["name"])
		}
	}
	for _, version := range []string{"v1", "v1beta1"} {
		svc, err := adminClient(t).Resource(apiServicesGVR).Get(ctx, version+"."+group, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if name, _, _ := unstructured.NestedString(svc.Object, "spec", "service", "name"); name != framework.ServiceName {
			t.Errorf("APIService %s points at %q, not at annex's Service", svc.GetName(), name)
		}
	}

	// Every object is served by annex (directly, and through the cluster)
	// exactly as the cluster held it.
	annexConfig, err := env.AnnexAdminConfig(uniqueName("adoption-reader"))
	if err != nil {
		t.Fatal(err)
	}
	annexDyn := dynamicFor(t, annexConfig)
	for _, client := range []struct {
		name string
		list func() (*unstructured.UnstructuredList, error)
	}{
		{"the cluster", func() (*unstructured.UnstructuredList, error) { return dyn.List(ctx, metav1.ListOptions{}) }},
		{"annex", func() (*unstructured.UnstructuredList, error) {
			return annexDyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		}},
	} {
		list, err := client.list()
		if err != nil {
			t.Fatalf("listing through %s: %v", client.name, err)
		}
		served := map[string]*unstructured.Unstructured{}
		for i := range list.Items {
			served[list.Items[i].GetName()] = &list.Items[i]
		}
		for name, want := range before {
			got, ok := served[name]
			if !ok {
				t.Errorf("through %s: %s is missing", client.name, name)
				continue
			}
			if !equality.Semantic.DeepEqual(identity(got), want) {
				gotJSON, _ := json.Marshal(identity(got))
				wantJSON, _ := json.Marshal(want)
				t.Errorf("through %s: %s is\n%s\nwant\n%s", client.name, name, gotJSON, wantJSON)
			}
		}
		for name, size := range w.acked {
			got, ok := served[name]
			if !ok {
				t.Errorf("through %s: %s, written by the writer, is missing", client.name, name)
				continue
			}
			// The last acknowledged write, or a later one the writer did
			// not see acknowledged.
			if s, _, _ := unstructured.NestedInt64(got.Object, "spec", "size"); s < size || s > w.tried[name] {
				t.Errorf("through %s: %s has spec.size %d, want %d, the last acknowledged (or up to %d, tried later)", client.name, name, s, size, w.tried[name])
			}
		}
	}

	for _, resource := range []string{"validatingadmissionpolicies", "validatingadmissionpolicybindings"} {
		gvr := schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: resource}
		if _, err := adminClient(t).Resource(gvr).Get(ctx, "annex-adoption-freeze."+group, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the freeze's %s: %v, want it deleted", resource, err)
		}
	}
}

// probed is what the creates of probeForbidden got.
type probed struct {
	accepted                             []string
	byWebhook, byFreeze, otherwise, sent int
	last                                 string
}

// probeForbidden creates an object that the project's webhook refuses every
// 200 ms, as a client that keeps trying would, until the function it returns
// is called; that returns what the creates got.
func probeForbidden(ctx context.Context, dyn dynamic.ResourceInterface, forbidden func(string) *unstructured.Unstructured, webhookMessage, freezeMessage string) func() probed {
	var got probed
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			name := fmt.Sprintf("forbidden-%d", i)
			_, err := dyn.Create(ctx, forbidden(name), metav1.CreateOptions{})
			got.sent++
			switch {
			case err == nil:
				got.accepted = append(got.accepted, name)
			case strings.Contains(err.Error(), webhookMessage):
				got.byWebhook++
			case strings.Contains(err.Error(), freezeMessage):
				got.byFreeze++
			default:
				got.otherwise++
				got.last = err.Error()
			}
		}
	}()
	return func() probed {
		close(stop)
		<-done
		return got
	}
}

// adopt runs kubectl annex adopt CRD --yes and checks that it succeeds.
func (f *adoptionFixture) adopt(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := f.tryAdopt(t, ctx); err != nil {
		t.Fatal(err)
	}
}

// tryAdopt is adopt, for any goroutine: it returns what went wrong.
func (f *adoptionFixture) tryAdopt(t *testing.T, ctx context.Context) error {
	code, stdout, stderr := kubectlAnnex(t, nil, "adopt", f.crd.Name, "--yes", "--progress=never")
	hr, err := adminClient(t).Resource(framework.HostedResources).Get(ctx, f.crd.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("kubectl annex adopt (exit %d, stdout %q, stderr %q) left no HostedResource: %v", code, stdout, stderr, err)
	}
	status, _, _ := unstructured.NestedMap(hr.Object, "status", "adoption")
	if code != 0 || !strings.Contains(stdout, "customresourcedefinition/"+f.crd.Name+" adopted") {
		var logs strings.Builder
		env.DumpLogs(&logs)
		return fmt.Errorf("kubectl annex adopt: exit %d\nstdout:\n%s\nstderr:\n%s\nstatus.adoption: %v\n%s", code, stdout, stderr, status, logs.String())
	}
	t.Logf("kubectl annex adopt: %s%s", stderr, stdout)
	t.Logf("status.adoption: %v", status)
	return nil
}

// TestAdoptAnEmptyCRDWithARequiredSpec adopts a type without objects whose
// schema requires spec, as CRDs generated by controller-gen often do. The
// check that the cluster enforces the freeze cannot write an object of the
// type there: the type's validation refuses an empty one before any
// admission policy sees it. The adoption must go through all the same.
func TestAdoptAnEmptyCRDWithARequiredSpec(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	f := newAdoptionFixtureWith(t, ctx, 0, func(crd *apiextensionsv1.CustomResourceDefinition) {
		for i := range crd.Spec.Versions {
			crd.Spec.Versions[i].Schema.OpenAPIV3Schema.Required = []string{"spec"}
		}
	})
	empty := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": f.gvr.GroupVersion().String(), "kind": "Widget", "metadata": map[string]any{"name": "empty", "namespace": f.ns}}}
	if _, err := f.dyn.Create(ctx, empty, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); !apierrors.IsInvalid(err) {
		t.Fatalf("an empty widget, in dry-run, before the adoption: %v, want it refused as invalid", err)
	}

	code, stdout, stderr := kubectlAnnex(t, nil, "adopt", f.crd.Name, "--yes", "--progress=never", "--timeout=2m")
	if code != 0 || !strings.Contains(stdout, "customresourcedefinition/"+f.crd.Name+" adopted") {
		var logs strings.Builder
		env.DumpLogs(&logs)
		t.Fatalf("kubectl annex adopt: exit %d\nstdout:\n%s\nstderr:\n%s\n%s", code, stdout, stderr, logs.String())
	}
	f.verifyAdopted(t, ctx, &writer{acked: map[string]int64{}})

	// annex serves the type, with its schema. annex sees the freeze's
	// deletion a moment after the cluster does (the adoption proves the
	// cluster's side only, without an object to write in dry-run): a
	// create may still be refused with the freeze's message, which says
	// to retry, as a controller does.
	var err error
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err = f.dyn.Create(ctx, widget(f.gvr, f.ns, "w-0001", 1), metav1.CreateOptions{})
		return err == nil || !strings.Contains(err.Error(), adoption.FreezeMessage(f.group)), nil
	})
	if err != nil {
		t.Errorf("creating a widget once adopted: %v", err)
	}
	_, err = f.dyn.Create(ctx, empty, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec") {
		t.Errorf("creating an empty widget once adopted: %v, want it refused as invalid, naming spec", err)
	}
}

func TestAdoptACRDWithItsObjects(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	f := newAdoptionFixture(t, ctx, 3000)
	crd, group, gvr, ns, dyn := f.crd, f.group, f.gvr, f.ns, f.dyn

	// The project's own admission policy for the group applies before the
	// adoption and after it.
	denyByPolicy(t, "no-negative-size."+group, map[string]any{
		"apiGroups": []any{group}, "apiVersions": []any{"*"}, "operations": []any{"CREATE", "UPDATE"}, "resources": []any{"widgets"}},
		"object.spec.size >= 0", "the size of a widget is never negative")
	refusesNegative := func(when string) {
		t.Helper()
		var err error
		_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err = dyn.Create(ctx, widget(gvr, ns, "negative", -1), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err != nil && strings.Contains(err.Error(), "never negative"), nil
		})
		if err == nil || !strings.Contains(err.Error(), "never negative") {
			t.Errorf("%s, a widget of size -1: %v, want the project's policy to refuse it", when, err)
		}
	}
	refusesNegative("before the adoption")

	// So does its validating webhook, before, during and after: a widget
	// labelled forbidden=true is never accepted.
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	hook := startDenyWebhook(t, group, "widgets", "the project's webhook refuses widgets labelled forbidden=true")
	registerDenyWebhook(t, cs, hook, admissionregistrationv1.NamespacedScope, nil)
	forbidden := func(name string) *unstructured.Unstructured {
		obj := widget(gvr, ns, name, 1)
		obj.SetLabels(map[string]string{"forbidden": "true"})
		return obj
	}
	refusesForbidden := func(when string) {
		t.Helper()
		var err error
		_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err = dyn.Create(ctx, forbidden("forbidden"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err != nil && strings.Contains(err.Error(), hook.message), nil
		})
		if err == nil || !strings.Contains(err.Error(), hook.message) {
			t.Errorf("%s, a widget labelled forbidden=true: %v, want the project's webhook to refuse it", when, err)
		}
	}
	refusesForbidden("before the adoption")

	// An object being deleted, held by its finalizer.
	if err := dyn.Delete(ctx, "w-0000", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	terminating, err := dyn.Get(ctx, "w-0000", metav1.GetOptions{})
	if err != nil || terminating.GetDeletionTimestamp() == nil {
		t.Fatalf("w-0000, deleted with a finalizer: %v, deletionTimestamp %v", err, terminating)
	}
	f.before["w-0000"] = identity(terminating)

	// What would happen, and nothing happens.
	stdout, _ := kubectlAnnexOK(t, "adopt", crd.Name, "--dry-run")
	if want := fmt.Sprintf("Would adopt CustomResourceDefinition %s (%d objects)", crd.Name, len(f.before)); !strings.Contains(stdout, want) {
		t.Errorf("kubectl annex adopt --dry-run printed %q, want it to start %q", stdout, want)
	}
	if _, err := adminClient(t).Resource(framework.HostedResources).Get(ctx, crd.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after a dry run, the HostedResource: %v, want NotFound", err)
	}

	w, stopWriter := f.startWriter(t, ctx)
	probe := probeForbidden(ctx, dyn, forbidden, hook.message, adoption.FreezeMessage(group))
	time.Sleep(time.Second)
	t.Cleanup(func() { undoAdoption(t, crd.Name, gvr, ns) })
	f.adopt(t, ctx)
	if got := probe(); len(got.accepted) > 0 || got.byWebhook == 0 {
		t.Errorf("during the adoption, creates of widgets labelled forbidden=true: %+v; want none accepted, and some refused by the webhook", got)
	} else {
		t.Logf("during the adoption, creates of widgets labelled forbidden=true: %+v", got)
	}
	statusOut, _ := kubectlAnnexOK(t, "status")
	if got := statusCell(t, statusOut, crd.Name, "ADOPTION"); got != "Adopted" {
		t.Errorf("kubectl annex status shows the adoption as %q, want Adopted:\n%s", got, statusOut)
	}
	// Writes go on after the adoption, to annex.
	time.Sleep(2 * time.Second)
	stopWriter()
	f.verifyAdopted(t, ctx, w)

	refusesNegative("after the adoption")
	refusesForbidden("after the adoption")

	// The object being deleted goes once its finalizer does, in annex.
	terminating, err = dyn.Get(ctx, "w-0000", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	terminating.SetFinalizers(nil)
	if _, err := dyn.Update(ctx, terminating, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("removing the finalizer of w-0000: %v", err)
	}
	if _, err := dyn.Get(ctx, "w-0000", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("w-0000, being deleted, without its finalizer: %v, want NotFound", err)
	}

	// A chart or an operator applies the CRD again, served: annex keeps it
	// unserved, and keeps serving the type.
	reapplied, err := adminClient(t).Resource(crdsGVR).Get(ctx, crd.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(reapplied.Object, "spec", "versions")
	for _, v := range versions {
		v.(map[string]any)["served"] = true
	}
	_ = unstructured.SetNestedSlice(reapplied.Object, versions, "spec", "versions")
	if _, err := adminClient(t).Resource(crdsGVR).Update(ctx, reapplied, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("applying the CRD again: %v", err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := adminClient(t).Resource(crdsGVR).Get(ctx, crd.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		versions, _, _ := unstructured.NestedSlice(got.Object, "spec", "versions")
		for _, v := range versions {
			if served, _, _ := unstructured.NestedBool(v.(map[string]any), "served"); served {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Errorf("the CRD applied again with served versions was not set unserved again: %v", err)
	}
	if got, err := dyn.Get(ctx, "w-0001", metav1.GetOptions{}); err != nil || got.GetUID() != f.before["w-0001"]["uid"] {
		t.Errorf("after the CRD was applied again, w-0001: %v (uid %v), want annex's copy", err, got)
	}

	// A new object lives in annex only, not in the cluster's etcd.
	if _, err := dyn.Create(ctx, widget(gvr, ns, "after", 1), metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating an object after the adoption: %v", err)
	}
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{env.EtcdURL()}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	prefix := "/registry/" + group + "/widgets/" + ns + "/"
	for name, wantIn := range map[string]bool{"w-0000": true, "after": false} {
		resp, err := etcd.Get(ctx, prefix+name, clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if in := resp.Count == 1; in != wantIn {
			t.Errorf("%s in the cluster's etcd: %v, want %v", name, in, wantIn)
		}
	}

	// The cluster's OpenAPI is whole (a path listed twice would make
	// /openapi/v2 fail), and kubectl explain reads the type's schema.
	if openapi := doRaw(t, http.MethodGet, "/openapi/v2", nil, nil); openapi.Code != http.StatusOK {
		t.Errorf("GET /openapi/v2: %d: %.300s", openapi.Code, openapi.Body)
	}
	out := kubectlEventually(t, "explain", "widgets.spec.color", "--api-version="+group+"/v1")
	for _, want := range []string{"GROUP:      " + group, "KIND:       Widget", "FIELD: color <string>"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl explain widgets.spec.color lacks %q:\n%s", want, out)
		}
	}
}

// undoAdoption gives the type back to the cluster by hand, so that the
// test's cleanup can delete both: the finalizers of annex's objects go,
// the HostedResource and its objects go, the CRD is served again, and the
// finalizers of the cluster's objects go.
func undoAdoption(t *testing.T, crdName string, gvr schema.GroupVersionResource, ns string) {
	removeFinalizers(t, gvr, ns)
	// A release asked for holds the HostedResource's deletion until it ends:
	// one that failed is no longer asked for.
	if hr, err := adminClient(t).Resource(framework.HostedResources).Get(context.Background(), crdName, metav1.GetOptions{}); err == nil {
		if release, _, _ := unstructured.NestedBool(hr.Object, "spec", "adoption", "release"); release {
			if phase, _, _ := unstructured.NestedString(hr.Object, "status", "adoption", "phase"); phase == "Adopted" {
				_, err := adminClient(t).Resource(framework.HostedResources).Patch(context.Background(), crdName, types.MergePatchType,
					[]byte(`{"spec":{"adoption":{"release":false}}}`), metav1.PatchOptions{})
				if err != nil {
					t.Logf("asking no more for the release of %s: %v", crdName, err)
				}
			}
		}
	}
	deleteAndWait(t, framework.HostedResources, crdName)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	crds := adminClient(t).Resource(crdsGVR)
	crd, err := crds.Get(ctx, crdName, metav1.GetOptions{})
	if err != nil {
		t.Logf("reading CRD %s: %v", crdName, err)
		return
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		v.(map[string]any)["served"] = true
	}
	_ = unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions")
	if _, err := crds.Update(ctx, crd, metav1.UpdateOptions{}); err != nil {
		t.Logf("serving CRD %s again: %v", crdName, err)
		return
	}
	if err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := adminClient(t).Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	}); err != nil {
		t.Logf("the cluster does not serve %s again: %v", gvr, err)
	}
	removeFinalizers(t, gvr, ns)
}

// removeFinalizers removes every finalizer of the type's objects in ns.
func removeFinalizers(t *testing.T, gvr schema.GroupVersionResource, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dyn := adminClient(t).Resource(gvr).Namespace(ns)
	list, err := dyn.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Logf("listing %s to remove finalizers: %v", gvr, err)
		return
	}
	for i := range list.Items {
		obj := &list.Items[i]
		if len(obj.GetFinalizers()) == 0 {
			continue
		}
		obj.SetFinalizers(nil)
		if _, err := dyn.Update(ctx, obj, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("removing the finalizers of %s: %v", obj.GetName(), err)
		}
	}
}

// TestAdoptionSurvivesKills kills annex with SIGKILL while it copies the
// objects, and again while the cluster refuses writes: the adoption goes
// on after each restart (the freeze undone, the copy done again), the
// plugin that follows it waits through the restarts, and nothing is lost.
func TestAdoptionSurvivesKills(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	// Writes refused for 10 s, long enough to kill annex meanwhile.
	restartWithFreezeSettle(t, ctx, 10*time.Second)
	f := newAdoptionFixture(t, ctx, 3000)
	w, stopWriter := f.startWriter(t, ctx)
	t.Cleanup(func() { undoAdoption(t, f.crd.Name, f.gvr, f.ns) })

	adopted := make(chan error, 1)
	go func() { adopted <- f.tryAdopt(t, ctx) }()
	for _, at := range []struct {
		phase string
		ready func(copied int64) bool
	}{
		{"Copying", func(copied int64) bool { return copied >= 500 }},
		{"Frozen", func(int64) bool { return true }},
	} {
		var phase string
		var copied int64
		if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
			phase, copied = adoptionPhase(t, ctx, f.crd.Name)
			return phase == at.phase && at.ready(copied), nil
		}); err != nil {
			t.Fatalf("the adoption never reached %s: %v (last: %s, %d copied)", at.phase, err, phase, copied)
		}
		killAnnex(t, ctx, fmt.Sprintf("in phase %s (%d objects copied)", at.phase, copied))
	}
	if err := <-adopted; err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	stopWriter()
	f.verifyAdopted(t, ctx, w)

	t.Run("a HostedResource deleted while writes are refused takes the freeze with it", func(t *testing.T) {
		f := newAdoptionFixture(t, ctx, 100)
		following := make(chan error, 1)
		go func() { following <- f.tryAdopt(t, ctx) }()
		if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			phase, _ := adoptionPhase(t, ctx, f.crd.Name)
			return phase == "Frozen", nil
		}); err != nil {
			t.Fatalf("the adoption never reached Frozen: %v", err)
		}
		deleteAndWait(t, framework.HostedResources, f.crd.Name)
		var err error
		if werr := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err = f.dyn.Create(ctx, widget(f.gvr, f.ns, "after-delete", 1), metav1.CreateOptions{})
			return err == nil, nil
		}); werr != nil {
			t.Errorf("after the adopting HostedResource was deleted, writes to the type: %v, want them accepted again", err)
		}
		if got, err := f.dyn.Get(ctx, "w-0001", metav1.GetOptions{}); err != nil || got.GetUID() != f.before["w-0001"]["uid"] {
			t.Errorf("the cluster still serves its own objects: %v", err)
		}
		if err := <-following; err == nil || !strings.Contains(err.Error(), "was deleted: the adoption stopped") {
			t.Errorf("kubectl annex adopt, following an adoption whose HostedResource was deleted: %v, want it to say so", err)
		}
	})
}

// TestAdoptionSurvivesAKillWhenSwitched kills annex once the APIServices
// point at it and before the CRD is unserved: a policy of the test's holds
// the adoption there by refusing to unserve the CRD (as an operator's
// policy might). annex restarted keeps writes refused and serves the type,
// and once the policy goes it unserves the CRD and lets writes through;
// nothing is lost.
func TestAdoptionSurvivesAKillWhenSwitched(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	f := newAdoptionFixture(t, ctx, 300)
	t.Cleanup(func() { undoAdoption(t, f.crd.Name, f.gvr, f.ns) })

	// The cluster refuses to unserve the CRD until the hold goes.
	unhold := holdCRD(t, ctx, f.crd.Name, "object.spec.versions.exists(v, v.served)", "the test holds the CRD served",
		func(versions []any) []any {
			for _, v := range versions {
				v.(map[string]any)["served"] = false
			}
			return versions
		})

	w, stopWriter := f.startWriterWith(t, ctx, &writer{freeze: adoption.FreezeMessage(f.group), retryUnavailable: true})
	adopted := make(chan error, 1)
	go func() { adopted <- f.tryAdopt(t, ctx) }()
	var phase string
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		phase, _ = adoptionPhase(t, ctx, f.crd.Name)
		return phase == "Switched", nil
	}); err != nil {
		t.Fatalf("the adoption never reached Switched: %v (last: %s)", err, phase)
	}
	time.Sleep(time.Second)
	killAnnex(t, ctx, "with the APIServices switched and the CRD still served")

	// Held: the type is annex's, and writes to it are refused.
	time.Sleep(2 * time.Second)
	if phase, _ := adoptionPhase(t, ctx, f.crd.Name); phase != "Switched" {
		t.Errorf("held after the restart, the adoption is %q, want Switched", phase)
	}
	_, err := f.dyn.Create(ctx, widget(f.gvr, f.ns, "while-held", 1), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), adoption.FreezeMessage(f.group)) {
		t.Errorf("a create while held: %v, want the freeze's refusal", err)
	}
	if got, err := f.dyn.Get(ctx, "w-0001", metav1.GetOptions{}); err != nil || got.GetUID() != f.before["w-0001"]["uid"] {
		t.Errorf("w-0001 while held: %v, want it served", err)
	}

	unhold()
	if err := <-adopted; err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	stopWriter()
	f.verifyAdopted(t, ctx, w)
}

var (
	policiesGVR       = schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"}
	policyBindingsGVR = schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicybindings"}
)

// denyByPolicy has the cluster refuse with message the requests that rule
// (a resource rule of a ValidatingAdmissionPolicy) matches and expression
// does not allow, until the test ends or remove is called.
func denyByPolicy(t *testing.T, name string, rule map[string]any, expression, message string) (remove func()) {
	t.Helper()
	create(t, adminClient(t), policiesGVR, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"failurePolicy":    "Fail",
			"matchConstraints": map[string]any{"resourceRules": []any{rule}},
			"validations":      []any{map[string]any{"expression": expression, "message": message}},
		}}})
	create(t, adminClient(t), policyBindingsGVR, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"policyName": name, "validationActions": []any{"Deny"}}}})
	return func() {
		deleteIfExists(t, policyBindingsGVR, name)
		deleteIfExists(t, policiesGVR, name)
	}
}

// holdCRD has the cluster refuse, with message, the updates of CRD crdName
// that expression does not allow, and waits until it refuses a dry-run
// update whose versions change makes. remove lets them through.
func holdCRD(t *testing.T, ctx context.Context, crdName, expression, message string, change func(versions []any) []any) (remove func()) {
	t.Helper()
	remove = denyByPolicy(t, "hold."+crdName, map[string]any{
		"apiGroups": []any{"apiextensions.k8s.io"}, "apiVersions": []any{"v1"}, "operations": []any{"UPDATE"},
		"resources": []any{"customresourcedefinitions"}, "resourceNames": []any{crdName}}, expression, message)
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		crd, err := adminClient(t).Resource(crdsGVR).Get(ctx, crdName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		_ = unstructured.SetNestedSlice(crd.Object, change(versions), "spec", "versions")
		_, err = adminClient(t).Resource(crdsGVR).Update(ctx, crd, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
		return err != nil && strings.Contains(err.Error(), message), nil
	}); err != nil {
		t.Fatalf("the cluster does not enforce the test's hold of %s: %v", crdName, err)
	}
	return remove
}

// TestAdoptAGroupOfTwoCRDs adopts a group with two CRDs, one namespaced and
// one cluster-scoped: the first adoption waits for the second (the group's
// APIServices serve both), then both switch together.
func TestAdoptAGroupOfTwoCRDs(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	f := newAdoptionFixture(t, ctx, 200)
	gadgets, gadgetsGVR, gadgetUIDs := f.addGadgets(t, ctx, 20)

	// The first waits for the second, and says so.
	code, stdout, stderr := kubectlAnnex(t, nil, "adopt", f.crd.Name, "--yes", "--progress=never", "--timeout=15s")
	if code == 0 || !strings.Contains(stderr, "GroupHasOtherCRDs") || !strings.Contains(stderr, gadgets.Name) {
		t.Fatalf("adopting one CRD of a group of two: exit %d, stdout %q, stderr %q; want it to wait, naming %s", code, stdout, stderr, gadgets.Name)
	}
	if _, err := f.dyn.Get(ctx, "w-0001", metav1.GetOptions{}); err != nil {
		t.Fatalf("while the group waits, the cluster must still serve it: %v", err)
	}
	if code, stdout, stderr := kubectlAnnex(t, nil, "adopt", gadgets.Name, "--yes", "--progress=never"); code != 0 {
		t.Fatalf("adopting the second CRD: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	f.adopt(t, ctx) // follows the first to its end
	f.verifyAdopted(t, ctx, &writer{acked: map[string]int64{}})
	if got := f.gadgetUIDs(t, ctx, gadgetsGVR); !maps.Equal(got, gadgetUIDs) {
		t.Errorf("the adopted gadgets have uids %v, want %v", got, gadgetUIDs)
	}

	// The cluster's garbage collector finds the adopted type and collects
	// its objects once their owner goes; w-0000 keeps its finalizer, and
	// stays, being deleted.
	startControllerManager(t, "garbage-collector-controller")
	if err := adminClient(t).Resource(configMapsGVR).Namespace(f.ns).Delete(ctx, "owner", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var left []string
	if err := wait.PollUntilContextTimeout(ctx, time.Second, collectionTimeout, true, func(ctx context.Context) (bool, error) {
		list, err := f.dyn.List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		left = left[:0]
		for _, item := range list.Items {
			left = append(left, item.GetName())
		}
		return len(left) == 1, nil
	}); err != nil || left[0] != "w-0000" {
		t.Errorf("after the owner's deletion, the widgets left are %v, want only w-0000 (held by its finalizer): %v", left, err)
	}
	if held, err := f.dyn.Get(ctx, "w-0000", metav1.GetOptions{}); err != nil || held.GetDeletionTimestamp() == nil {
		t.Errorf("w-0000 after its owner's deletion: %v, want it being deleted", err)
	}
}
