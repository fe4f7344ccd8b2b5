//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"annex.dev/annex/pkg/controllers/adoption"
	"annex.dev/annex/test/integration/framework"
)

// content is what a release must give back of an object, besides its
// identity.
func content(obj *unstructured.Unstructured) map[string]any {
	meta := obj.Object["metadata"].(map[string]any)
	return map[string]any{
		"labels":          obj.GetLabels(),
		"annotations":     obj.GetAnnotations(),
		"finalizers":      obj.GetFinalizers(),
		"ownerReferences": meta["ownerReferences"],
		"being deleted":   obj.GetDeletionTimestamp() != nil,
		"spec":            obj.Object["spec"],
		"status":          obj.Object["status"],
	}
}

// changeWhileAdopted changes the adopted type's objects as its users would
// while annex serves it: it updates some (one's status too), deletes some
// (one held by a finalizer, which goes first), and creates some, one with a
// finalizer, one with a status, and one being deleted, held by its
// finalizer. It returns what annex serves then, by name, and the names
// deleted and created.
func (f *adoptionFixture) changeWhileAdopted(t *testing.T, ctx context.Context) (held map[string]*unstructured.Unstructured, deleted, created []string) {
	t.Helper()
	dyn := f.dyn
	// annex sees the adoption's freeze deleted a moment after the adoption
	// ends, as the cluster does.
	var err error
	if werr := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var obj *unstructured.Unstructured
		if obj, err = dyn.Get(ctx, "w-0001", metav1.GetOptions{}); err == nil {
			_, err = dyn.Update(ctx, obj, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
		}
		return err == nil, nil
	}); werr != nil {
		t.Fatalf("after the adoption, writes to the type: %v, want them accepted", err)
	}
	for i := 1; i <= 10; i++ {
		name := fmt.Sprintf("w-%04d", i)
		obj, err := dyn.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_ = unstructured.SetNestedField(obj.Object, int64(1000+i), "spec", "size")
		labels := obj.GetLabels()
		labels["changed"] = "while-adopted"
		obj.SetLabels(labels)
		if obj, err = dyn.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("updating %s while adopted: %v", name, err)
		}
		if i == 3 {
			_ = unstructured.SetNestedField(obj.Object, true, "status", "ready")
			if _, err := dyn.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
				t.Fatalf("writing the status of %s while adopted: %v", name, err)
			}
		}
	}
	// w-0000 holds a finalizer (in the cluster's etcd too): it goes once
	// its finalizer does.
	w0, err := dyn.Get(ctx, "w-0000", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w0.SetFinalizers(nil)
	if _, err := dyn.Update(ctx, w0, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := dyn.Delete(ctx, "w-0000", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted = append(deleted, "w-0000")
	for i := 11; i <= 20; i++ {
		name := fmt.Sprintf("w-%04d", i)
		if err := dyn.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deleted = append(deleted, name)
	}
	owner, err := adminClient(t).Resource(configMapsGVR).Namespace(f.ns).Get(ctx, "owner", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		obj := widget(f.gvr, f.ns, fmt.Sprintf("new-%d", i), int64(i))
		obj.SetLabels(map[string]string{"app": "demo", "created": "while-adopted"})
		obj.SetAnnotations(map[string]string{"example.com/note": fmt.Sprintf("new %d", i)})
		obj.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", UID: owner.GetUID()}})
		if i == 0 || i == 5 {
			obj.SetFinalizers([]string{"example.com/keep"})
		}
		got, err := dyn.Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating %s while adopted: %v", obj.GetName(), err)
		}
		if i == 1 {
			_ = unstructured.SetNestedField(got.Object, true, "status", "ready")
			if _, err := dyn.UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if i == 5 {
			if err := dyn.Delete(ctx, obj.GetName(), metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		created = append(created, obj.GetName())
	}
	list, err := dyn.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	held = map[string]*unstructured.Unstructured{}
	for i := range list.Items {
		held[list.Items[i].GetName()] = &list.Items[i]
	}
	if got := held["new-5"]; got == nil || got.GetDeletionTimestamp() == nil {
		t.Fatalf("new-5, deleted with a finalizer while adopted: %v, want it being deleted", got)
	}
	return held, deleted, created
}

// release runs kubectl annex release CRD --yes and returns its output.
func (f *adoptionFixture) tryRelease(t *testing.T, ctx context.Context) (stdout string, err error) {
	code, stdout, stderr := kubectlAnnex(t, nil, "release", f.crd.Name, "--yes", "--progress=never")
	if code != 0 || !strings.Contains(stdout, "customresourcedefinition/"+f.crd.Name+" released") {
		var status map[string]any
		if hr, err := adminClient(t).Resource(framework.HostedResources).Get(ctx, f.crd.Name, metav1.GetOptions{}); err == nil {
			status, _, _ = unstructured.NestedMap(hr.Object, "status", "adoption")
		}
		var logs strings.Builder
		env.DumpLogs(&logs)
		return stdout, fmt.Errorf("kubectl annex release: exit %d\nstdout:\n%s\nstderr:\n%s\nstatus.adoption: %v\n%s", code, stdout, stderr, status, logs.String())
	}
	t.Logf("kubectl annex release: %s%s", stderr, stdout)
	return stdout, nil
}

// verifyReleased checks what a user of a released type expects: the
// cluster serves the CRD again from its own etcd, its APIServices are
// local and the cluster's autoregister's again, no freeze and no
// temporary version are left, annex no longer serves the type, and every
// object annex held is served as annex held it: with its uid when the
// cluster had it, with a new one (reported) when it was created while
// adopted. Objects deleted while adopted are gone.
func (f *adoptionFixture) verifyReleased(t *testing.T, ctx context.Context, held map[string]*unstructured.Unstructured, deleted []string, stdout string, w *writer) {
	t.Helper()
	group := f.group
	crd, err := adminClient(t).Resource(crdsGVR).Get(ctx, f.crd.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ann := crd.GetAnnotations()["annex.dev/adopted-by"]; ann != "" {
		t.Errorf("the CRD is still annotated annex.dev/adopted-by=%s", ann)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	if len(versions) != 2 {
		t.Errorf("the CRD has versions %v, want v1 and v1beta1 only", versions)
	}
	// annexrelease was never stored: the CRD's stored versions are its own.
	if stored, _, _ := unstructured.NestedStringSlice(crd.Object, "status", "storedVersions"); !slices.Equal(stored, []string{"v1"}) {
		t.Errorf("the CRD's storedVersions are %v, want [v1] as before the adoption", stored)
	}
	for _, v := range versions {
		if served, _, _ := unstructured.NestedBool(v.(map[string]any), "served"); !served {
			t.Errorf("the CRD's version %v is not served", v.(map[string]any)["name"])
		}
	}
	for _, version := range []string{"v1", "v1beta1"} {
		svc, err := adminClient(t).Resource(apiServicesGVR).Get(ctx, version+"."+group, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if service, ok, _ := unstructured.NestedMap(svc.Object, "spec", "service"); ok {
			t.Errorf("APIService %s points at %v, want it local", svc.GetName(), service)
		}
		if got := svc.GetLabels()["kube-aggregator.kubernetes.io/automanaged"]; got != "true" {
			t.Errorf("APIService %s is labelled automanaged=%q, want true (the cluster's autoregister's)", svc.GetName(), got)
		}
		if got, ok := svc.GetLabels()["annex.dev/managed-by"]; ok {
			t.Errorf("APIService %s is still labelled annex.dev/managed-by=%s", svc.GetName(), got)
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := adminClient(t).Resource(apiServicesGVR).Get(ctx, adoption.ReleaseVersion+"."+group, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Errorf("APIService %s.%s is left", adoption.ReleaseVersion, group)
	}
	for _, resource := range []string{"validatingadmissionpolicies", "validatingadmissionpolicybindings"} {
		gvr := schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: resource}
		for _, name := range []string{"annex-adoption-freeze." + group, "annex-release-guard." + group} {
			if _, err := adminClient(t).Resource(gvr).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("%s %s: %v, want it deleted", resource, name, err)
			}
		}
	}
	// annex forgot the type: its HostedResource is gone (the plugin
	// deletes it), and annex does not serve it.
	if _, err := adminClient(t).Resource(framework.HostedResources).Get(ctx, f.crd.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the HostedResource after the release: %v, want it deleted", err)
	}
	annexConfig, err := env.AnnexAdminConfig(uniqueName("release-reader"))
	if err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := dynamicFor(t, annexConfig).Resource(f.gvr).Namespace(f.ns).List(ctx, metav1.ListOptions{Limit: 1})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Errorf("annex still serves %s after the release", f.gvr)
	}

	list, err := f.dyn.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing through the cluster: %v", err)
	}
	served := map[string]*unstructured.Unstructured{}
	for i := range list.Items {
		served[list.Items[i].GetName()] = &list.Items[i]
	}
	recreated := 0
	for name, want := range held {
		got, ok := served[name]
		if !ok {
			t.Errorf("%s, which annex held, is missing", name)
			continue
		}
		if w.acked[name] == 0 && !equality.Semantic.DeepEqual(content(got), content(want)) {
			gotJSON, _ := json.Marshal(content(got))
			wantJSON, _ := json.Marshal(content(want))
			t.Errorf("%s is\n%s\nwant, as annex held it,\n%s", name, gotJSON, wantJSON)
		}
		if before, ok := f.before[name]; ok {
			// An object annex holds as the cluster held it is not written:
			// its clients see no change.
			if equality.Semantic.DeepEqual(identity(want), before) && got.GetResourceVersion() != f.rvBefore[name] {
				t.Errorf("%s, unchanged while adopted, was written back: resourceVersion %s, %s before the adoption", name, got.GetResourceVersion(), f.rvBefore[name])
			}
			if got.GetUID() != before["uid"] {
				t.Errorf("%s has uid %s, want its own, %s", name, got.GetUID(), before["uid"])
			}
			if got.GetCreationTimestamp().UTC().Format(time.RFC3339) != before["creationTimestamp"] {
				t.Errorf("%s was created at %s, want %s", name, got.GetCreationTimestamp(), before["creationTimestamp"])
			}
		} else {
			recreated++
			if got.GetUID() == want.GetUID() {
				t.Errorf("%s, created while adopted, kept uid %s: the cluster cannot have been told it", name, got.GetUID())
			}
			if stdout != "" && !strings.Contains(stdout, "  "+f.ns+"/"+name+"\n") && !strings.Contains(stdout, "... and") {
				t.Errorf("%s, created while adopted, is not named among the objects with a new uid:\n%s", name, stdout)
			}
		}
		for _, entry := range got.GetManagedFields() {
			if strings.HasSuffix(entry.APIVersion, "/"+adoption.ReleaseVersion) {
				t.Errorf("%s has a managedFields entry of %s: %+v", name, adoption.ReleaseVersion, entry)
			}
		}
	}
	// The writer's objects were created while adopted too.
	var reported int
	if i := strings.Index(stdout, " objects were created in the cluster with a new uid"); i > 0 {
		_, _ = fmt.Sscanf(stdout[strings.LastIndex(stdout[:i], "\n")+1:i], "%d", &reported)
	}
	if stdout != "" && (recreated > 0 || len(w.tried) > 0) && (reported < recreated || reported > recreated+len(w.tried)) {
		t.Errorf("kubectl annex release reports %d objects with a new uid, want %d and the writer's (%d at most):\n%s", reported, recreated, len(w.tried), stdout)
	}
	for _, name := range deleted {
		if _, ok := served[name]; ok {
			t.Errorf("%s, deleted while adopted, is served again", name)
		}
	}
	for name, size := range w.acked {
		got, ok := served[name]
		if !ok {
			t.Errorf("%s, written by the writer, is missing", name)
			continue
		}
		if s, _, _ := unstructured.NestedInt64(got.Object, "spec", "size"); s < size || s > w.tried[name] {
			t.Errorf("%s has spec.size %d, want %d, the last acknowledged (or up to %d, tried later)", name, s, size, w.tried[name])
		}
	}

	// The objects live in the cluster's etcd again, and take writes there.
	obj, err := f.dyn.Get(ctx, "w-0001", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(obj.Object, int64(7), "spec", "size")
	if _, err := f.dyn.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		t.Errorf("updating w-0001 after the release: %v", err)
	}
}

// TestReleaseAnAdoptedCRD adopts a CRD with its objects, changes them while
// annex serves the type, then gives it back with kubectl annex release
// while a writer keeps writing.
func TestReleaseAnAdoptedCRD(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	f := newAdoptionFixture(t, ctx, 300)
	t.Cleanup(func() { undoAdoption(t, f.crd.Name, f.gvr, f.ns) })
	f.adopt(t, ctx)

	held, deleted, created := f.changeWhileAdopted(t, ctx)

	// What would happen, and nothing happens.
	stdout, _ := kubectlAnnexOK(t, "release", f.crd.Name, "--dry-run")
	if want := fmt.Sprintf("with annex's %d objects; %d were created while annex served the type", len(held), len(created)); !strings.Contains(stdout, want) {
		t.Errorf("kubectl annex release --dry-run printed %q, want %q", stdout, want)
	}
	if phase, _ := adoptionPhase(t, ctx, f.crd.Name); phase != "Adopted" {
		t.Errorf("after a dry run, the adoption is %q, want Adopted", phase)
	}

	w, stopWriter := f.startWriterWith(t, ctx, &writer{freeze: adoption.ReleaseFreezeMessage(f.group)})
	time.Sleep(time.Second)
	stdout, err := f.tryRelease(t, ctx)
	if err != nil {
		stopWriter()
		t.Fatal(err)
	}
	// Writes go on after the release, to the cluster.
	time.Sleep(2 * time.Second)
	stopWriter()
	if w.refused == 0 {
		t.Logf("the writer saw no refusal: the release froze no write it made")
	}
	f.verifyReleased(t, ctx, held, deleted, stdout, w)
	removeFinalizers(t, f.gvr, f.ns)
}

// releaseResult is what kubectl annex release printed, or why it failed.
type releaseResult struct {
	stdout string
	err    error
}

// releaseInTheBackground runs kubectl annex release, and returns once the
// release is RollingBack; its result comes on the channel.
func (f *adoptionFixture) releaseInTheBackground(t *testing.T, ctx context.Context) <-chan releaseResult {
	t.Helper()
	released := make(chan releaseResult, 1)
	go func() {
		stdout, err := f.tryRelease(t, ctx)
		released <- releaseResult{stdout, err}
	}()
	var phase string
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		phase, _ = adoptionPhase(t, ctx, f.crd.Name)
		return phase == "RollingBack", nil
	}); err != nil {
		t.Fatalf("the release never reached RollingBack: %v (last: %s)", err, phase)
	}
	return released
}

// holdReleaseVersion has the cluster refuse to add ReleaseVersion to the
// CRD, which holds a release before it serves that version.
func holdReleaseVersion(t *testing.T, ctx context.Context, crdName string) (unhold func()) {
	t.Helper()
	return holdCRD(t, ctx, crdName, "!object.spec.versions.exists(v, v.name == '"+adoption.ReleaseVersion+"')", "the test holds the release",
		func(versions []any) []any {
			extra := maps.Clone(versions[0].(map[string]any))
			extra["name"], extra["storage"] = adoption.ReleaseVersion, false
			return append(versions, extra)
		})
}

// TestAReleaseAcceptsWritesUntilItsLastChanges gives a type back while
// clients write to it. Until its last changes annex serves the type and
// accepts writes (the test holds the release there, before the cluster
// serves the version it writes back through), and what they wrote goes
// back with the rest. Through that version only annex writes: a client's
// write is refused, and leaves nothing in the cluster.
func TestAReleaseAcceptsWritesUntilItsLastChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	f := newAdoptionFixture(t, ctx, 100)
	t.Cleanup(func() { undoAdoption(t, f.crd.Name, f.gvr, f.ns) })
	f.adopt(t, ctx)
	held, deleted, _ := f.changeWhileAdopted(t, ctx)

	unhold := holdReleaseVersion(t, ctx, f.crd.Name)
	released := f.releaseInTheBackground(t, ctx)

	// The release waits for the hold; annex serves the type, and takes a
	// create and an update.
	created, err := f.dyn.Create(ctx, widget(f.gvr, f.ns, "during-release", 11), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("a create while the release writes back: %v", err)
	}
	held[created.GetName()] = created
	obj, err := f.dyn.Get(ctx, "w-0002", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(obj.Object, int64(222), "spec", "size")
	updated, err := f.dyn.Update(ctx, obj, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("an update while the release writes back: %v", err)
	}
	held[updated.GetName()] = updated
	if phase, _ := adoptionPhase(t, ctx, f.crd.Name); phase != "RollingBack" {
		t.Fatalf("the release is %s, want it held in RollingBack", phase)
	}
	unhold()

	// From here the cluster serves ReleaseVersion until the end: a
	// client's write through it is refused, by the guard or the freeze.
	release := f.gvr
	release.Version = adoption.ReleaseVersion
	stray := adminClient(t).Resource(release).Namespace(f.ns)
	refused := 0
	var r releaseResult
	for done := false; !done; {
		select {
		case r = <-released:
			done = true
		case <-time.After(20 * time.Millisecond):
		}
		_, err := stray.Create(ctx, widget(release, f.ns, "stray", 1), metav1.CreateOptions{})
		switch {
		case err == nil:
			t.Errorf("a client created an object through %s during the release", adoption.ReleaseVersion)
			_ = stray.Delete(ctx, "stray", metav1.DeleteOptions{})
		case strings.Contains(err.Error(), adoption.ReleaseGuardMessage(f.group)), strings.Contains(err.Error(), adoption.ReleaseFreezeMessage(f.group)):
			refused++
		}
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("writes through %s refused during the release: %d", adoption.ReleaseVersion, refused)
	if refused == 0 {
		t.Errorf("no write through %s was refused during the release", adoption.ReleaseVersion)
	}
	f.verifyReleased(t, ctx, held, deleted, r.stdout, &writer{acked: map[string]int64{}})
	if _, err := f.dyn.Get(ctx, "stray", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after the release, the stray object: %v, want it not found", err)
	}
	removeFinalizers(t, f.gvr, f.ns)
}

// TestReleaseSurvivesKills kills annex with SIGKILL while it gives a type
// back, with writes refused for its last changes: the release goes on after
// the restart (the freeze lifted, the write-back done again, writes
// accepted meanwhile, then refused again for the last changes), the plugin
// that follows it waits through the restart, and nothing is lost. The
// writer retries the 503s of the restart, when annex serves the type and is
// down.
func TestReleaseSurvivesKills(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	// Writes refused for 10 s before the last changes are written back,
	// long enough to kill annex meanwhile.
	restartWithFreezeSettle(t, ctx, 10*time.Second)
	f := newAdoptionFixture(t, ctx, 1000)
	t.Cleanup(func() { undoAdoption(t, f.crd.Name, f.gvr, f.ns) })
	f.adopt(t, ctx)
	held, deleted, _ := f.changeWhileAdopted(t, ctx)

	w, stopWriter := f.startWriterWith(t, ctx, &writer{freeze: adoption.ReleaseFreezeMessage(f.group), retryUnavailable: true})
	released := f.releaseInTheBackground(t, ctx)
	time.Sleep(time.Second)
	killAnnex(t, ctx, "while RollingBack")
	r := <-released
	if r.err != nil {
		stopWriter()
		t.Fatal(r.err)
	}
	time.Sleep(2 * time.Second)
	stopWriter()
	f.verifyReleased(t, ctx, held, deleted, r.stdout, w)
	removeFinalizers(t, f.gvr, f.ns)
}

// TestDeleteAHostedResourceWhileItsReleaseRuns deletes the HostedResource
// of a type being released, as a user who set spec.adoption.release by
// hand and then deletes it might: the deletion waits for the release to
// end, so that annex deletes its objects only once the cluster holds them.
func TestDeleteAHostedResourceWhileItsReleaseRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	// Writes refused for 5 s before the last changes are written back: the
	// deletion comes during the release.
	restartWithFreezeSettle(t, ctx, 5*time.Second)
	f := newAdoptionFixture(t, ctx, 300)
	t.Cleanup(func() { undoAdoption(t, f.crd.Name, f.gvr, f.ns) })
	f.adopt(t, ctx)
	held, deleted, _ := f.changeWhileAdopted(t, ctx)

	hrs := adminClient(t).Resource(framework.HostedResources)
	if _, err := hrs.Patch(ctx, f.crd.Name, types.MergePatchType, []byte(`{"spec":{"adoption":{"release":true}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var phase string
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		phase, _ = adoptionPhase(t, ctx, f.crd.Name)
		return phase == "RollingBack", nil
	}); err != nil {
		t.Fatalf("the release never reached RollingBack: %v (last: %s)", err, phase)
	}
	if err := hrs.Delete(ctx, f.crd.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The deletion waits, and says why.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		hr, err := hrs.Get(ctx, f.crd.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conditions, _, _ := unstructured.NestedSlice(hr.Object, "status", "conditions")
		for _, c := range conditions {
			if m, _ := c.(map[string]any)["message"].(string); strings.Contains(m, "waiting for the release of the type to end") {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Errorf("the HostedResource deleted while RollingBack does not say that its deletion waits: %v", err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := hrs.Get(ctx, f.crd.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Fatalf("the HostedResource was not deleted after its release: %v", err)
	}
	f.verifyReleased(t, ctx, held, deleted, "", &writer{acked: map[string]int64{}})
	removeFinalizers(t, f.gvr, f.ns)
}

// TestAStalledReleaseIsUndone holds a release where it cannot go on (a
// policy of the cluster refuses the version it writes back through): after
// --adoption-release-stall-timeout without progress annex undoes it, writes
// are accepted, and the type stays adopted with the reason.
func TestAStalledReleaseIsUndone(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	if _, err := env.RestartAnnex(ctx, time.Minute, "--adoption-release-stall-timeout=15s"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := env.RestartAnnex(context.Background(), time.Minute, "--adoption-release-stall-timeout="+adoption.DefaultReleaseStallTimeout.String()); err != nil {
			t.Errorf("restarting annex with its default stall timeout: %v", err)
		}
	})
	f := newAdoptionFixture(t, ctx, 50)
	t.Cleanup(func() { undoAdoption(t, f.crd.Name, f.gvr, f.ns) })
	f.adopt(t, ctx)

	// The cluster refuses the version the release writes back through.
	unhold := holdReleaseVersion(t, ctx, f.crd.Name)

	start := time.Now()
	code, stdout, stderr := kubectlAnnex(t, nil, "release", f.crd.Name, "--yes", "--progress=never", "--timeout=2m")
	took := time.Since(start)
	t.Logf("kubectl annex release, held, exited %d after %s:\n%s%s", code, took.Round(time.Second), stderr, stdout)
	if code == 0 || !strings.Contains(stderr, "made no progress for 15s") || !strings.Contains(stderr, "the test holds the release") {
		t.Errorf("a held release: exit %d, stderr %q; want a failure that says it made no progress, with the last error", code, stderr)
	}
	if phase, _ := adoptionPhase(t, ctx, f.crd.Name); phase != "Adopted" {
		t.Errorf("after a stalled release the adoption is %q, want Adopted", phase)
	}
	// Writes are accepted again, by annex.
	var err error
	if werr := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err = f.dyn.Create(ctx, widget(f.gvr, f.ns, "after-stall", 1), metav1.CreateOptions{})
		return err == nil, nil
	}); werr != nil {
		t.Errorf("after the stalled release was undone, a create: %v", err)
	}
	f.verifyAdopted(t, ctx, &writer{acked: map[string]int64{}})
	unhold()
}

// TestReleaseAGroupOfTwoCRDs releases a group whose two CRDs annex adopted:
// the release of the first waits for the second (the group's APIServices
// serve both), then both go back together.
func TestReleaseAGroupOfTwoCRDs(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	f := newAdoptionFixture(t, ctx, 50)
	gadgets, gadgetsGVR, gadgetUIDs := f.addGadgets(t, ctx, 5)
	// The gadgets' adoption waits for the widgets'; then both switch.
	_, _, _ = kubectlAnnex(t, nil, "adopt", gadgets.Name, "--yes", "--progress=never", "--timeout=5s")
	f.adopt(t, ctx)
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		phase, _ := adoptionPhase(t, ctx, gadgets.Name)
		return phase == "Adopted", nil
	}); err != nil {
		t.Fatalf("the gadgets were not adopted with the widgets: %v", err)
	}
	adopted, err := f.dyn.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]*unstructured.Unstructured{}
	for i := range adopted.Items {
		held[adopted.Items[i].GetName()] = &adopted.Items[i]
	}

	// The first waits for the second, and says so; the group stays adopted.
	code, stdout, stderr := kubectlAnnex(t, nil, "release", f.crd.Name, "--yes", "--progress=never", "--timeout=15s")
	if code == 0 || !strings.Contains(stderr, "GroupNotReleased") || !strings.Contains(stderr, gadgets.Name) {
		t.Fatalf("releasing one CRD of a group of two: exit %d, stdout %q, stderr %q; want it to wait, naming %s", code, stdout, stderr, gadgets.Name)
	}
	if phase, _ := adoptionPhase(t, ctx, f.crd.Name); phase != "Adopted" {
		t.Errorf("while the group's release waits, the widgets' adoption is %q, want Adopted", phase)
	}
	// The second releases both, and follows its own; the first, run again,
	// finds its type released and deletes its HostedResource.
	if code, stdout, stderr := kubectlAnnex(t, nil, "release", gadgets.Name, "--yes", "--progress=never"); code != 0 || !strings.Contains(stdout, "released") {
		t.Fatalf("releasing the second CRD: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	stdout, err = f.tryRelease(t, ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.verifyReleased(t, ctx, held, nil, stdout, &writer{acked: map[string]int64{}})
	if got := f.gadgetUIDs(t, ctx, gadgetsGVR); !maps.Equal(got, gadgetUIDs) {
		t.Errorf("the released gadgets are %v, want %v", got, gadgetUIDs)
	}
	if _, err := adminClient(t).Resource(framework.HostedResources).Get(ctx, gadgets.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the gadgets' HostedResource after the release: %v, want it deleted", err)
	}
}
