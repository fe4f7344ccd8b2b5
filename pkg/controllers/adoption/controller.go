// Package adoption takes over a CustomResourceDefinition that the cluster
// serves, with its objects, for a HostedResource whose spec.adoption names
// it. It copies the objects into the type's store as the cluster holds them
// (uid, timestamps, generation, finalizers, managedFields and status
// included), copies what changed meanwhile until little does, then has the
// cluster refuse writes to the type (a ValidatingAdmissionPolicy), copies
// the last changes, points the type's APIServices at annex, stops the CRD's
// versions from being served, and lets writes through again.
//
// Nothing is deleted from the cluster: the objects stay in its etcd, so the
// adoption can be undone. annex killed at any point goes on from where it
// was on restart, or, while writes are refused, undoes the freeze and
// copies again.
package adoption

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/util/retry"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	apiregistrationv1ac "k8s.io/kube-aggregator/pkg/client/applyconfiguration/apiregistration/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	annexac "annex.dev/annex/pkg/generated/applyconfiguration/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/routing"
)

// FieldManager names the adoption controller in managedFields, of the
// HostedResource's status.adoption and of the APIServices it switches.
const FieldManager = "annex-adoption-controller"

// automanagedLabel is the kube-aggregator's: while it is "true", the
// cluster's autoregister controller keeps the APIService local.
const automanagedLabel = "kube-aggregator.kubernetes.io/automanaged"

// Defaults of the Reconciler's settings.
const (
	// DefaultCatchUpObjects: when one pass finds at most this many objects
	// changed since the previous one, the next pass runs with writes
	// refused.
	DefaultCatchUpObjects = 100
	// DefaultCatchUpPasses bounds the passes before the freeze.
	DefaultCatchUpPasses = 10
	// DefaultFreezeSettle is how long annex waits, once one of the
	// cluster's API servers refuses writes, for the others to refuse them
	// too (and for writes admitted before the freeze to finish).
	DefaultFreezeSettle = 2 * time.Second
	// DefaultFreezeTimeout bounds the wait for the freeze to take effect.
	DefaultFreezeTimeout = 30 * time.Second
	// waitInterval is how often a waiting adoption looks again.
	waitInterval = 10 * time.Second
	// pageSize is the size of the pages of the first copy.
	pageSize = 500
)

// Reconciler adopts the CRDs that HostedResources name.
type Reconciler struct {
	// Annex reads HostedResources and writes their status.
	Annex client.Client
	// Cluster writes the cluster's APIServices, CRDs and admission
	// policies; ClusterReader reads them uncached.
	Cluster       client.Client
	ClusterReader client.Reader
	// Dynamic and Metadata read the adopted type's objects in the cluster.
	Dynamic  dynamic.Interface
	Metadata metadata.Interface
	// Objects opens the store of a hosted type.
	Objects func(schema.GroupResource) (*routing.RawObjects, error)
	// Service is annex's Service, Port its port, CABundle verifies annex;
	// ManagedBy is the value of v1alpha1.ManagedByLabel of this install.
	ServiceNamespace, ServiceName string
	Port                          int32
	CABundle                      []byte
	ManagedBy                     string

	// Settings; zero means the default above, but for FreezeSettle, which
	// may be zero (DefaultFreezeSettle is the flag's default).
	CatchUpObjects int
	CatchUpPasses  int
	FreezeSettle   time.Duration
	FreezeTimeout  time.Duration
}

var crdGVK = apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition")

// SetupWithManager registers the reconciler. clusterCluster is the cluster
// annex is registered with; it must have been added to mgr.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, clusterCluster cluster.Cluster) error {
	crds := &metav1.PartialObjectMetadata{}
	crds.SetGroupVersionKind(crdGVK)
	// A HostedResource is named as its CRD is, so a change of the cluster's
	// CRD (re-applied by Helm, say) wakes the HostedResource of that name.
	sameName := handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, crd *metav1.PartialObjectMetadata) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: crd.Name}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("adoption").
		For(&v1alpha1.HostedResource{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			hr, ok := o.(*v1alpha1.HostedResource)
			return ok && hr.Spec.Adoption != nil
		}))).
		WatchesRawSource(source.Kind(clusterCluster.GetCache(), crds, sameName)).
		Complete(r)
}

