package adoption

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	apiregistrationv1ac "k8s.io/kube-aggregator/pkg/client/applyconfiguration/apiregistration/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// group is the adoption of the CRDs of one API group: each has its
// HostedResource and its phase, but writes to all of them are refused
// together, and the group's APIServices switch once, when every one of
// them is copied.
type group struct {
	*Reconciler
	name    string
	members []*adoption
	// steps are the times of the adoption's steps in this process, for its log.
	steps []string
	last  time.Time
}

// Reconcile moves the adoptions of one API group on as far as they go.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	r.defaults()
	// Read uncached: a status this controller wrote a moment ago must be
	// seen, or a finished adoption would be finished again.
	hrs := &v1alpha1.HostedResourceList{}
	if err := r.AnnexReader.List(ctx, hrs); err != nil {
		return reconcile.Result{}, err
	}
	g := &group{Reconciler: r, name: req.Name}
	for i := range hrs.Items {
		hr := &hrs.Items[i]
		if hr.Spec.Adoption == nil || hr.Spec.Group != g.name {
			continue
		}
		// A HostedResource deleted while its release is pending stays a
		// member: its deletion waits for the release's end.
		if hr.DeletionTimestamp != nil && !ReleasePending(hr) {
			if err := r.dropCopies(ctx, hr); err != nil {
				return reconcile.Result{}, err
			}
			if err := r.forgetReleaseVersion(ctx, hr); err != nil {
				return reconcile.Result{}, err
			}
			continue
		}
		a := &adoption{Reconciler: r, hr: hr, status: hr.Status.Adoption.DeepCopy()}
		if a.status == nil {
			a.status = &v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionCopying, StartTime: ptr.To(metav1.Now())}
		}
		// A failed adoption and a released type are the cluster's.
		if a.status.Phase != v1alpha1.AdoptionFailed && a.status.Phase != v1alpha1.AdoptionReleased {
			g.members = append(g.members, a)
		}
	}
	if len(g.members) == 0 {
		// A HostedResource deleted while writes were refused takes the
		// freeze with it, and one deleted while annex deleted its cluster's
		// copies the version it deleted them through.
		if err := g.unfreeze(ctx); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, g.dropLeftReleaseVersions(ctx)
	}
	err := g.run(ctx)
	if err != nil && !errors.As(err, &more{}) && g.inPhase(v1alpha1.AdoptionRollingBack) {
		if g.releaseStalled() {
			r.forgetStall(g.name)
			ctrl.LoggerFrom(ctx).Info("A release made no progress; undoing it", "group", g.name, "for", g.ReleaseStallTimeout, "lastError", err.Error())
			return reconcile.Result{}, g.releaseFailed(ctx, fmt.Sprintf("it made no progress for %s; the last error: %v", g.ReleaseStallTimeout, err))
		}
	} else {
		r.forgetStall(g.name)
	}
	if apierrors.IsForbidden(err) {
		// The cluster's RBAC, or an admission policy or webhook: nothing annex
		// can change.
		err = &waiting{reason: "Forbidden", message: forbiddenMessage(err, g.crdNames())}
	}
	var w *waiting
	switch {
	case errors.As(err, &more{}):
		return reconcile.Result{RequeueAfter: time.Millisecond}, nil
	case errors.As(err, &w):
		for _, a := range g.members {
			if a.status.Phase == v1alpha1.AdoptionCopying || a.status.Phase == v1alpha1.AdoptionRollingBack {
				a.status.Reason, a.status.Message = w.reason, w.message
				if err := a.writeStatus(ctx); err != nil {
					return reconcile.Result{}, err
				}
			}
		}
		return reconcile.Result{RequeueAfter: waitInterval}, nil
	case err != nil && g.inPhase(v1alpha1.AdoptionRollingBack):
		// Writes are refused until the release goes on: try again soon, not
		// after a backoff that grows to minutes (and the stall's deadline
		// is kept to within releaseRetryInterval).
		ctrl.LoggerFrom(ctx).Error(err, "A step of a release failed; trying again", "group", g.name, "in", releaseRetryInterval)
		return reconcile.Result{RequeueAfter: releaseRetryInterval}, nil
	case err != nil:
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
}

