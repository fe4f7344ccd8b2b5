package adoption

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/storage"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// ReleaseVersion is the version that a released CRD serves, from the
// cluster, while annex writes its objects back: a copy of its storage
// version (conversion None) whose APIService the cluster registers as
// its own, while the type's other versions still point at annex. Through
// it annex writes into the cluster's etcd, and clients keep reading annex's
// objects until the switch back. It is never stored, and goes before the
// release ends.
const ReleaseVersion = "annexrelease"

// Reasons of a release.
const (
	// ReasonReleaseFailed: the release stopped and was undone; annex still
	// serves the type (phase Adopted). The message says why. Setting
	// spec.adoption.release false, then true, tries again.
	ReasonReleaseFailed = "ReleaseFailed"
	// ReasonGroupNotReleased: the release waits until every adopted CRD of
	// the group is released too (the group's APIServices serve them all).
	ReasonGroupNotReleased = "GroupNotReleased"
)

// maxRecreatedNames bounds status.adoption.recreatedObjects.
const maxRecreatedNames = 100

// ReleaseFreezeMessage is what annex and the cluster answer a write to a
// type of group while annex gives it back.
func ReleaseFreezeMessage(group string) string {
	return fmt.Sprintf("annex is giving the resources of %s back to the cluster: writes to them are refused while their objects are written back; retry", group)
}

// ReleasePending says whether hr asks for its type to be released and the
// release has not ended: it is under way, waits for the rest of its group,
// or failed with release still set. The deletion of such a HostedResource
// waits, since it would delete annex's objects before the cluster holds
// them.
func ReleasePending(hr *v1alpha1.HostedResource) bool {
	s := hr.Status.Adoption
	if hr.Spec.Adoption == nil || s == nil {
		return false
	}
	return s.Phase == v1alpha1.AdoptionRollingBack || (s.Phase == v1alpha1.AdoptionAdopted && hr.Spec.Adoption.Release)
}

// releaseRequested says whether every member asks to be released (and has
// not failed to be, with release still set), and names those that do.
func (g *group) releaseRequested() (all bool, asking []*adoption) {
	all = true
	for _, a := range g.members {
		if a.hr.Spec.Adoption.Release && a.status.Phase == v1alpha1.AdoptionAdopted && a.status.Reason != ReasonReleaseFailed {
			asking = append(asking, a)
		} else {
			all = false
		}
	}
	return all && len(asking) > 0, asking
}

// noteRelease keeps an adopted group that is not released: a member that
// asks for it is told what it waits for, and a failed release is forgotten
// once its member no longer asks for it, so that asking again tries again.
func (g *group) noteRelease(ctx context.Context, asking []*adoption) error {
	var others []string
	for _, a := range g.members {
		if !slices.Contains(asking, a) {
			others = append(others, a.hr.Spec.Adoption.CustomResourceDefinition)
		}
	}
	for _, a := range g.members {
		var reason, message string
		switch {
		case slices.Contains(asking, a):
			reason, message = ReasonGroupNotReleased, fmt.Sprintf(
				"group %s is released as a whole (its APIServices serve every type of it): release %s too", g.name, strings.Join(others, ", "))
		case a.status.Phase == v1alpha1.AdoptionAdopted && a.status.Reason == ReasonReleaseFailed && a.hr.Spec.Adoption.Release:
			continue
		case a.status.Reason == ReasonClusterCopiesNotDeleted && a.clusterCopiesPending():
			continue
		case a.status.Phase == v1alpha1.AdoptionAdopted && a.status.Reason != "":
			reason, message = "", a.adoptedMessage()
		default:
			continue
		}
		if a.status.Reason == reason && a.status.Message == message {
			continue
		}
		a.status.Reason, a.status.Message = reason, message
		if err := a.writeStatus(ctx); err != nil {
			return err
		}
	}
	return nil
}

const adoptedMessage = "annex serves the type; its objects as they were before the adoption stay in the cluster's etcd"