func (r *Reconciler) defaults() {
	if r.CatchUpObjects == 0 {
		r.CatchUpObjects = DefaultCatchUpObjects
	}
	if r.CatchUpPasses == 0 {
		r.CatchUpPasses = DefaultCatchUpPasses
	}
	if r.FreezeTimeout == 0 {
		r.FreezeTimeout = DefaultFreezeTimeout
	}
}

// waiting is an adoption that cannot go on yet: it stays in its phase
// with reason and message, and is looked at again later.
type waiting struct{ reason, message string }

func (w *waiting) Error() string { return w.reason + ": " + w.message }

// failed ends an adoption: the cluster keeps serving the type.
type failed struct{ reason, message string }

func (f *failed) Error() string { return f.reason + ": " + f.message }

// Reconcile moves one adoption on as far as it can go.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	r.defaults()
	hr := &v1alpha1.HostedResource{}
	if err := r.Annex.Get(ctx, req.NamespacedName, hr); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if hr.Spec.Adoption == nil || hr.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	a := &adoption{Reconciler: r, hr: hr, status: hr.Status.Adoption.DeepCopy()}
	if a.status == nil {
		a.status = &v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionCopying, StartTime: ptr.To(metav1.Now())}
	}
	err := a.run(ctx)
	if apierrors.IsForbidden(err) && !strings.Contains(err.Error(), "annex is adopting") {
		// The cluster's RBAC or the chart's policy: nothing annex can change.
		err = &waiting{reason: "Forbidden", message: fmt.Sprintf("%v; with the Helm chart, name %s in adoption.customResourceDefinitions",
			err, hr.Spec.Adoption.CustomResourceDefinition)}
	}
	var w *waiting
	var f *failed
	switch {
	case errors.As(err, &w):
		a.status.Reason, a.status.Message = w.reason, w.message
		return reconcile.Result{RequeueAfter: waitInterval}, a.writeStatus(ctx)
	case errors.As(err, &f):
		ctrl.LoggerFrom(ctx).Info("The adoption failed", "reason", f.reason, "message", f.message)
		a.status.Phase, a.status.Reason, a.status.Message = v1alpha1.AdoptionFailed, f.reason, f.message
		return reconcile.Result{}, a.writeStatus(ctx)
	case err != nil:
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
}

// adoption is one HostedResource's adoption in progress.
type adoption struct {
	*Reconciler
	hr     *v1alpha1.HostedResource
	status *v1alpha1.AdoptionStatus
	crd    *apiextensionsv1.CustomResourceDefinition
	gvr    schema.GroupVersionResource
	// steps are the times of the adoption's steps in this process, for its log.
	steps []string
	last  time.Time
	// copied maps namespace/name to the resourceVersion, in the cluster, of
	// each object as annex last copied it.
	copied map[string]string
}

// step notes that a step of the adoption ended, with how long it took.
func (a *adoption) step(what string) {
	now := time.Now()
	if !a.last.IsZero() {
		a.steps = append(a.steps, fmt.Sprintf("%s in %s", what, now.Sub(a.last).Round(time.Millisecond)))
	}
	a.last = now
}