// forbiddenMessage says why a step was forbidden: an admission policy's or
// webhook's refusal says its own reason; RBAC's names none, and the chart
// grants what an adoption needs for the CRDs its value names.
func forbiddenMessage(err error, crds []string) string {
	message := err.Error()
	if strings.Contains(message, "denied request") || strings.Contains(message, "admission webhook") {
		return message
	}
	return fmt.Sprintf("%s; with the Helm chart, name %s in adoption.customResourceDefinitions", message, strings.Join(crds, ", "))
}

func (g *group) crdNames() []string {
	names := make([]string, len(g.members))
	for i, a := range g.members {
		names[i] = a.hr.Spec.Adoption.CustomResourceDefinition
	}
	return names
}

// step notes that a step of the adoption ended, with how long it took.
func (g *group) step(what string) {
	now := time.Now()
	if !g.last.IsZero() {
		g.steps = append(g.steps, fmt.Sprintf("%s in %s", what, now.Sub(g.last).Round(time.Millisecond)))
	}
	g.last = now
}

// inPhase says whether any member is in phase.
func (g *group) inPhase(phase v1alpha1.AdoptionPhase) bool {
	return slices.ContainsFunc(g.members, func(a *adoption) bool { return a.status.Phase == phase })
}

// setPhase moves every member on to phase, at now, with message.
func (g *group) setPhase(ctx context.Context, phase v1alpha1.AdoptionPhase, now time.Time, message string) error {
	for _, a := range g.members {
		a.status.Phase, a.status.Reason, a.status.Message = phase, "", message
		switch phase {
		case v1alpha1.AdoptionFrozen:
			a.status.FrozenTime = ptr.To(metav1.NewTime(now))
		case v1alpha1.AdoptionSwitched:
			a.status.SwitchedTime = ptr.To(metav1.NewTime(now))
		}
		if err := a.writeStatus(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (g *group) run(ctx context.Context) error {
	if g.inPhase(v1alpha1.AdoptionRollingBack) {
		return g.release(ctx)
	}
	all, asking := g.releaseRequested()
	switch {
	case all && !slices.ContainsFunc(g.members, (*adoption).clusterCopiesPending):
		return g.release(ctx)
	case all:
		// The release follows the deletion of the cluster's copies, below.
	default:
		if err := g.noteRelease(ctx, asking); err != nil {
			return err
		}
	}
	g.step("start")
	if g.inPhase(v1alpha1.AdoptionFrozen) {
		// The objects copied so far are known only to the process that
		// copied them: undo the freeze and copy again.
		if err := g.unfreeze(ctx); err != nil {
			return err
		}
		for _, a := range g.members {
			if a.status.Phase == v1alpha1.AdoptionFrozen {
				a.status.Phase, a.status.FrozenTime = v1alpha1.AdoptionCopying, nil
				a.status.Reason, a.status.Message = "Restarted", "annex restarted while writes were refused; copying again"
				if err := a.writeStatus(ctx); err != nil {
					return err
				}
			}
		}
	}
	switched := g.inPhase(v1alpha1.AdoptionSwitched) || g.inPhase(v1alpha1.AdoptionAdopted)
	for _, a := range g.members {
		err := a.readCRD(ctx)
		var f *failed
		switch {
		case errors.As(err, &f) && switched:
			// Deleted or changed in the cluster once annex serves the
			// group: annex's objects are the type's now, and stay.
			ctrl.LoggerFrom(ctx).Info("An adopted CustomResourceDefinition changed in the cluster; annex keeps serving the type", "problem", f.message)
			a.crd = &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: a.hr.Spec.Adoption.CustomResourceDefinition}}
		case errors.As(err, &f):
			ctrl.LoggerFrom(ctx).Info("An adoption failed", "crd", a.hr.Spec.Adoption.CustomResourceDefinition, "reason", f.reason, "message", f.message)
			a.status.Phase, a.status.Reason, a.status.Message = v1alpha1.AdoptionFailed, f.reason, f.message
			if err := a.writeStatus(ctx); err != nil {
				return err
			}
			return &waiting{reason: "MemberFailed", message: fmt.Sprintf("the adoption of %s, of the same group, failed: %s",
				a.hr.Spec.Adoption.CustomResourceDefinition, f.message)}
		case err != nil:
			return err
		}
	}
	if !switched {
		// Writes go to the cluster until the last changes are copied: a
		// freeze left by a process that died before it wrote the Frozen
		// phase goes too.
		if err := g.unfreeze(ctx); err != nil {
			return err
		}
	}
	if switched {
		for _, a := range g.members {
			if a.status.Phase == v1alpha1.AdoptionCopying {
				if err := g.adoptLate(ctx, a); err != nil {
					return err
				}
			}
		}
		// Writes are still refused while a member is Switched; once all are
		// Adopted, this keeps the CRDs unserved: a CRD applied again (by
		// Helm, or an operator) is served again, and would be listed twice
		// in the cluster's OpenAPI.
		if err := g.finish(ctx); err != nil {
			return err
		}
		return g.deleteClusterCopies(ctx)
	}
	return g.adopt(ctx)
}

// adopt runs the adoption of the group from the copy to the end.
func (g *group) adopt(ctx context.Context) error {
	if err := g.ready(ctx); err != nil {
		return err
	}
	for _, a := range g.members {
		objects, err := a.Objects(a.gvr.GroupResource())
		if err != nil {
			return &waiting{reason: "StoreNotReady", message: fmt.Sprintf("the store of %s cannot be opened yet: %v", a.crd.Name, err)}
		}
		defer objects.Destroy()
		a.objects = objects
	}
	for _, a := range g.members {
		a.status.Reason, a.status.Message = "", "copying the objects"
		if err := a.copyAll(ctx); err != nil {
			return err
		}
		g.step(fmt.Sprintf("copied %d objects of %s", a.status.Copied, a.crd.Name))
	}
	for pass := 0; ; pass++ {
		changed := 0
		for _, a := range g.members {
			n, err := a.catchUp(ctx)
			if err != nil {
				return err
			}
			changed += n
		}
		if changed <= g.CatchUpObjects {
			break
		}
		if pass+1 >= g.CatchUpPasses {
			return &waiting{reason: "TooManyWrites", message: fmt.Sprintf(
				"%d objects changed during the last of %d passes over the group's types; trying again later", changed, g.CatchUpPasses)}
		}
	}
	g.step("caught up")

	// Writes are refused from here until the end.
	frozen, err := g.freeze(ctx)
	if err != nil {
		return err
	}
	if err := g.setPhase(ctx, v1alpha1.AdoptionFrozen, frozen, "writes are refused while the last changes are copied"); err != nil {
		return err
	}
	if err := g.settle(ctx); err != nil {
		return err
	}
	for _, a := range g.members {
		if _, err := a.catchUp(ctx); err != nil {
			return err
		}
	}
	g.step("copied the last changes")
	// The switch cannot be undone by deleting a HostedResource: one deleted
	// meanwhile stops the adoption here, and takes the freeze with it.
	if deleted, err := g.memberDeleted(ctx); err != nil || deleted != "" {
		if err == nil {
			ctrl.LoggerFrom(ctx).Info("A HostedResource of the group is being deleted; the adoption stops before the switch", "hostedResource", deleted)
			err = g.unfreeze(ctx)
		}
		return err
	}
	if err := g.switchAPIServices(ctx); err != nil {
		return err
	}
	g.step("switched the APIServices")
	if err := g.setPhase(ctx, v1alpha1.AdoptionSwitched, time.Now(),
		"the APIServices point at annex; writes are accepted again once the CRDs are no longer served"); err != nil {
		return err
	}
	return g.finish(ctx)
}

// dropCopies deletes what an adoption deleted before its switch had
// copied into annex: copies, not the type's objects, which the cluster still
// serves. They go from the store directly, finalizers or not: nothing would
// ever remove a copy's finalizers, and the HostedResource's deletion would
// wait for them for ever.
func (r *Reconciler) dropCopies(ctx context.Context, hr *v1alpha1.HostedResource) error {
	// Once switched, annex's objects are the type's, until it is released.
	if a := hr.Status.Adoption; a != nil && (a.SwitchedTime != nil || a.Phase == v1alpha1.AdoptionAdopted) && a.Phase != v1alpha1.AdoptionReleased {
		return nil
	}
	objects, err := r.Objects(schema.GroupResource{Group: hr.Spec.Group, Resource: hr.Spec.Names.Plural})
	if err != nil {
		// The type was never served, or is already gone: nothing was copied.
		return nil
	}
	defer objects.Destroy()
	return eachHeld(ctx, objects, func(namespace, name string) error { return remove(ctx, objects, namespace, name) })
}

// memberDeleted names a member whose HostedResource is gone or being
// deleted, read now from annex.
func (g *group) memberDeleted(ctx context.Context) (string, error) {
	for _, a := range g.members {
		hr := &v1alpha1.HostedResource{}
		err := g.Annex.Get(ctx, client.ObjectKeyFromObject(a.hr), hr)
		if apierrors.IsNotFound(err) || (err == nil && (hr.DeletionTimestamp != nil || hr.UID != a.hr.UID)) {
			return a.hr.Name, nil
		}
		if err != nil {
			return "", err
		}
	}
	return "", nil
}

// adoptLate adopts a CRD of a group whose APIServices already point at
// annex (a project's upgrade added a type to the group, say). The cluster
// cannot be reached for it, so nothing writes to it there: one copy is
// enough, and no freeze.
func (g *group) adoptLate(ctx context.Context, a *adoption) error {
	if !meta.IsStatusConditionTrue(a.hr.Status.Conditions, v1alpha1.HostedResourceEstablished) {
		return &waiting{reason: "NotEstablished", message: fmt.Sprintf("annex does not serve %s yet", a.crd.Name)}
	}
	objects, err := a.Objects(a.gvr.GroupResource())
	if err != nil {
		return &waiting{reason: "StoreNotReady", message: fmt.Sprintf("the store of %s cannot be opened yet: %v", a.crd.Name, err)}
	}
	defer objects.Destroy()
	a.objects = objects
	a.status.Reason, a.status.Message = "", "copying the objects; the cluster no longer serves the group"
	if err := a.copyAll(ctx); err != nil {
		return err
	}
	if err := a.stopServing(ctx); err != nil {
		return err
	}
	now := metav1.Now()
	a.status.Phase, a.status.SwitchedTime, a.status.AdoptedTime = v1alpha1.AdoptionAdopted, &now, &now
	a.status.Reason, a.status.Message = "", "annex serves the type; its objects as they were before the adoption stay in the cluster's etcd"
	ctrl.LoggerFrom(ctx).Info("Adopted a CustomResourceDefinition of a group annex already serves", "crd", a.crd.Name, "objects", a.status.Copied)
	return a.writeStatus(ctx)
}

// ready says whether the adoption may start: annex serves every type, and
// every CRD of the group in the cluster is adopted (the group's APIServices
// serve them all).
func (g *group) ready(ctx context.Context) error {
	for _, a := range g.members {
		if !meta.IsStatusConditionTrue(a.hr.Status.Conditions, v1alpha1.HostedResourceEstablished) {
			return &waiting{reason: "NotEstablished", message: fmt.Sprintf("annex does not serve %s yet", a.crd.Name)}
		}
	}
	crds := &metav1.PartialObjectMetadataList{}
	crds.SetGroupVersionKind(crdGVK)
	if err := g.ClusterReader.List(ctx, crds); err != nil {
		return err
	}
	adopting := g.crdNames()
	var others []string
	for _, crd := range crds.Items {
		if _, group, _ := strings.Cut(crd.Name, "."); group == g.name && !slices.Contains(adopting, crd.Name) &&
			crd.Annotations[v1alpha1.AdoptedByAnnotation] != g.managedBy() {
			others = append(others, crd.Name)
		}
	}
	if len(others) > 0 {
		slices.Sort(others)
		return &waiting{reason: "GroupHasOtherCRDs", message: fmt.Sprintf(
			"group %s has other CustomResourceDefinitions in the cluster (%s): the group's APIServices serve them all, so annex adopts them together; adopt them too (kubectl annex adopt)",
			g.name, strings.Join(others, ", "))}
	}
	return nil
}

// freezeName names the admission policy, and its binding, that refuse
// writes to the group's adopted types.
func (g *group) freezeName() string { return "annex-adoption-freeze." + g.name }

// FreezeMessage is what the cluster answers a write to a type of group
// while annex adopts it.
func FreezeMessage(group string) string {
	return fmt.Sprintf("annex is adopting the resources of %s: writes to them are refused for a few seconds while their last changes are copied; retry", group)
}

// freeze has the cluster refuse every write to the group's adopted types,
// waits until one of its API servers does, and returns when it first did.
func (g *group) freeze(ctx context.Context) (time.Time, error) {
	return g.freezeWith(ctx, FreezeMessage(g.name), nil)
}

// freezeWith is freeze with message, for the writes that matchConditions
// match (all, without any). A freeze left with another message or other
// conditions is replaced.
func (g *group) freezeWith(ctx context.Context, message string, matchConditions []admissionregistrationv1.MatchCondition) (time.Time, error) {
	err := g.refuse(ctx, refusal{name: g.freezeName(), message: message, conditions: matchConditions, probe: g.probeWrite})
	if err != nil {
		return time.Time{}, err
	}
	g.step("the cluster refused writes")
	return time.Now(), nil
}

// refusal is a ValidatingAdmissionPolicy of the cluster's, with its
// binding of the same name, that refuses writes to the group's types.
type refusal struct {
	name, message string
	// versions are the API versions of the group's types whose writes it
	// refuses; none means all.
	versions []string
	// conditions narrow the writes it refuses (all, without any).
	conditions []admissionregistrationv1.MatchCondition
	// probe tries a write that the refusal refuses, with its message,
	// once the cluster's API server enforces it.
	probe func(ctx context.Context, refusal string) error
}

// probeAnnotation marks the dry-run update of a CRD that proves a
// refusal is enforced: each refusal matches those marked with its name
// only, so that two in force at once do not answer each other's probe.
const probeAnnotation = "annex.dev/probe"

// refuse creates r in the cluster, and waits until the cluster's API
// server enforces it. One left with another message or other conditions
// is replaced.
func (g *group) refuse(ctx context.Context, r refusal) error {
	name := r.name
	var resources, crds []string
	for _, a := range g.members {
		resources = append(resources, a.crd.Spec.Names.Plural, a.crd.Spec.Names.Plural+"/*")
		crds = append(crds, a.crd.Name)
	}
	versions := r.versions
	if len(versions) == 0 {
		versions = []string{"*"}
	}
	// The policy refuses its own probe too, a dry-run update of one of
	// the group's CRDs marked with its name (probeCRD): the probe of a
	// type without objects. annex's own writes to the CRDs, and any other,
	// pass.
	matchConditions := append([]admissionregistrationv1.MatchCondition{{
		Name: "crds-in-probes-only",
		Expression: fmt.Sprintf(`request.resource.group != "apiextensions.k8s.io" || (request.dryRun && has(object.metadata.annotations) && `+
			`%[1]s in object.metadata.annotations && object.metadata.annotations[%[1]s] == %[2]s)`, strconv.Quote(probeAnnotation), strconv.Quote(name)),
	}}, r.conditions...)
	labels := map[string]string{v1alpha1.ManagedByLabel: g.managedBy()}
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{
							admissionregistrationv1.Create, admissionregistrationv1.Update, admissionregistrationv1.Delete},
						Rule: admissionregistrationv1.Rule{
							APIGroups:   []string{g.name},
							APIVersions: versions,
							Resources:   resources,
						},
					},
				}, {
					ResourceNames: crds,
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
						Rule: admissionregistrationv1.Rule{
							APIGroups:   []string{apiextensionsv1.GroupName},
							APIVersions: []string{"v1"},
							Resources:   []string{"customresourcedefinitions"},
						},
					},
				}},
			},
			MatchConditions: matchConditions,
			Validations: []admissionregistrationv1.Validation{{
				Expression: "false",
				Message:    r.message,
				Reason:     ptr.To(metav1.StatusReasonForbidden),
			}},
		},
	}
	current := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	err := g.ClusterReader.Get(ctx, client.ObjectKey{Name: name}, current)
	switch {
	case err == nil && (len(current.Spec.Validations) != 1 || current.Spec.Validations[0].Message != r.message ||
		!equality.Semantic.DeepEqual(current.Spec.MatchConditions, policy.Spec.MatchConditions) ||
		!equality.Semantic.DeepEqual(current.Spec.MatchConstraints, policy.Spec.MatchConstraints)):
		if err := g.lift(ctx, name); err != nil {
			return err
		}
	case err != nil && !apierrors.IsNotFound(err):
		return err
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	for _, obj := range []client.Object{policy, binding} {
		if err := g.Cluster.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("refusing writes to the resources of %s: creating %T %s: %w", g.name, obj, name, err)
		}
	}
	g.step("created " + name)
	// A write refused with the policy's message proves that the cluster's
	// API server enforces it.
	var last error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, g.FreezeTimeout, true, func(ctx context.Context) (bool, error) {
		last = r.probe(ctx, name)
		return last != nil && strings.Contains(last.Error(), r.message), nil
	})
	if err != nil {
		if uerr := g.lift(ctx, name); uerr != nil {
			return uerr
		}
		return &waiting{reason: "FreezeNotEnforced", message: fmt.Sprintf(
			"the cluster did not refuse writes to the resources of %s within %s (the last write tried got: %v); trying again later", g.name, g.FreezeTimeout, last)}
	}
	return nil
}