// release gives the group's types back to the cluster. It writes annex's
// objects back into the cluster's etcd through ReleaseVersion while annex
// still serves the types and accepts writes, then writes back what changed
// meanwhile, in passes, until few did. Only then does it refuse writes,
// write back the last changes, serve the CRDs again, point the APIServices
// back at the cluster and accept writes again. Every step can be done
// again: a release that annex's restart interrupted goes on from where it
// was.
func (g *group) release(ctx context.Context) error {
	g.step("start")
	starting := !g.inPhase(v1alpha1.AdoptionRollingBack)
	for _, a := range g.members {
		err := a.readCRD(ctx)
		var f *failed
		if errors.As(err, &f) {
			return g.releaseFailed(ctx, fmt.Sprintf("%s: %s", f.reason, f.message))
		}
		if err != nil {
			return err
		}
		if starting && slices.ContainsFunc(a.crd.Spec.Versions, func(v apiextensionsv1.CustomResourceDefinitionVersion) bool { return v.Name == ReleaseVersion }) {
			return g.releaseFailed(ctx, fmt.Sprintf("CustomResourceDefinition %s already has a version %s, the name annex gives the version it writes back through",
				a.crd.Name, ReleaseVersion))
		}
	}
	if starting {
		now := metav1.Now()
		for _, a := range g.members {
			s := a.status
			s.Phase, s.ReleaseStartTime, s.ReleaseFrozenTime, s.ReleasedTime = v1alpha1.AdoptionRollingBack, &now, nil, nil
			s.Copied, s.Total, s.Recreated, s.RecreatedObjects = 0, 0, 0, nil
			s.Reason, s.Message = "", "annex writes its objects back into the cluster"
			if err := a.writeStatus(ctx); err != nil {
				return err
			}
		}
	}

	// The CRDs still annotated are not written back yet; the others were
	// served again by a process that stopped before the end.
	var writeBack []*adoption
	for _, a := range g.members {
		if a.crd.Annotations[v1alpha1.AdoptedByAnnotation] == g.managedBy() {
			writeBack = append(writeBack, a)
		}
	}
	if len(writeBack) > 0 {
		if err := g.writeBackAll(ctx, writeBack, len(writeBack) < len(g.members)); err != nil {
			var f *failed
			if errors.As(err, &f) {
				return g.releaseFailed(ctx, f.message)
			}
			return err
		}
		for _, a := range writeBack {
			if err := a.serveAgain(ctx); err != nil {
				return err
			}
		}
		g.step("served the CRDs again")
	}
	err := g.switchBack(ctx)
	if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
		return g.releaseFailed(ctx, err.Error())
	}
	if err != nil {
		return err
	}
	g.step("switched the APIServices back")
	if err := g.unfreeze(ctx); err != nil {
		return err
	}
	g.step("deleted the freeze")
	g.awaitThaw(ctx, ReleaseFreezeMessage(g.name))
	if err := g.lift(ctx, g.guardName()); err != nil {
		return err
	}
	now := metav1.Now()
	for _, a := range g.members {
		s := a.status
		s.Phase, s.ReleasedTime = v1alpha1.AdoptionReleased, &now
		if from := cmp.Or(s.ReleaseFrozenTime, s.ReleaseStartTime); from != nil {
			s.Freeze = &metav1.Duration{Duration: now.Sub(from.Time).Round(time.Millisecond)}
		}
		s.Reason, s.Message = "", "the cluster serves the type again, with the objects annex held; delete the HostedResource to delete annex's copies"
		if err := a.writeStatus(ctx); err != nil {
			return err
		}
		ctrl.LoggerFrom(ctx).Info("Released a CustomResourceDefinition", "crd", a.crd.Name, "objects", s.Total, "recreated", s.Recreated,
			"freeze", ptr.Deref(s.Freeze, metav1.Duration{}).Duration.String(), "steps", strings.Join(g.steps, ", "))
	}
	return nil
}

// writeBackAll writes the objects of members back into the cluster's etcd.
// Unless frozen, writes are accepted meanwhile: a first pass writes every
// object that the cluster does not hold as annex does, further passes
// write what changed in annex since, and once a pass finds at most
// CatchUpObjects changes (or after CatchUpPasses) writes are refused and a
// last pass writes the last changes. A process that stopped before the end
// knew what it wrote; what it left is found again by the first pass, which
// compares every object. frozen says that other members are served by the
// cluster again already: their objects there are final, so writes stay
// refused throughout.
func (g *group) writeBackAll(ctx context.Context, members []*adoption, frozen bool) error {
	user, err := g.whoAmI(ctx)
	if err != nil {
		return err
	}
	if frozen {
		if err := g.freezeForRelease(ctx, user); err != nil {
			return err
		}
	} else {
		// Only annex writes through ReleaseVersion, before it is served.
		if err := g.guard(ctx, user); err != nil {
			return err
		}
		g.step("guarded version " + ReleaseVersion)
		// A freeze left by a process that stopped during its last pass:
		// writes are accepted again until the last changes.
		if err := g.unfreeze(ctx); err != nil {
			return err
		}
		for _, a := range g.members {
			if a.status.ReleaseFrozenTime != nil {
				a.status.ReleaseFrozenTime = nil
				a.status.Message = "annex restarted while writes were refused; it writes its objects back again, writes accepted meanwhile"
				if err := a.writeStatus(ctx); err != nil {
					return err
				}
			}
		}
	}
	for _, a := range members {
		if err := a.serveReleaseVersion(ctx); err != nil {
			return err
		}
	}
	for _, a := range members {
		if err := a.waitServed(ctx); err != nil {
			return err
		}
	}
	g.step("served version " + ReleaseVersion)
	for _, a := range members {
		objects, err := a.Objects(a.gvr.GroupResource())
		if err != nil {
			return fmt.Errorf("opening the store of %s: %w", a.crd.Name, err)
		}
		defer objects.Destroy()
		a.objects = objects
		if err := a.writeBack(ctx, frozen); err != nil {
			return err
		}
		g.step(fmt.Sprintf("wrote %d objects of %s back", a.status.Total, a.crd.Name))
	}
	if frozen {
		return nil
	}
	for pass := 1; ; pass++ {
		changed, err := writeBackChanges(ctx, members)
		if err != nil {
			return err
		}
		g.step(fmt.Sprintf("pass %d wrote %d changes back", pass, changed))
		if changed <= g.CatchUpObjects || pass >= g.CatchUpPasses {
			break
		}
	}
	if err := g.freezeForRelease(ctx, user); err != nil {
		return err
	}
	changed, err := writeBackChanges(ctx, members)
	if err != nil {
		return err
	}
	g.step(fmt.Sprintf("wrote the last %d changes back", changed))
	return nil
}