func (a *adoption) run(ctx context.Context) error {
	a.step("start")
	switch a.status.Phase {
	case v1alpha1.AdoptionFailed:
		return nil
	case v1alpha1.AdoptionFrozen:
		// The objects copied so far are known only to the process that
		// copied them: undo the freeze and copy again.
		if err := a.unfreeze(ctx); err != nil {
			return err
		}
		a.status.Phase, a.status.FrozenTime = v1alpha1.AdoptionCopying, nil
		a.status.Reason, a.status.Message = "Restarted", "annex restarted while writes were refused; copying again"
		if err := a.writeStatus(ctx); err != nil {
			return err
		}
	}
	if err := a.readCRD(ctx); err != nil {
		var f *failed
		if errors.As(err, &f) && (a.status.Phase == v1alpha1.AdoptionSwitched || a.status.Phase == v1alpha1.AdoptionAdopted) {
			// Deleted or changed in the cluster once annex serves the type:
			// annex's objects are the type's now, and stay.
			ctrl.LoggerFrom(ctx).Info("The adopted CustomResourceDefinition changed in the cluster; annex keeps serving the type", "problem", f.message)
			if a.status.Phase == v1alpha1.AdoptionSwitched {
				a.crd = &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: a.hr.Spec.Adoption.CustomResourceDefinition}}
				return a.finish(ctx)
			}
			return nil
		}
		return err
	}
	switch a.status.Phase {
	case "", v1alpha1.AdoptionCopying:
		return a.adopt(ctx)
	case v1alpha1.AdoptionSwitched:
		return a.finish(ctx)
	case v1alpha1.AdoptionAdopted:
		// Keep it so: a CRD applied again (by Helm, or an operator) is
		// served again, and would be listed twice in the cluster's OpenAPI.
		return a.stopServing(ctx)
	}
	return nil
}

// readCRD reads the cluster's CRD and checks that it is the
// HostedResource's type.
func (a *adoption) readCRD(ctx context.Context) error {
	name := a.hr.Spec.Adoption.CustomResourceDefinition
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := a.ClusterReader.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
		if apierrors.IsNotFound(err) {
			return &failed{reason: "CRDNotFound", message: fmt.Sprintf("the cluster has no CustomResourceDefinition %s", name)}
		}
		return err
	}
	spec := a.hr.Spec
	var problems []string
	if crd.Spec.Group != spec.Group || crd.Spec.Names.Plural != spec.Names.Plural || crd.Spec.Names.Kind != spec.Names.Kind {
		problems = append(problems, fmt.Sprintf("its group, plural and kind are %s, %s, %s, not %s, %s, %s",
			crd.Spec.Group, crd.Spec.Names.Plural, crd.Spec.Names.Kind, spec.Group, spec.Names.Plural, spec.Names.Kind))
	}
	if crd.Spec.Scope != spec.Scope {
		problems = append(problems, fmt.Sprintf("its scope is %s, not %s", crd.Spec.Scope, spec.Scope))
	}
	if sv, hv := storageVersion(crd.Spec.Versions), storageVersion(spec.Versions); sv != hv {
		problems = append(problems, fmt.Sprintf("its storage version is %s, not %s", sv, hv))
	}
	for _, v := range crd.Spec.Versions {
		if !slices.ContainsFunc(spec.Versions, func(hv apiextensionsv1.CustomResourceDefinitionVersion) bool { return hv.Name == v.Name }) {
			problems = append(problems, fmt.Sprintf("its version %s is not one of the HostedResource's", v.Name))
		}
	}
	if len(problems) > 0 {
		return &failed{reason: "NotTheSameType", message: fmt.Sprintf("CustomResourceDefinition %s is not the HostedResource's type: %s",
			name, strings.Join(problems, "; "))}
	}
	a.crd = crd
	a.gvr = schema.GroupVersionResource{Group: spec.Group, Version: storageVersion(spec.Versions), Resource: spec.Names.Plural}
	return nil
}

func storageVersion(versions []apiextensionsv1.CustomResourceDefinitionVersion) string {
	for _, v := range versions {
		if v.Storage {
			return v.Name
		}
	}
	return ""
}