// settle waits for the cluster's other API servers to refuse writes too,
// and for writes admitted just before the freeze to finish.
func (g *group) settle(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(g.FreezeSettle):
	}
	g.step("settled")
	return nil
}

// probeWrite tries a write that changes nothing, in dry-run: an update of
// an object of the group as it is, or, without objects, an update of the
// first type's CRD as it is, marked for refusal (probeCRD). A type's
// validation comes before the cluster's admission policies, and may refuse
// any object made up here (a required spec, say); an object as it is, or
// the CRD, passes it.
func (g *group) probeWrite(ctx context.Context, refusal string) error {
	dryRun := []string{metav1.DryRunAll}
	for _, a := range g.members {
		list, err := a.Dynamic.Resource(a.gvr).List(ctx, metav1.ListOptions{Limit: 1})
		if err != nil {
			return err
		}
		if len(list.Items) > 0 {
			obj := &list.Items[0]
			_, err := a.Dynamic.Resource(a.gvr).Namespace(obj.GetNamespace()).Update(ctx, obj, metav1.UpdateOptions{DryRun: dryRun})
			return err
		}
	}
	return g.probeCRD(ctx, refusal)
}

// probeCRD tries a dry-run update of the first type's CRD, as it is but
// for probeAnnotation naming refusal, which that refusal refuses.
func (g *group) probeCRD(ctx context.Context, refusal string) error {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := g.ClusterReader.Get(ctx, client.ObjectKey{Name: g.members[0].crd.Name}, crd); err != nil {
		return err
	}
	metav1.SetMetaDataAnnotation(&crd.ObjectMeta, probeAnnotation, refusal)
	return g.Cluster.Update(ctx, crd, client.DryRunAll)
}