// writeBackChanges writes back what changed in the members since their
// last pass, and returns how many objects did.
func writeBackChanges(ctx context.Context, members []*adoption) (int, error) {
	changed := 0
	for _, a := range members {
		n, err := a.writeBackChanges(ctx)
		if err != nil {
			return 0, err
		}
		changed += n
	}
	return changed, nil
}

// freezeForRelease refuses writes to the group's types, but annex's
// through ReleaseVersion, notes when in each member's status, and waits
// for writes admitted just before to end.
func (g *group) freezeForRelease(ctx context.Context, user string) error {
	frozen, err := g.freezeFor(ctx, ReleaseFreezeMessage(g.name), user)
	if err != nil {
		return err
	}
	for _, a := range g.members {
		if a.status.ReleaseFrozenTime != nil {
			continue // a freeze kept from a process that stopped
		}
		a.status.ReleaseFrozenTime = &metav1.Time{Time: frozen}
		a.status.Message = "writes to the type are refused while annex writes its last changes back into the cluster"
		if err := a.writeStatus(ctx); err != nil {
			return err
		}
	}
	return g.settle(ctx)
}

// releaseFailed undoes what a release did (the CRDs unserved again, without
// ReleaseVersion; the APIServices pointing at annex; writes accepted) and
// leaves the group adopted, with reason ReleaseFailed. What was written
// back into the cluster's etcd stays there, unread, as the objects of
// before the adoption did.
func (g *group) releaseFailed(ctx context.Context, message string) error {
	ctrl.LoggerFrom(ctx).Info("A release failed; the group stays adopted", "group", g.name, "message", message)
	var versions []string
	for _, a := range g.members {
		if a.crd == nil {
			continue
		}
		if err := a.dropReleaseVersion(ctx); err != nil {
			return err
		}
		if err := a.stopServing(ctx); err != nil {
			return err
		}
		for _, v := range a.hr.Spec.Versions {
			if v.Served && !slices.Contains(versions, v.Name) {
				versions = append(versions, v.Name)
			}
		}
	}
	if err := g.pointAtAnnex(ctx, versions); err != nil {
		return err
	}
	if err := g.unfreeze(ctx); err != nil {
		return err
	}
	if err := g.lift(ctx, g.guardName()); err != nil {
		return err
	}
	for _, a := range g.members {
		a.status.Phase, a.status.ReleasedTime, a.status.ReleaseFrozenTime = v1alpha1.AdoptionAdopted, nil, nil
		a.status.Reason, a.status.Message = ReasonReleaseFailed, "the release failed and was undone; annex still serves the type: "+message
		if err := a.writeStatus(ctx); err != nil {
			return err
		}
	}
	return nil
}

// whoAmI is the name the cluster knows annex by, which the release's
// freeze lets write through ReleaseVersion.
func (g *group) whoAmI(ctx context.Context) (string, error) {
	gvr := schema.GroupVersionResource{Group: "authentication.k8s.io", Version: "v1", Resource: "selfsubjectreviews"}
	review, err := g.Dynamic.Resource(gvr).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("asking the cluster who annex is (SelfSubjectReview): %w", err)
	}
	user, _, _ := unstructured.NestedString(review.Object, "status", "userInfo", "username")
	if user == "" {
		return "", fmt.Errorf("the cluster's SelfSubjectReview names no user")
	}
	return user, nil
}

// releaseGVR is the type's resource in ReleaseVersion.
func (a *adoption) releaseGVR() schema.GroupVersionResource {
	gvr := a.gvr
	gvr.Version = ReleaseVersion
	return gvr
}