// adopt runs the adoption from the copy to the end.
func (a *adoption) adopt(ctx context.Context) error {
	if err := a.ready(ctx); err != nil {
		return err
	}
	objects, err := a.Objects(a.gvr.GroupResource())
	if err != nil {
		return &waiting{reason: "StoreNotReady", message: fmt.Sprintf("the type's store cannot be opened yet: %v", err)}
	}
	defer objects.Destroy()

	a.status.Reason, a.status.Message = "", "copying the objects"
	if err := a.copyAll(ctx, objects); err != nil {
		return err
	}
	a.step(fmt.Sprintf("copied %d objects", a.status.Copied))
	for pass := 0; ; pass++ {
		changed, err := a.catchUp(ctx, objects)
		if err != nil {
			return err
		}
		if changed <= a.CatchUpObjects {
			break
		}
		if pass+1 >= a.CatchUpPasses {
			return &waiting{reason: "TooManyWrites", message: fmt.Sprintf(
				"%d objects changed during the last of %d passes over the type; trying again later", changed, a.CatchUpPasses)}
		}
	}

	// Writes are refused from here until the end.
	a.step("caught up")
	frozen, err := a.freeze(ctx)
	if err != nil {
		return err
	}
	a.status.Phase, a.status.FrozenTime = v1alpha1.AdoptionFrozen, ptr.To(metav1.NewTime(frozen))
	a.status.Reason, a.status.Message = "", "writes are refused while the last changes are copied"
	if err := a.writeStatus(ctx); err != nil {
		return err
	}
	if _, err := a.catchUp(ctx, objects); err != nil {
		return err
	}
	a.step("copied the last changes")
	if err := a.switchAPIServices(ctx); err != nil {
		return err
	}
	a.step("switched the APIServices")
	a.status.Phase, a.status.SwitchedTime = v1alpha1.AdoptionSwitched, ptr.To(metav1.Now())
	a.status.Message = "the APIServices point at annex; writes are accepted again once the CRD is no longer served"
	if err := a.writeStatus(ctx); err != nil {
		return err
	}
	return a.finish(ctx)
}

// ready says whether the adoption may start: annex serves the type, and
// the type is the only one of its group in the cluster (its APIServices
// serve the whole group).
func (a *adoption) ready(ctx context.Context) error {
	if !meta.IsStatusConditionTrue(a.hr.Status.Conditions, v1alpha1.HostedResourceEstablished) {
		return &waiting{reason: "NotEstablished", message: "annex does not serve the type yet"}
	}
	crds := &metav1.PartialObjectMetadataList{}
	crds.SetGroupVersionKind(crdGVK)
	if err := a.ClusterReader.List(ctx, crds); err != nil {
		return err
	}
	var others []string
	for _, crd := range crds.Items {
		if _, group, _ := strings.Cut(crd.Name, "."); group == a.hr.Spec.Group && crd.Name != a.crd.Name &&
			crd.Annotations[v1alpha1.AdoptedByAnnotation] != a.managedBy() {
			others = append(others, crd.Name)
		}
	}
	if len(others) > 0 {
		slices.Sort(others)
		return &waiting{reason: "GroupHasOtherCRDs", message: fmt.Sprintf(
			"group %s has other CustomResourceDefinitions in the cluster (%s); annex adopts a group with one CRD only, since its APIServices serve the whole group",
			a.hr.Spec.Group, strings.Join(others, ", "))}
	}
	return nil
}

func (a *adoption) managedBy() string {
	if a.ManagedBy == "" {
		return v1alpha1.DefaultManagedByValue
	}
	return a.ManagedBy
}

func key(namespace, name string) string { return namespace + "/" + name }

// copyAll copies every object of the type, as one consistent list of the
// cluster's, and deletes from annex's store what that list does not hold.
func (a *adoption) copyAll(ctx context.Context, objects *routing.RawObjects) error {
	a.copied = map[string]string{}
	a.status.Copied, a.status.Total = 0, 0
	opts := metav1.ListOptions{Limit: pageSize}
	for {
		page, err := a.Dynamic.Resource(a.gvr).List(ctx, opts)
		if err != nil {
			return fmt.Errorf("listing %s in the cluster: %w", a.gvr.GroupResource(), err)
		}
		if opts.Continue == "" {
			a.status.Total = int64(len(page.Items))
			if rest := page.GetRemainingItemCount(); rest != nil {
				a.status.Total += *rest
			}
		}
		if err := putAll(ctx, objects, page.Items); err != nil {
			return err
		}
		for i := range page.Items {
			a.copied[key(page.Items[i].GetNamespace(), page.Items[i].GetName())] = page.Items[i].GetResourceVersion()
		}
		a.status.Copied += int64(len(page.Items))
		a.status.Total = max(a.status.Total, a.status.Copied)
		if err := a.writeStatus(ctx); err != nil {
			return err
		}
		if opts.Continue = page.GetContinue(); opts.Continue == "" {
			break
		}
	}
	// What annex holds and the cluster does not: left by a copy before a
	// restart, of objects deleted since.
	held := &unstructured.UnstructuredList{}
	if err := objects.GetList(ctx, objects.Prefix(), storage.ListOptions{Recursive: true, Predicate: storage.Everything}, held); err != nil {
		return fmt.Errorf("listing the objects annex holds: %w", err)
	}
	for i := range held.Items {
		if _, ok := a.copied[key(held.Items[i].GetNamespace(), held.Items[i].GetName())]; !ok {
			if err := remove(ctx, objects, held.Items[i].GetNamespace(), held.Items[i].GetName()); err != nil {
				return err
			}
		}
	}
	return nil
}

