// Package adoption takes over CustomResourceDefinitions that the cluster
// serves, with their objects, for the HostedResources whose spec.adoption
// names them. It copies the objects into each type's store as the cluster
// holds them (uid, timestamps, generation, finalizers, managedFields and
// status included), copies what changed meanwhile until little does, then
// has the cluster refuse writes to the types (a ValidatingAdmissionPolicy),
// copies the last changes, points the APIServices at annex, stops the CRDs'
// versions from being served, and lets writes through again.
//
// The cluster routes requests by API group and version, so the CRDs of one
// group are adopted together: the adoption of each waits until every CRD of
// its group has a HostedResource that adopts it, and all switch at once.
//
// Nothing is deleted from the cluster: the objects stay in its etcd. annex
// killed at any point goes on from where it was on restart, or, while
// writes are refused, undoes the freeze and copies again.
package adoption

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/handler"
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
	// DefaultReleaseStallTimeout is how long a release may go without
	// progress before it is undone.
	DefaultReleaseStallTimeout = 5 * time.Minute
	// releaseRetryInterval is how soon a step of a release that failed is
	// tried again.
	releaseRetryInterval = 5 * time.Second
	// waitInterval is how often a waiting adoption looks again.
	waitInterval = 10 * time.Second
	// pageSize is the size of the pages of the first copy.
	pageSize = 500
)

// Reconciler adopts the CRDs that HostedResources name.
type Reconciler struct {
	// Annex writes HostedResources' status; AnnexReader reads them
	// uncached.
	Annex       client.Client
	AnnexReader client.Reader
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
	// DeleteBatch is how many of the cluster's copies one batch deletes
	// (spec.adoption.deleteClusterCopies).
	DeleteBatch int
	// ReleaseStallTimeout is how long a release may go without progress,
	// writes refused, before annex undoes it; zero means the default.
	ReleaseStallTimeout time.Duration

	// stalls notes, per group being released, its progress and since when.
	stallsMu sync.Mutex
	stalls   map[string]stallMark
}

var crdGVK = apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition")

// SetupWithManager registers the reconciler. clusterCluster is the cluster
// annex is registered with; it must have been added to mgr. Its requests
// are API groups: the adoptions of one group's CRDs go together, since the
// group's APIServices serve them all.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, clusterCluster cluster.Cluster) error {
	crds := &metav1.PartialObjectMetadata{}
	crds.SetGroupVersionKind(crdGVK)
	// A CRD's name is <plural>.<group>: a change of one (re-applied by
	// Helm, say) wakes its group.
	crdGroup := handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, crd *metav1.PartialObjectMetadata) []reconcile.Request {
		_, group, _ := strings.Cut(crd.Name, ".")
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: group}}}
	})
	hrGroup := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		hr, ok := o.(*v1alpha1.HostedResource)
		if !ok || hr.Spec.Adoption == nil {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: hr.Spec.Group}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("adoption").
		Watches(&v1alpha1.HostedResource{}, hrGroup).
		WatchesRawSource(source.Kind(clusterCluster.GetCache(), crds, crdGroup)).
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
	if r.DeleteBatch == 0 {
		r.DeleteBatch = DefaultDeleteBatch
	}
	if r.ReleaseStallTimeout == 0 {
		r.ReleaseStallTimeout = DefaultReleaseStallTimeout
	}
}

// waiting is an adoption that cannot go on yet: it stays in its phase
// with reason and message, and is looked at again later.
type waiting struct{ reason, message string }

func (w *waiting) Error() string { return w.reason + ": " + w.message }

// failed ends an adoption: the cluster keeps serving the type.
type failed struct{ reason, message string }

func (f *failed) Error() string { return f.reason + ": " + f.message }