// serveReleaseVersion adds ReleaseVersion to the CRD, served: the
// cluster's autoregister controller registers its APIService as the
// cluster's own, while the other versions' still point at annex. A
// conversion webhook would be asked to convert ReleaseVersion, which it
// does not know: the CRD converts with None meanwhile (ReleaseVersion is
// the storage version's copy, and the cluster serves no other version),
// and keeps the webhook in v1alpha1.ConversionAnnotation.
func (a *adoption) serveReleaseVersion(ctx context.Context) error {
	var problem error
	err := a.updateCRD(ctx, func(crd *apiextensionsv1.CustomResourceDefinition) bool {
		changed := false
		if c := crd.Spec.Conversion; c != nil && c.Strategy == apiextensionsv1.WebhookConverter {
			saved, err := json.Marshal(c)
			if err != nil {
				problem = err
				return false
			}
			metav1.SetMetaDataAnnotation(&crd.ObjectMeta, v1alpha1.ConversionAnnotation, string(saved))
			crd.Spec.Conversion = &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter}
			changed = true
		}
		if slices.ContainsFunc(crd.Spec.Versions, isReleaseVersion) {
			return changed
		}
		i := slices.IndexFunc(crd.Spec.Versions, func(v apiextensionsv1.CustomResourceDefinitionVersion) bool { return v.Storage })
		if i < 0 {
			return changed
		}
		v := *crd.Spec.Versions[i].DeepCopy()
		// Not deprecated: the warning would be logged at each write back.
		v.Name, v.Served, v.Storage = ReleaseVersion, true, false
		v.Deprecated, v.DeprecationWarning = false, nil
		crd.Spec.Versions = append(crd.Spec.Versions, v)
		return true
	})
	return errors.Join(problem, err)
}

// restoreConversion puts back the conversion that serveReleaseVersion
// kept, and says whether it did.
func restoreConversion(crd *apiextensionsv1.CustomResourceDefinition) bool {
	saved, ok := crd.Annotations[v1alpha1.ConversionAnnotation]
	if !ok {
		return false
	}
	conversion := &apiextensionsv1.CustomResourceConversion{}
	if err := json.Unmarshal([]byte(saved), conversion); err == nil && conversion.Strategy != "" {
		crd.Spec.Conversion = conversion
	}
	delete(crd.Annotations, v1alpha1.ConversionAnnotation)
	return true
}

func isReleaseVersion(v apiextensionsv1.CustomResourceDefinitionVersion) bool {
	return v.Name == ReleaseVersion
}

// dropReleaseVersion removes ReleaseVersion from the CRD, and puts its
// conversion back.
func (a *adoption) dropReleaseVersion(ctx context.Context) error {
	return a.updateCRD(ctx, func(crd *apiextensionsv1.CustomResourceDefinition) bool {
		n := len(crd.Spec.Versions)
		crd.Spec.Versions = slices.DeleteFunc(crd.Spec.Versions, isReleaseVersion)
		restored := restoreConversion(crd)
		return len(crd.Spec.Versions) != n || restored
	})
}

// serveAgain serves the CRD's versions as the HostedResource serves them,
// removes ReleaseVersion and the adoption's annotation, in one update. The
// APIServices still point at annex: clients read annex until the switch.
func (a *adoption) serveAgain(ctx context.Context) error {
	return a.updateCRD(ctx, func(crd *apiextensionsv1.CustomResourceDefinition) bool {
		crd.Spec.Versions = slices.DeleteFunc(crd.Spec.Versions, isReleaseVersion)
		restoreConversion(crd)
		for i := range crd.Spec.Versions {
			v := &crd.Spec.Versions[i]
			j := slices.IndexFunc(a.hr.Spec.Versions, func(hv apiextensionsv1.CustomResourceDefinitionVersion) bool { return hv.Name == v.Name })
			v.Served = j >= 0 && a.hr.Spec.Versions[j].Served
		}
		delete(crd.Annotations, v1alpha1.AdoptedByAnnotation)
		return true
	})
}

// updateCRD updates the cluster's CRD with change, if it changes it.
func (a *adoption) updateCRD(ctx context.Context, change func(*apiextensionsv1.CustomResourceDefinition) bool) error {
	for {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := a.ClusterReader.Get(ctx, client.ObjectKey{Name: a.crd.Name}, crd); err != nil {
			return client.IgnoreNotFound(err)
		}
		if !change(crd) {
			a.crd = crd
			return nil
		}
		err := a.Cluster.Update(ctx, crd)
		if apierrors.IsConflict(err) {
			continue
		}
		if err == nil {
			a.crd = crd
		}
		return err
	}
}

// waitServed waits until the cluster serves ReleaseVersion.
func (a *adoption) waitServed(ctx context.Context) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, a.FreezeTimeout, true, func(ctx context.Context) (bool, error) {
		_, last = a.Dynamic.Resource(a.releaseGVR()).List(ctx, metav1.ListOptions{Limit: 1})
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("the cluster does not serve %s: %v", a.releaseGVR(), last)
	}
	return nil
}

// clusterObject is what writeBack keeps of an object the cluster holds:
// enough to delete it, and a fingerprint of what a write-back would change.
type clusterObject struct {
	uid         types.UID
	finalizers  bool
	fingerprint [sha256.Size]byte
}