// catchUp copies the objects that changed in the cluster since they were
// copied, and deletes those the cluster deleted. It returns how many.
func (a *adoption) catchUp(ctx context.Context, objects *routing.RawObjects) (int, error) {
	list, err := a.Metadata.Resource(a.gvr).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("listing %s in the cluster: %w", a.gvr.GroupResource(), err)
	}
	present := make(map[string]bool, len(list.Items))
	changed := 0
	for _, item := range list.Items {
		k := key(item.Namespace, item.Name)
		present[k] = true
		if a.copied[k] == item.ResourceVersion {
			continue
		}
		changed++
		obj, err := a.Dynamic.Resource(a.gvr).Namespace(item.Namespace).Get(ctx, item.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			// Deleted since the list: the next pass sees it gone.
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("reading %s in the cluster: %w", k, err)
		}
		if err := put(ctx, objects, obj); err != nil {
			return 0, err
		}
		a.copied[k] = obj.GetResourceVersion()
	}
	for k := range a.copied {
		if present[k] {
			continue
		}
		changed++
		namespace, name, _ := strings.Cut(k, "/")
		if err := remove(ctx, objects, namespace, name); err != nil {
			return 0, err
		}
		delete(a.copied, k)
	}
	return changed, nil
}

// copyWorkers is how many objects of a page are written at once: each
// write waits for the store's commit to disk.
const copyWorkers = 8

// putAll writes objs into annex's store, copyWorkers at a time.
func putAll(ctx context.Context, objects *routing.RawObjects, objs []unstructured.Unstructured) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(copyWorkers)
	for i := range objs {
		g.Go(func() error { return put(ctx, objects, &objs[i]) })
	}
	return g.Wait()
}

// put writes obj, as the cluster holds it, into annex's store.
func put(ctx context.Context, objects *routing.RawObjects, obj *unstructured.Unstructured) error {
	obj = obj.DeepCopy()
	obj.SetResourceVersion("")
	k := objects.Key(obj.GetNamespace(), obj.GetName())
	err := objects.GuaranteedUpdate(ctx, k, &unstructured.Unstructured{}, true, nil,
		func(runtime.Object, storage.ResponseMeta) (runtime.Object, *uint64, error) {
			return obj.DeepCopy(), nil, nil
		}, nil)
	if err != nil {
		return fmt.Errorf("writing %s into annex: %w", k, err)
	}
	return nil
}

// remove deletes an object from annex's store.
func remove(ctx context.Context, objects *routing.RawObjects, namespace, name string) error {
	k := objects.Key(namespace, name)
	err := objects.Delete(ctx, k, &unstructured.Unstructured{}, nil, storage.ValidateAllObjectFunc, nil, storage.DeleteOptions{})
	if err != nil && !storage.IsNotFound(err) {
		return fmt.Errorf("deleting %s from annex: %w", k, err)
	}
	return nil
}

// freezeName names the admission policy, and its binding, that refuse
// writes to the adopted type.
func (a *adoption) freezeName() string { return "annex-adoption-freeze." + a.crd.Name }

// FreezeMessage is what the cluster answers a write to a type while annex
// adopts it.
func FreezeMessage(resource string) string {
	return fmt.Sprintf("annex is adopting %s: writes to it are refused for a few seconds while its last changes are copied; retry", resource)
}