// unfreeze lets writes to the group's types through again.
func (g *group) unfreeze(ctx context.Context) error {
	return g.lift(ctx, g.freezeName())
}

// lift deletes the refusal name, policy and binding.
func (g *group) lift(ctx context.Context, name string) error {
	for _, obj := range []client.Object{
		&admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: name}},
		&admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}},
	} {
		if err := g.Cluster.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("accepting writes to the resources of %s again: deleting %T %s: %w", g.name, obj, name, err)
		}
	}
	return nil
}

// awaitThaw waits, up to FreezeTimeout, until a write is no longer refused
// with the freeze's message: an API server drops a deleted policy a moment
// after the deletion, and until it does the freeze goes on. The freeze's
// measure, and the phase after it, then say when writes were accepted
// again, not when the policy was deleted. Past FreezeTimeout it gives up
// waiting, and says so: the policy is gone, and the API servers will drop it.
func (g *group) awaitThaw(ctx context.Context, message string) {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, g.FreezeTimeout, true, func(ctx context.Context) (bool, error) {
		last = g.probeWrite(ctx, g.freezeName())
		return last == nil || !strings.Contains(last.Error(), message), nil
	})
	if err != nil {
		ctrl.LoggerFrom(ctx).Info("The cluster still refused writes with the freeze's message after the freeze was deleted; going on",
			"group", g.name, "waited", g.FreezeTimeout, "last", fmt.Sprint(last))
		return
	}
	g.step("the cluster accepted writes again")
}