// fingerprint digests what writeBackOne compares of an object: the object
// but for what the cluster sets itself, its status when the type has the
// subresource (written apart), its managedFields, and whether it is being
// deleted. Two objects with the same fingerprint need no write.
func fingerprint(obj *unstructured.Unstructured, statusSubresource bool) ([sha256.Size]byte, error) {
	managedFields, _, _ := unstructured.NestedFieldNoCopy(obj.Object, "metadata", "managedFields")
	data, err := json.Marshal([]any{normalObject(obj, statusSubresource), obj.Object["status"], managedFields, obj.GetDeletionTimestamp() != nil})
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(data), nil
}

// writeBack writes the objects annex holds into the cluster's etcd
// through ReleaseVersion: it updates those the cluster holds (keeping their
// uid), creates the others (the cluster gives them a new uid and
// creationTimestamp: they are counted in status.adoption.recreated), and
// deletes those annex does not hold. Objects that did not change are not
// written, nor read one by one: the cluster's objects are listed a page at
// a time, and only their fingerprints kept, to compare with annex's. It
// notes what it wrote (or found written) for writeBackChanges.
func (a *adoption) writeBack(ctx context.Context, frozen bool) error {
	gvr := a.releaseGVR()
	statusSubresource := a.hasStatusSubresource()
	inCluster := map[string]*clusterObject{}
	opts := metav1.ListOptions{Limit: pageSize}
	for {
		page, err := a.Dynamic.Resource(gvr).List(ctx, opts)
		if err != nil {
			return fmt.Errorf("listing %s in the cluster: %w", gvr.GroupResource(), err)
		}
		for i := range page.Items {
			obj := &page.Items[i]
			obj.SetAPIVersion(gvr.GroupVersion().String())
			sum, err := fingerprint(obj, statusSubresource)
			if err != nil {
				return err
			}
			inCluster[key(obj.GetNamespace(), obj.GetName())] = &clusterObject{uid: obj.GetUID(), finalizers: len(obj.GetFinalizers()) > 0, fingerprint: sum}
		}
		if opts.Continue = page.GetContinue(); opts.Continue == "" {
			break
		}
	}
	total := 0
	if err := eachHeld(ctx, a.objects, func(string, string) error { total++; return nil }); err != nil {
		return err
	}
	s := a.status
	s.Copied, s.Total, s.Recreated, s.RecreatedObjects = 0, int64(total), 0, nil
	a.written, a.inCluster, a.recreated = make(map[string]string, total), make(map[string]string, total), map[string]bool{}
	meanwhile := "writes to the type are accepted meanwhile, and refused only while the last changes are written back"
	if frozen {
		meanwhile = "writes to the type are refused meanwhile"
	}
	s.Reason, s.Message = "", fmt.Sprintf("writing %d objects back into the cluster; %s", total, meanwhile)
	if err := a.writeStatus(ctx); err != nil {
		return err
	}
	held := map[string]bool{}
	err := eachHeldPage(ctx, a.objects, func(page []unstructured.Unstructured) error {
		var write []*unstructured.Unstructured
		for i := range page {
			obj := &page[i]
			k := key(obj.GetNamespace(), obj.GetName())
			held[k] = true
			current := inCluster[k]
			if current != nil && current.uid == obj.GetUID() {
				want := obj.DeepCopy()
				want.SetAPIVersion(gvr.GroupVersion().String())
				if sum, err := fingerprint(want, statusSubresource); err == nil && sum == current.fingerprint {
					// The cluster holds it as annex does.
					a.written[k], a.inCluster[k] = obj.GetResourceVersion(), string(current.uid)
					continue
				}
			}
			if current != nil {
				a.inCluster[k] = string(current.uid)
			}
			write = append(write, obj)
		}
		if err := a.writeBackSome(ctx, write); err != nil {
			return err
		}
		s.Copied += int64(len(page))
		return a.writeStatus(ctx)
	})
	if err != nil {
		return err
	}
	for k, current := range inCluster {
		if held[k] {
			continue
		}
		if err := a.deleteBack(ctx, k, string(current.uid), current.finalizers); err != nil {
			return err
		}
	}
	return nil
}