// freeze has the cluster refuse every write to the type, waits until it
// does, and returns when it first did.
func (a *adoption) freeze(ctx context.Context) (time.Time, error) {
	name := a.freezeName()
	message := FreezeMessage(a.crd.Name)
	labels := map[string]string{v1alpha1.ManagedByLabel: a.managedBy()}
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
							APIGroups:   []string{a.crd.Spec.Group},
							APIVersions: []string{"*"},
							Resources:   []string{a.crd.Spec.Names.Plural, a.crd.Spec.Names.Plural + "/*"},
						},
					},
				}},
			},
			Validations: []admissionregistrationv1.Validation{{
				Expression: "false",
				Message:    message,
				Reason:     ptr.To(metav1.StatusReasonForbidden),
			}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	for _, obj := range []client.Object{policy, binding} {
		if err := a.Cluster.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return time.Time{}, fmt.Errorf("refusing writes to %s: creating %T %s: %w", a.crd.Name, obj, name, err)
		}
	}
	a.step("created the freeze")
	// A write refused with the policy's message proves that the cluster's
	// API server enforces it.
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, a.FreezeTimeout, true, func(ctx context.Context) (bool, error) {
		last = a.probeWrite(ctx)
		return last != nil && strings.Contains(last.Error(), message), nil
	})
	if err != nil {
		if uerr := a.unfreeze(ctx); uerr != nil {
			return time.Time{}, uerr
		}
		return time.Time{}, &waiting{reason: "FreezeNotEnforced", message: fmt.Sprintf(
			"the cluster did not refuse writes to %s within %s (the last write tried got: %v); trying again later", a.crd.Name, a.FreezeTimeout, last)}
	}
	enforced := time.Now()
	a.step("the cluster refused writes")
	// The cluster's other API servers, and writes admitted just before.
	select {
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	case <-time.After(a.FreezeSettle):
	}
	a.step("settled")
	return enforced, nil
}

// probeWrite tries a write that changes nothing, in dry-run: an update of
// an object as it is, or, without objects, the create of an empty one.
// Either passes the type's validation before the cluster's admission
// policies (a create may not: then the freeze shows only with objects).
func (a *adoption) probeWrite(ctx context.Context) error {
	dryRun := []string{metav1.DryRunAll}
	list, err := a.Dynamic.Resource(a.gvr).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return err
	}
	if len(list.Items) > 0 {
		obj := &list.Items[0]
		_, err := a.Dynamic.Resource(a.gvr).Namespace(obj.GetNamespace()).Update(ctx, obj, metav1.UpdateOptions{DryRun: dryRun})
		return err
	}
	obj := &unstructured.Unstructured{}
	obj.SetAPIVersion(a.gvr.GroupVersion().String())
	obj.SetKind(a.crd.Spec.Names.Kind)
	obj.SetName("annex-adoption-probe")
	namespace := ""
	if a.crd.Spec.Scope == apiextensionsv1.NamespaceScoped {
		namespace = metav1.NamespaceDefault
	}
	obj.SetNamespace(namespace)
	_, err = a.Dynamic.Resource(a.gvr).Namespace(namespace).Create(ctx, obj, metav1.CreateOptions{DryRun: dryRun})
	return err
}

// unfreeze lets writes to the type through again.
func (a *adoption) unfreeze(ctx context.Context) error {
	name := "annex-adoption-freeze." + a.hr.Spec.Adoption.CustomResourceDefinition
	for _, obj := range []client.Object{
		&admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: name}},
		&admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}},
	} {
		if err := a.Cluster.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("accepting writes to %s again: deleting %T %s: %w", name, obj, name, err)
		}
	}
	return nil
}