// switchAPIServices points the APIService of each version the group's
// CRDs serve at annex, taking each over from the cluster's autoregister
// controller in one server-side apply.
func (g *group) switchAPIServices(ctx context.Context) error {
	var versions []string
	for _, a := range g.members {
		for _, v := range a.crd.Spec.Versions {
			if v.Served && !slices.Contains(versions, v.Name) {
				versions = append(versions, v.Name)
			}
		}
	}
	for _, version := range versions {
		if err := g.applyAPIService(ctx, version); err != nil {
			return err
		}
	}
	return nil
}

// applyAPIService points the group's APIService of version at annex.
func (g *group) applyAPIService(ctx context.Context, version string) error {
	name := version + "." + g.name
	current := &apiregistrationv1.APIService{}
	groupPriority, versionPriority := int32(1000), int32(15)
	if err := g.ClusterReader.Get(ctx, client.ObjectKey{Name: name}, current); err == nil {
		groupPriority, versionPriority = current.Spec.GroupPriorityMinimum, current.Spec.VersionPriority
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	apply := apiregistrationv1ac.APIService(name).
		WithLabels(map[string]string{automanagedLabel: "false", v1alpha1.ManagedByLabel: g.managedBy()}).
		WithSpec(apiregistrationv1ac.APIServiceSpec().
			WithService(apiregistrationv1ac.ServiceReference().WithNamespace(g.ServiceNamespace).WithName(g.ServiceName).WithPort(g.Port)).
			WithGroup(g.name).
			WithVersion(version).
			WithCABundle(g.CABundle...).
			WithGroupPriorityMinimum(groupPriority).
			WithVersionPriority(versionPriority))
	if err := g.Cluster.Apply(ctx, apply, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("switching APIService %s to annex: %w", name, err)
	}
	return nil
}

// finish stops the CRDs from being served and lets writes through again.
func (g *group) finish(ctx context.Context) error {
	for _, a := range g.members {
		if err := a.stopServing(ctx); err != nil {
			return err
		}
	}
	if !g.inPhase(v1alpha1.AdoptionSwitched) {
		return nil
	}
	g.step("stopped serving the CRDs")
	if err := g.unfreeze(ctx); err != nil {
		return err
	}
	g.step("deleted the freeze")
	g.awaitThaw(ctx, FreezeMessage(g.name))
	now := metav1.Now()
	for _, a := range g.members {
		a.status.Phase, a.status.AdoptedTime = v1alpha1.AdoptionAdopted, &now
		if a.status.FrozenTime != nil {
			a.status.Freeze = &metav1.Duration{Duration: now.Sub(a.status.FrozenTime.Time).Round(time.Millisecond)}
		}
		a.status.Reason, a.status.Message = "", a.adoptedMessage()
		if err := a.writeStatus(ctx); err != nil {
			return err
		}
		ctrl.LoggerFrom(ctx).Info("Adopted a CustomResourceDefinition", "crd", a.crd.Name, "objects", a.status.Copied,
			"freeze", ptr.Deref(a.status.Freeze, metav1.Duration{}).Duration.String(), "steps", strings.Join(g.steps, ", "))
	}
	return nil
}