// writeBackChanges writes back what changed in annex since the last pass:
// the objects whose resourceVersion moved or that are new, and the
// deletion of those annex no longer holds. It lists the type's metadata
// only, and reads the objects that changed. It returns how many.
func (a *adoption) writeBackChanges(ctx context.Context) (int, error) {
	held := make(map[string]bool, len(a.written))
	var changed []string
	err := eachHeldVersion(ctx, a.objects, func(k, rv string) error {
		held[k] = true
		if written, ok := a.written[k]; !ok || written != rv {
			changed = append(changed, k)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	vanished := map[string]bool{}
	for page := range slices.Chunk(changed, pageSize) {
		var write []*unstructured.Unstructured
		for _, k := range page {
			namespace, name, _ := strings.Cut(k, "/")
			obj := &unstructured.Unstructured{}
			err := a.objects.Get(ctx, a.objects.Key(namespace, name), storage.GetOptions{}, obj)
			if storage.IsNotFound(err) {
				// Deleted since the list: deleted below.
				delete(held, k)
				vanished[k] = true
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("reading %s in annex: %w", strings.TrimPrefix(k, "/"), err)
			}
			write = append(write, obj)
		}
		if err := a.writeBackSome(ctx, write); err != nil {
			return 0, err
		}
	}
	n := len(changed)
	for k := range a.written {
		if held[k] {
			continue
		}
		if !vanished[k] {
			n++
		}
		// Its finalizers, if any, go first: annex removed them before the
		// object went.
		if err := a.deleteBack(ctx, k, a.inCluster[k], true); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// writeBackSome writes objs back, copyWorkers at a time, and notes each
// as written, with the uid the cluster holds it by; one the cluster holds
// by another uid than annex's, or had to create, is counted as recreated.
func (a *adoption) writeBackSome(ctx context.Context, objs []*unstructured.Unstructured) error {
	s := a.status
	var mu sync.Mutex
	// The group's context ends with Wait; the status is written after.
	g, writing := errgroup.WithContext(ctx)
	g.SetLimit(copyWorkers)
	for _, obj := range objs {
		k := key(obj.GetNamespace(), obj.GetName())
		// The writers started before this one note theirs meanwhile.
		mu.Lock()
		_, exists := a.inCluster[k]
		mu.Unlock()
		g.Go(func() error {
			uid, err := a.writeBackOne(writing, obj, exists)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			a.written[k], a.inCluster[k] = obj.GetResourceVersion(), string(uid)
			if uid != "" && uid != obj.GetUID() && !a.recreated[k] {
				a.recreated[k] = true
				s.Recreated++
				if len(s.RecreatedObjects) < maxRecreatedNames {
					s.RecreatedObjects = append(s.RecreatedObjects, strings.TrimPrefix(k, "/"))
				}
			}
			return nil
		})
	}
	err := g.Wait()
	slices.Sort(s.RecreatedObjects)
	return err
}

// deleteBack deletes the object k from the cluster, by its uid there, and
// forgets it.
func (a *adoption) deleteBack(ctx context.Context, k, uid string, finalizers bool) error {
	namespace, name, _ := strings.Cut(k, "/")
	obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID(uid)}}
	if finalizers {
		obj.Finalizers = []string{"any"} // deleteFromCluster removes them first
	}
	if err := a.deleteFromCluster(ctx, obj); err != nil {
		if permanent(err) {
			return &failed{reason: ReasonReleaseFailed, message: err.Error()}
		}
		return err
	}
	delete(a.written, k)
	delete(a.inCluster, k)
	return nil
}

// permanent says whether a write's error will not go away by trying again.
// A refusal by one of annex's own policies (a freeze, the guard) is not:
// an API server enforces a deleted policy until its next refresh of
// policies (every second in k8s.io/apiserver), so a write right after an
// adoption's freeze ended may still be refused by it.
func permanent(err error) bool {
	if apierrors.IsForbidden(err) && refusedByAnnex(err) {
		return false
	}
	return apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsForbidden(err) ||
		apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) || apierrors.IsRequestEntityTooLargeError(err)
}

// refusedByAnnex says whether err is the refusal of one of annex's own
// policies, by its binding's name.
func refusedByAnnex(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "binding 'annex-adoption-freeze.") || strings.Contains(msg, "binding 'annex-release-guard.")
}

func writeBackFailed(k string, err error) error {
	if permanent(err) {
		return &failed{reason: ReasonReleaseFailed, message: fmt.Sprintf("writing %s back into the cluster: %v", k, err)}
	}
	return fmt.Errorf("writing %s back into the cluster: %w", k, err)
}

// systemFields are the metadata that the cluster sets and no client can.
var systemFields = []string{"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink",
	"deletionTimestamp", "deletionGracePeriodSeconds"}

// writeBackOne writes one object annex holds into the cluster, through
// ReleaseVersion: metadata (labels, annotations, finalizers,
// ownerReferences), spec and the rest, then status through /status when
// the type has that subresource, then the deletion of an object being
// deleted, then annex's managedFields, so that none names ReleaseVersion.
func (a *adoption) writeBackOne(ctx context.Context, held *unstructured.Unstructured, exists bool) (types.UID, error) {
	gvr := a.releaseGVR()
	res := a.Dynamic.Resource(gvr).Namespace(held.GetNamespace())
	name := held.GetName()
	k := strings.TrimPrefix(key(held.GetNamespace(), name), "/")
	want := held.DeepCopy()
	want.SetAPIVersion(gvr.GroupVersion().String())
	statusSubresource := a.hasStatusSubresource()

	var live *unstructured.Unstructured
	if exists {
		var err error
		live, err = res.Get(ctx, name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return "", writeBackFailed(k, err)
		}
		if err != nil {
			live = nil
		}
	}
	switch {
	case live == nil:
		create := want.DeepCopy()
		for _, f := range systemFields {
			unstructured.RemoveNestedField(create.Object, "metadata", f)
		}
		created, err := res.Create(ctx, create, metav1.CreateOptions{FieldManager: FieldManager})
		if err != nil {
			return "", writeBackFailed(k, err)
		}
		live = created
	case !sameObject(live, want, statusSubresource):
		update := want.DeepCopy()
		for _, f := range systemFields {
			unstructured.RemoveNestedField(update.Object, "metadata", f)
			if v, ok, _ := unstructured.NestedFieldNoCopy(live.Object, "metadata", f); ok && f != "managedFields" {
				_ = unstructured.SetNestedField(update.Object, v, "metadata", f)
			}
		}
		updated, err := res.Update(ctx, update, metav1.UpdateOptions{FieldManager: FieldManager})
		if err != nil {
			return "", writeBackFailed(k, err)
		}
		live = updated
	}
	if statusSubresource && !equality.Semantic.DeepEqual(live.Object["status"], want.Object["status"]) {
		live = live.DeepCopy()
		if status, ok := want.Object["status"]; ok {
			live.Object["status"] = status
		} else {
			delete(live.Object, "status")
		}
		updated, err := res.UpdateStatus(ctx, live, metav1.UpdateOptions{FieldManager: FieldManager})
		if err != nil {
			return "", writeBackFailed(k, err)
		}
		live = updated
	}
	if held.GetDeletionTimestamp() != nil && live.GetDeletionTimestamp() == nil {
		uid := live.GetUID()
		if err := res.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil {
			return "", writeBackFailed(k, err)
		}
		if live, _ = res.Get(ctx, name, metav1.GetOptions{}); live == nil {
			return "", nil // deleted at once: it had no finalizers
		}
	}
	heldFields, _, _ := unstructured.NestedFieldNoCopy(held.Object, "metadata", "managedFields")
	liveFields, _, _ := unstructured.NestedFieldNoCopy(live.Object, "metadata", "managedFields")
	if equality.Semantic.DeepEqual(heldFields, liveFields) {
		return live.GetUID(), nil
	}
	if fields, ok := heldFields.([]any); !ok || len(fields) == 0 {
		// An empty entry clears them.
		heldFields = []any{map[string]any{}}
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"managedFields": heldFields}})
	if err != nil {
		return "", err
	}
	if _, err := res.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		return "", writeBackFailed(k, err)
	}
	return live.GetUID(), nil
}

