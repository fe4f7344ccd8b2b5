//go:build integration

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"annex.dev/annex/pkg/controllers/adoption"
	"annex.dev/annex/test/integration/framework"
)

// clusterCopies counts the keys the cluster's etcd holds of the fixture's
// type.
func (f *adoptionFixture) clusterCopies(t *testing.T, ctx context.Context) int64 {
	t.Helper()
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{env.EtcdURL()}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	resp, err := etcd.Get(ctx, "/registry/"+f.group+"/widgets/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// clusterCopiesDeleted reads status.adoption.clusterCopies.deleted.
func clusterCopiesDeleted(t *testing.T, ctx context.Context, name string) int64 {
	hr, err := adminClient(t).Resource(framework.HostedResources).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0
	}
	deleted, _, _ := unstructured.NestedInt64(hr.Object, "status", "adoption", "clusterCopies", "deleted")
	return deleted
}

// TestConfirmAnAdoption adopts a CRD, then confirms the adoption with
// kubectl annex confirm while a writer keeps writing: annex deletes the
// objects that the cluster's etcd still holds of the type, in batches,
// finalizers or not, and one being deleted too, and is killed in the
// middle. Afterwards the cluster's etcd holds none of them, annex serves
// every object and every acknowledged write as before, the writer saw no
// error, and the version the deletion went through is gone.
func TestConfirmAnAdoption(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	// Batches of 100, so that annex can be killed between two.
	if _, err := env.RestartAnnex(ctx, time.Minute, "--adoption-delete-batch=100"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := env.RestartAnnex(context.Background(), time.Minute, fmt.Sprintf("--adoption-delete-batch=%d", adoption.DefaultDeleteBatch)); err != nil {
			t.Errorf("restarting annex with its default batch: %v", err)
		}
	})
	const count = 1200
	f := newAdoptionFixture(t, ctx, count)
	t.Cleanup(func() { undoAdoption(t, f.crd.Name, f.gvr, f.ns) })
	// An object being deleted, held by its finalizer.
	if err := f.dyn.Delete(ctx, "w-0500", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleting, err := f.dyn.Get(ctx, "w-0500", metav1.GetOptions{})
	if err != nil || deleting.GetDeletionTimestamp() == nil {
		t.Fatalf("w-0500 after its deletion: %v, %v; want it held by its finalizer", deleting, err)
	}
	f.before["w-0500"] = identity(deleting)
	f.adopt(t, ctx)
	if n := f.clusterCopies(t, ctx); n != count {
		t.Fatalf("after the adoption the cluster's etcd holds %d widgets, want the %d of before", n, count)
	}

	// Only an adopted type, and never undone.
	patch := func(adoptionPatch string) error {
		_, err := adminClient(t).Resource(framework.HostedResources).Patch(ctx, f.crd.Name, types.MergePatchType,
			[]byte(`{"spec":{"adoption":`+adoptionPatch+`}}`), metav1.PatchOptions{})
		return err
	}
	if err := patch(`{"deleteClusterCopies":true,"release":true}`); !apierrors.IsInvalid(err) ||
		!strings.Contains(err.Error(), "spec.adoption.deleteClusterCopies: Forbidden: cannot be set while spec.adoption.release is") {
		t.Errorf("asking for a release and the deletion at once: %v, want 422 naming spec.adoption.deleteClusterCopies", err)
	}

	stdout, _ := kubectlAnnexOK(t, "confirm", f.crd.Name, "--dry-run")
	if want := fmt.Sprintf("Would delete from the cluster's etcd the objects it still holds of CustomResourceDefinition %s (about %d,", f.crd.Name, count); !strings.Contains(stdout, want) {
		t.Errorf("kubectl annex confirm --dry-run printed %q, want %q", stdout, want)
	}
	if n := f.clusterCopies(t, ctx); n != count {
		t.Errorf("after a dry run the cluster's etcd holds %d widgets, want %d", n, count)
	}

	w, stopWriter := f.startWriterWith(t, ctx, &writer{freeze: adoption.FreezeMessage(f.group), retryUnavailable: true})
	type result struct {
		code           int
		stdout, stderr string
	}
	confirmed := make(chan result, 1)
	go func() {
		code, stdout, stderr := kubectlAnnex(t, nil, "confirm", f.crd.Name, "--yes", "--progress=never")
		confirmed <- result{code, stdout, stderr}
	}()
	var deleted int64
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		deleted = clusterCopiesDeleted(t, ctx, f.crd.Name)
		return deleted >= 300, nil
	}); err != nil {
		t.Fatalf("the deletion never reached 300 objects: %v (last: %d)", err, deleted)
	}
	if err := patch(`{"deleteClusterCopies":false}`); !apierrors.IsInvalid(err) ||
		!strings.Contains(err.Error(), "spec.adoption.deleteClusterCopies: Forbidden: cannot be unset") {
		t.Errorf("unsetting deleteClusterCopies: %v, want 422 naming the field", err)
	}
	if err := patch(`{"release":true}`); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.adoption.release: Forbidden: cannot be set until") {
		t.Errorf("a release during the deletion: %v, want 422 naming spec.adoption.release", err)
	}
	killAnnex(t, ctx, fmt.Sprintf("while it deleted the cluster's copies (%d deleted)", deleted))
	r := <-confirmed
	time.Sleep(time.Second)
	stopWriter()
	if want := fmt.Sprintf("customresourcedefinition/%s confirmed: %d objects deleted from the cluster's etcd", f.crd.Name, count); r.code != 0 || !strings.Contains(r.stdout, want) {
		var logs strings.Builder
		env.DumpLogs(&logs)
		t.Fatalf("kubectl annex confirm: exit %d, want 0 and %q\nstdout:\n%s\nstderr:\n%s\n%s", r.code, want, r.stdout, r.stderr, logs.String())
	}
	t.Logf("kubectl annex confirm: %s%s", r.stderr, r.stdout)
	if len(w.errs) > 0 || w.refused > 0 {
		t.Errorf("the writer saw %d refusals and these errors during the deletion (it should see neither): %v", w.refused, w.errs)
	}
	t.Logf("the writer: %d writes acknowledged, %d retried while annex restarted", len(w.acked), w.unavailable)

	if n := f.clusterCopies(t, ctx); n != 0 {
		t.Errorf("after the deletion the cluster's etcd holds %d widgets, want none", n)
	}
	// annex's objects are untouched, and the type is adopted as before.
	f.verifyAdopted(t, ctx, w)
	crd, err := adminClient(t).Resource(crdsGVR).Get(ctx, f.crd.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		if name := v.(map[string]any)["name"]; name == adoption.ReleaseVersion {
			t.Errorf("the CRD still has version %s", name)
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := adminClient(t).Resource(apiServicesGVR).Get(ctx, adoption.ReleaseVersion+"."+f.group, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Errorf("APIService %s.%s is still there: %v", adoption.ReleaseVersion, f.group, err)
	}
	hr, err := adminClient(t).Resource(framework.HostedResources).Get(ctx, f.crd.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if msg, _, _ := unstructured.NestedString(hr.Object, "status", "adoption", "message"); !strings.Contains(msg, "were deleted from the cluster's etcd") {
		t.Errorf("status.adoption.message is %q, want it to say the cluster's copies were deleted", msg)
	}
	copies, _, _ := unstructured.NestedMap(hr.Object, "status", "adoption", "clusterCopies")
	if copies["total"] != int64(count) || copies["deleted"] != int64(count) || copies["completionTime"] == nil {
		t.Errorf("status.adoption.clusterCopies is %v, want %d of %d deleted, with a completionTime", copies, count, count)
	}
	// Again: nothing to do, and said so.
	if stdout, _ := kubectlAnnexOK(t, "confirm", f.crd.Name, "--dry-run"); !strings.Contains(stdout, "are already deleted") {
		t.Errorf("kubectl annex confirm --dry-run after the deletion printed %q", stdout)
	}
}

// TestAdoptACRDWithAConversionWebhook adopts a CRD whose versions name a
// field differently and convert through a webhook: annex keeps the webhook
// and calls it. Then the cluster's copies are deleted and the type is
// released: both go through a version the webhook does not know, so the
// CRD converts with None meanwhile, and gets its webhook back after.
func TestAdoptACRDWithAConversionWebhook(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	converter := &framework.FieldConverter{}
	url, caBundle := framework.StartWebhookServer(t, converter)
	url += "/convert"
	f := newAdoptionFixtureWith(t, ctx, 100, func(crd *apiextensionsv1.CustomResourceDefinition) {
		converter.Fields = map[string]string{crd.Spec.Group + "/v1": "color", crd.Spec.Group + "/v1beta1": "colour"}
		spec := crd.Spec.Versions[1].Schema.OpenAPIV3Schema.Properties["spec"]
		spec.Properties["colour"] = spec.Properties["color"]
		delete(spec.Properties, "color")
		crd.Spec.Conversion = &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.WebhookConverter, Webhook: &apiextensionsv1.WebhookConversion{
			ClientConfig:             &apiextensionsv1.WebhookClientConfig{URL: &url, CABundle: caBundle},
			ConversionReviewVersions: []string{"v1"},
		}}
	})
	t.Cleanup(func() { undoAdoption(t, f.crd.Name, f.gvr, f.ns) })
	v1beta1 := f.gvr
	v1beta1.Version = "v1beta1"
	colour := func(through string, obj *unstructured.Unstructured, err error, field, want string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", through, err)
		}
		if got, _, _ := unstructured.NestedString(obj.Object, "spec", field); got != want {
			t.Errorf("%s: spec.%s is %q, want %q (spec: %v)", through, field, got, want, obj.Object["spec"])
		}
	}
	cluster := adminClient(t)
	obj, err := cluster.Resource(v1beta1).Namespace(f.ns).Get(ctx, "w-0001", metav1.GetOptions{})
	colour("the cluster's w-0001 as v1beta1", obj, err, "colour", "blue")

	f.adopt(t, ctx)
	hr, err := cluster.Resource(framework.HostedResources).Get(ctx, f.crd.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if strategy, _, _ := unstructured.NestedString(hr.Object, "spec", "conversion", "strategy"); strategy != "Webhook" {
		t.Errorf("the HostedResource's conversion is %q, want the CRD's Webhook", strategy)
	}
	// Only annex serves the type now. A read of v1beta1 may come from
	// annex's cache of that version, converted by the webhook when the
	// object was written; a write calls the webhook at once.
	obj, err = cluster.Resource(v1beta1).Namespace(f.ns).Get(ctx, "w-0001", metav1.GetOptions{})
	colour("annex's w-0001 as v1beta1", obj, err, "colour", "blue")
	calls := converter.Calls()
	made := widget(v1beta1, f.ns, "made-as-v1beta1", 7)
	_ = unstructured.SetNestedField(made.Object, "green", "spec", "colour")
	if _, err := cluster.Resource(v1beta1).Namespace(f.ns).Create(ctx, made, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a v1beta1 object through annex: %v", err)
	}
	if converter.Calls() == calls {
		t.Error("annex stored an object created as v1beta1 without calling the conversion webhook")
	}
	obj, err = f.dyn.Get(ctx, "made-as-v1beta1", metav1.GetOptions{})
	colour("annex's made-as-v1beta1 as v1", obj, err, "color", "green")

	// The cluster's webhook is back on the CRD after each step that
	// served another version.
	webhookBack := func(after string) {
		t.Helper()
		crd, err := cluster.Resource(crdsGVR).Get(ctx, f.crd.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		strategy, _, _ := unstructured.NestedString(crd.Object, "spec", "conversion", "strategy")
		got, _, _ := unstructured.NestedString(crd.Object, "spec", "conversion", "webhook", "clientConfig", "url")
		if _, kept := crd.GetAnnotations()["annex.dev/adopted-conversion"]; strategy != "Webhook" || got != url || kept {
			t.Errorf("after %s the CRD converts with %q through %q (annotation left: %v), want Webhook through %s", after, strategy, got, kept, url)
		}
	}
	stdout, _ := kubectlAnnexOK(t, "confirm", f.crd.Name, "--yes", "--progress=never")
	if want := "confirmed: 100 objects deleted from the cluster's etcd"; !strings.Contains(stdout, want) {
		t.Errorf("kubectl annex confirm printed %q, want %q", stdout, want)
	}
	if n := f.clusterCopies(t, ctx); n != 0 {
		t.Errorf("after kubectl annex confirm the cluster's etcd holds %d widgets, want none", n)
	}
	webhookBack("kubectl annex confirm")

	stdout, err = f.tryRelease(t, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := "101 objects were created in the cluster with a new uid"; !strings.Contains(stdout, want) {
		t.Errorf("kubectl annex release printed %q, want %q: the cluster's copies were deleted", stdout, want)
	}
	webhookBack("kubectl annex release")
	// The cluster serves the type again, and converts through its webhook.
	calls = converter.Calls()
	obj, err = cluster.Resource(v1beta1).Namespace(f.ns).Get(ctx, "made-as-v1beta1", metav1.GetOptions{})
	colour("the cluster's made-as-v1beta1 as v1beta1, after the release", obj, err, "colour", "green")
	obj, err = cluster.Resource(f.gvr).Namespace(f.ns).Get(ctx, "w-0001", metav1.GetOptions{})
	colour("the cluster's w-0001 as v1, after the release", obj, err, "color", "blue")
	if converter.Calls() == calls {
		t.Error("the cluster served v1beta1 without calling the conversion webhook")
	}
	removeFinalizers(t, f.gvr, f.ns)
}