// switchAPIServices points the APIService of each served version of the
// CRD at annex, taking each over from the cluster's autoregister
// controller in one server-side apply.
func (a *adoption) switchAPIServices(ctx context.Context) error {
	for _, v := range a.crd.Spec.Versions {
		if !v.Served {
			continue
		}
		name := v.Name + "." + a.crd.Spec.Group
		current := &apiregistrationv1.APIService{}
		groupPriority, versionPriority := int32(1000), int32(15)
		if err := a.ClusterReader.Get(ctx, client.ObjectKey{Name: name}, current); err == nil {
			groupPriority, versionPriority = current.Spec.GroupPriorityMinimum, current.Spec.VersionPriority
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		apply := apiregistrationv1ac.APIService(name).
			WithLabels(map[string]string{automanagedLabel: "false", v1alpha1.ManagedByLabel: a.managedBy()}).
			WithSpec(apiregistrationv1ac.APIServiceSpec().
				WithService(apiregistrationv1ac.ServiceReference().WithNamespace(a.ServiceNamespace).WithName(a.ServiceName).WithPort(a.Port)).
				WithGroup(a.crd.Spec.Group).
				WithVersion(v.Name).
				WithCABundle(a.CABundle...).
				WithGroupPriorityMinimum(groupPriority).
				WithVersionPriority(versionPriority))
		if err := a.Cluster.Apply(ctx, apply, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("switching APIService %s to annex: %w", name, err)
		}
	}
	return nil
}

// finish stops the CRD from being served and lets writes through again.
func (a *adoption) finish(ctx context.Context) error {
	if err := a.stopServing(ctx); err != nil {
		return err
	}
	a.step("stopped serving the CRD")
	if err := a.unfreeze(ctx); err != nil {
		return err
	}
	a.step("deleted the freeze")
	now := metav1.Now()
	a.status.Phase, a.status.AdoptedTime = v1alpha1.AdoptionAdopted, &now
	if a.status.FrozenTime != nil {
		a.status.Freeze = &metav1.Duration{Duration: now.Sub(a.status.FrozenTime.Time).Round(time.Millisecond)}
	}
	a.status.Reason, a.status.Message = "", "annex serves the type; its objects as they were before the adoption stay in the cluster's etcd"
	ctrl.LoggerFrom(ctx).Info("Adopted a CustomResourceDefinition", "crd", a.crd.Name, "objects", a.status.Copied,
		"freeze", ptr.Deref(a.status.Freeze, metav1.Duration{}).Duration.String(), "steps", strings.Join(a.steps, ", "))
	return a.writeStatus(ctx)
}

// stopServing marks the CRD as adopted by this install and sets its
// versions served: false, so that the cluster neither serves it nor lists
// it in its OpenAPI beside annex's.
func (a *adoption) stopServing(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := a.ClusterReader.Get(ctx, client.ObjectKey{Name: a.crd.Name}, crd); err != nil {
			return client.IgnoreNotFound(err)
		}
		changed := crd.Annotations[v1alpha1.AdoptedByAnnotation] != a.managedBy()
		metav1.SetMetaDataAnnotation(&crd.ObjectMeta, v1alpha1.AdoptedByAnnotation, a.managedBy())
		for i := range crd.Spec.Versions {
			if crd.Spec.Versions[i].Served {
				crd.Spec.Versions[i].Served, changed = false, true
			}
		}
		if !changed {
			return nil
		}
		if err := a.Cluster.Update(ctx, crd); err != nil {
			return err
		}
		ctrl.LoggerFrom(ctx).Info("Stopped the cluster from serving an adopted CustomResourceDefinition", "crd", crd.Name)
		return nil
	})
}

// writeStatus applies status.adoption.
func (a *adoption) writeStatus(ctx context.Context) error {
	s := a.status
	ac := annexac.AdoptionStatus().WithPhase(s.Phase).WithCopied(s.Copied).WithTotal(s.Total)
	for _, t := range []struct {
		at   *metav1.Time
		with func(metav1.Time) *annexac.AdoptionStatusApplyConfiguration
	}{{s.StartTime, ac.WithStartTime}, {s.FrozenTime, ac.WithFrozenTime}, {s.SwitchedTime, ac.WithSwitchedTime}, {s.AdoptedTime, ac.WithAdoptedTime}} {
		if t.at != nil {
			t.with(*t.at)
		}
	}
	if s.Freeze != nil {
		ac.WithFreeze(*s.Freeze)
	}
	if s.Reason != "" {
		ac.WithReason(s.Reason)
	}
	if s.Message != "" {
		ac.WithMessage(s.Message)
	}
	apply := annexac.HostedResource(a.hr.Name).WithStatus(annexac.HostedResourceStatus().WithAdoption(ac))
	return client.IgnoreNotFound(a.Annex.Status().Apply(ctx, apply, client.FieldOwner(FieldManager), client.ForceOwnership))
}