// sameObject says whether the cluster's object already is annex's, but for
// what the cluster sets itself, and status when the type has the status
// subresource (written apart).
func sameObject(live, want *unstructured.Unstructured, statusSubresource bool) bool {
	return equality.Semantic.DeepEqual(normalObject(live, statusSubresource), normalObject(want, statusSubresource))
}

// normalObject is obj without what the cluster sets itself, its apiVersion,
// and its status when the type has the status subresource.
func normalObject(obj *unstructured.Unstructured, statusSubresource bool) map[string]any {
	obj = obj.DeepCopy()
	for _, f := range systemFields {
		unstructured.RemoveNestedField(obj.Object, "metadata", f)
	}
	delete(obj.Object, "apiVersion")
	if statusSubresource {
		delete(obj.Object, "status")
	}
	return obj.Object
}

// hasStatusSubresource says whether the CRD's storage version, which
// ReleaseVersion copies, has the status subresource.
func (a *adoption) hasStatusSubresource() bool {
	for _, v := range a.crd.Spec.Versions {
		if v.Name == ReleaseVersion || (v.Storage && !slices.ContainsFunc(a.crd.Spec.Versions, isReleaseVersion)) {
			return v.Subresources != nil && v.Subresources.Status != nil
		}
	}
	return false
}