// adoption is the adoption of one HostedResource's CRD.
type adoption struct {
	*Reconciler
	hr     *v1alpha1.HostedResource
	status *v1alpha1.AdoptionStatus
	crd    *apiextensionsv1.CustomResourceDefinition
	gvr    schema.GroupVersionResource
	// objects is the type's store while its objects are copied.
	objects *routing.RawObjects
	// copied maps namespace/name to the resourceVersion, in the cluster, of
	// each object as annex last copied it.
	copied map[string]string
	// written maps namespace/name to the resourceVersion, in annex, of each
	// object as a release last wrote it back (or found it in the cluster),
	// and inCluster to the uid the cluster gives it; recreated holds those
	// counted in status.adoption.recreated.
	written, inCluster map[string]string
	recreated          map[string]bool
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
		if v.Name == ReleaseVersion {
			continue
		}
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

func (r *Reconciler) managedBy() string {
	if r.ManagedBy == "" {
		return v1alpha1.DefaultManagedByValue
	}
	return r.ManagedBy
}

func key(namespace, name string) string { return namespace + "/" + name }

// copyAll copies every object of the type, as one consistent list of the
// cluster's, and deletes from annex's store what that list does not hold.
func (a *adoption) copyAll(ctx context.Context) error {
	objects := a.objects
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
	return eachHeld(ctx, objects, func(namespace, name string) error {
		if _, ok := a.copied[key(namespace, name)]; ok {
			return nil
		}
		return remove(ctx, objects, namespace, name)
	})
}

// eachHeld calls f with each object annex holds of the type, from a list
// of their metadata read a page at a time.
func eachHeld(ctx context.Context, objects *routing.RawObjects, f func(namespace, name string) error) error {
	return eachHeldVersion(ctx, objects, func(k, _ string) error {
		namespace, name, _ := strings.Cut(k, "/")
		return f(namespace, name)
	})
}

// eachHeldPage calls f with each page of the objects annex holds of the
// type, whole.
func eachHeldPage(ctx context.Context, objects *routing.RawObjects, f func(page []unstructured.Unstructured) error) error {
	predicate := storage.Everything
	predicate.Limit = pageSize
	for {
		held := &unstructured.UnstructuredList{}
		if err := objects.GetList(ctx, objects.Prefix(), storage.ListOptions{Recursive: true, Predicate: predicate}, held); err != nil {
			return fmt.Errorf("listing the objects annex holds: %w", err)
		}
		if err := f(held.Items); err != nil {
			return err
		}
		if predicate.Continue = held.GetContinue(); predicate.Continue == "" {
			return nil
		}
	}
}

// metadataPageSize is how many objects a page of a list of annex's
// objects' metadata holds: a page costs little memory, but the store
// counts the objects left after each (etcd's range counts every key past
// the page). On a bare etcd, 100,000 keys of 700 bytes read in pages of
// 500 took 1.8 to 2.2 s, in pages of 10,000 0.56 to 0.66 s.
const metadataPageSize = 10_000

// eachHeldVersion calls f with the key (namespace/name) and resourceVersion
// of each object annex holds of the type, from a list of their metadata
// read a page at a time.
func eachHeldVersion(ctx context.Context, objects *routing.RawObjects, f func(k, resourceVersion string) error) error {
	predicate := storage.Everything
	predicate.Limit = metadataPageSize
	for {
		held := &metav1.PartialObjectMetadataList{}
		if err := objects.GetList(ctx, objects.Prefix(), storage.ListOptions{Recursive: true, Predicate: predicate}, held); err != nil {
			return fmt.Errorf("listing the objects annex holds: %w", err)
		}
		for i := range held.Items {
			if err := f(key(held.Items[i].Namespace, held.Items[i].Name), held.Items[i].ResourceVersion); err != nil {
				return err
			}
		}
		if predicate.Continue = held.Continue; predicate.Continue == "" {
			return nil
		}
	}
}

// catchUp copies the objects that changed in the cluster since they were
// copied, and deletes those the cluster deleted. It returns how many.
func (a *adoption) catchUp(ctx context.Context) (int, error) {
	objects := a.objects
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
			// ReleaseVersion is the release's, or the deletion's of the
			// cluster's copies, which remove it when they end.
			if crd.Spec.Versions[i].Served && !isReleaseVersion(crd.Spec.Versions[i]) {
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
	}{{s.StartTime, ac.WithStartTime}, {s.FrozenTime, ac.WithFrozenTime}, {s.SwitchedTime, ac.WithSwitchedTime}, {s.AdoptedTime, ac.WithAdoptedTime},
		{s.ReleaseStartTime, ac.WithReleaseStartTime}, {s.ReleasedTime, ac.WithReleasedTime}} {
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
	if s.Recreated != 0 {
		ac.WithRecreated(s.Recreated)
	}
	if len(s.RecreatedObjects) > 0 {
		ac.WithRecreatedObjects(s.RecreatedObjects...)
	}
	if c := s.ClusterCopies; c != nil {
		cc := annexac.ClusterCopiesStatus().WithTotal(c.Total).WithDeleted(c.Deleted)
		if c.StartTime != nil {
			cc.WithStartTime(*c.StartTime)
		}
		if c.CompletionTime != nil {
			cc.WithCompletionTime(*c.CompletionTime)
		}
		ac.WithClusterCopies(cc)
	}
	apply := annexac.HostedResource(a.hr.Name).WithStatus(annexac.HostedResourceStatus().WithAdoption(ac))
	return client.IgnoreNotFound(a.Annex.Status().Apply(ctx, apply, client.FieldOwner(FieldManager), client.ForceOwnership))
}