// deleteFromCluster deletes an object from the cluster's etcd, through
// ReleaseVersion, finalizers or not: an object deleted while annex served
// the type (in annex, its finalizers were removed before it went), or a
// copy of before the adoption that spec.adoption.deleteClusterCopies
// deletes.
func (a *adoption) deleteFromCluster(ctx context.Context, obj *metav1.PartialObjectMetadata) error {
	res := a.Dynamic.Resource(a.releaseGVR()).Namespace(obj.Namespace)
	k := key(obj.Namespace, obj.Name)
	if len(obj.Finalizers) > 0 {
		_, err := res.Patch(ctx, obj.Name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`),
			metav1.PatchOptions{FieldManager: FieldManager})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return deleteFromClusterError(k, err)
		}
	}
	err := res.Delete(ctx, obj.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &obj.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return deleteFromClusterError(k, err)
	}
	return nil
}

// servedVersions are the versions that the members' HostedResources serve.
func (g *group) servedVersions() []string {
	var versions []string
	for _, a := range g.members {
		for _, v := range a.hr.Spec.Versions {
			if v.Served && !slices.Contains(versions, v.Name) {
				versions = append(versions, v.Name)
			}
		}
	}
	return versions
}

// switchBack gives each APIService of the group that points at annex back
// to the cluster's autoregister controller, local, in one update each:
// labelled automanaged "true" again, without annex's label and Service.
// The CRDs are served by then, so autoregister keeps them.
func (g *group) switchBack(ctx context.Context) error {
	// The cluster removes ReleaseVersion's APIService once it has seen the
	// CRDs served again; autoregister wants the others from then on, and
	// does not delete one labelled as its own.
	name := ReleaseVersion + "." + g.name
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, g.FreezeTimeout, true, func(ctx context.Context) (bool, error) {
		err := g.ClusterReader.Get(ctx, client.ObjectKey{Name: name}, &apiregistrationv1.APIService{})
		return apierrors.IsNotFound(err), nil
	})
	for _, version := range g.servedVersions() {
		name := version + "." + g.name
		for {
			current := &apiregistrationv1.APIService{}
			if err := g.ClusterReader.Get(ctx, client.ObjectKey{Name: name}, current); err != nil {
				if apierrors.IsNotFound(err) {
					break // autoregister creates it
				}
				return err
			}
			if current.Spec.Service == nil || current.Labels[v1alpha1.ManagedByLabel] != g.managedBy() {
				break
			}
			local := current.DeepCopy()
			delete(local.Labels, v1alpha1.ManagedByLabel)
			local.Labels[automanagedLabel] = "true"
			local.Spec = apiregistrationv1.APIServiceSpec{
				Group: g.name, Version: version,
				GroupPriorityMinimum: current.Spec.GroupPriorityMinimum, VersionPriority: current.Spec.VersionPriority,
			}
			err := g.Cluster.Update(ctx, local)
			if apierrors.IsConflict(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("giving APIService %s back to the cluster: %w", name, err)
			}
			break
		}
	}
	return nil
}

// pointAtAnnex points the group's APIServices of versions at annex again.
func (g *group) pointAtAnnex(ctx context.Context, versions []string) error {
	for _, version := range versions {
		if err := g.applyAPIService(ctx, version); err != nil {
			return err
		}
	}
	return nil
}

// freezeFor has the cluster, and annex, refuse every write to the group's
// types but those user makes through ReleaseVersion, and waits until
// annex does.
func (g *group) freezeFor(ctx context.Context, message, user string) (time.Time, error) {
	return g.freezeWith(ctx, message, []admissionregistrationv1.MatchCondition{annexWritingBack(user)})
}

// stallMark is the progress of a release (each member's phase and objects
// written back) and when it was first seen.
type stallMark struct {
	progress string
	since    time.Time
}

// releaseStalled says whether the group's release, which just failed with
// an error, has made no progress for ReleaseStallTimeout: a release that
// keeps failing (the cluster refusing a step, an API server unreachable)
// would keep writes refused for ever. Progress is noted in this process
// only: a restart gives a release a new period.
func (g *group) releaseStalled() bool {
	var b strings.Builder
	for _, a := range g.members {
		fmt.Fprintf(&b, "%s:%s:%d;", a.hr.Name, a.status.Phase, a.status.Copied)
	}
	g.stallsMu.Lock()
	defer g.stallsMu.Unlock()
	if g.stalls == nil {
		g.stalls = map[string]stallMark{}
	}
	mark, ok := g.stalls[g.name]
	if !ok || mark.progress != b.String() {
		g.stalls[g.name] = stallMark{progress: b.String(), since: time.Now()}
		return false
	}
	return time.Since(mark.since) >= g.ReleaseStallTimeout
}

// forgetStall forgets the group's release progress.
func (r *Reconciler) forgetStall(group string) {
	r.stallsMu.Lock()
	defer r.stallsMu.Unlock()
	delete(r.stalls, group)
}

// guardName names the admission policy, and its binding, that keep every
// writer but annex off ReleaseVersion while a release writes back with
// writes accepted.
func (g *group) guardName() string { return "annex-release-guard." + g.name }

// ReleaseGuardMessage is what the cluster answers a write through
// ReleaseVersion by anyone but annex.
func ReleaseGuardMessage(group string) string {
	return fmt.Sprintf("version %s of %s is annex's own, for writing its objects back into the cluster while it gives them back; write through the type's other versions",
		ReleaseVersion, group)
}

// guard has the cluster refuse every write through ReleaseVersion but
// user's, and waits until it does: while annex writes back with writes
// accepted, the type's other versions are annex's, and a write through
// ReleaseVersion would reach the cluster's etcd without annex knowing.
func (g *group) guard(ctx context.Context, user string) error {
	return g.refuse(ctx, refusal{
		name: g.guardName(), message: ReleaseGuardMessage(g.name), versions: []string{ReleaseVersion},
		conditions: []admissionregistrationv1.MatchCondition{annexWritingBack(user)}, probe: g.probeCRD,
	})
}

// annexWritingBack matches every write but user's through ReleaseVersion.
func annexWritingBack(user string) admissionregistrationv1.MatchCondition {
	return admissionregistrationv1.MatchCondition{Name: "not-annex-writing-back", Expression: fmt.Sprintf(
		"!(request.userInfo.username == %s && request.resource.version == %s)", strconv.Quote(user), strconv.Quote(ReleaseVersion))}
}
