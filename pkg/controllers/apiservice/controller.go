// Package apiservice registers each hosted group/version with the cluster's
// aggregation layer: one APIService per served version, pointing at annex's
// Service with annex's CA bundle.
//
// An APIService is deleted only when no HostedResource serves its
// group/version any more; stopping or restarting annex never touches them,
// so that a rolling restart leaves the cluster's discovery intact.
//
// An install changes or deletes only the APIServices it owns: those that
// point at its own Service and carry its value of v1alpha1.ManagedByLabel
// (Target.ManagedBy), or the value every install used before it had one
// (v1alpha1.DefaultManagedByValue), which it then relabels with its own.
// A label alone is never enough: another install, or anyone who may label
// an APIService, could set it. clustergroups.Install.Ownership decides, for
// this controller and for the HostedGroupOwnership admission plugin alike.
package apiservice

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	apiregistrationv1helper "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1/helper"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/clustergroups"
	"annex.dev/annex/pkg/controllers/conditions"
)

// Target is where the cluster's aggregator sends hosted requests.
type Target struct {
	// Namespace and Name of annex's Service, and its Port.
	Namespace, Name string
	Port            int32
	// CABundle verifies annex's serving certificate.
	CABundle []byte
	// ManagedBy is the value of v1alpha1.ManagedByLabel on the APIServices
	// this install registers, one of its own (the chart's is
	// <namespace>.<fullname>). Empty means v1alpha1.DefaultManagedByValue.
	ManagedBy string
}

// Install is the install of annex that Target belongs to, which says
// which APIServices it owns (clustergroups.Install.Ownership).
func (t Target) Install() clustergroups.Install {
	return clustergroups.Install{Namespace: t.Namespace, Name: t.Name, ManagedBy: t.ManagedBy}
}

// Reconciler keeps the cluster's APIServices in line with the HostedResources.
type Reconciler struct {
	// Annex reads HostedResources and writes their status.
	Annex client.Client
	// Cluster reads and writes the cluster's APIServices and reads its CRDs.
	Cluster client.Client
	Target  Target
}

var crdGVK = apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition")

// everything is the one request this reconciler handles: the set of
// APIServices depends on all HostedResources together.
var everything = []reconcile.Request{{NamespacedName: client.ObjectKey{Name: "hosted-groups"}}}

func all[T any](context.Context, T) []reconcile.Request { return everything }

// SetupWithManager registers the reconciler. clusterCluster is the cluster
// whose aggregator annex registers with; it must have been added to mgr.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, clusterCluster cluster.Cluster) error {
	crds := &metav1.PartialObjectMetadata{}
	crds.SetGroupVersionKind(crdGVK)
	return ctrl.NewControllerManagedBy(mgr).
		Named("apiservice").
		Watches(&v1alpha1.HostedResource{}, handler.EnqueueRequestsFromMapFunc(all[client.Object])).
		WatchesRawSource(source.Kind(clusterCluster.GetCache(), &apiregistrationv1.APIService{},
			handler.TypedEnqueueRequestsFromMapFunc(all[*apiregistrationv1.APIService]))).
		WatchesRawSource(source.Kind(clusterCluster.GetCache(), crds,
			handler.TypedEnqueueRequestsFromMapFunc(all[*metav1.PartialObjectMetadata]))).
		Complete(r)
}

// groupVersion is one hosted group/version and the HostedResources that serve it.
type groupVersion struct {
	schema.GroupVersion
	hostedResources []string
	// adopting: a HostedResource of the group/version adopts a CRD of the
	// cluster, and has not yet switched its APIServices.
	adopting bool
}

func apiServiceName(gv schema.GroupVersion) string { return gv.Version + "." + gv.Group }

// Reconcile creates, updates and deletes APIServices and reports on each HostedResource.
func (r *Reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	logger := ctrl.LoggerFrom(ctx)
	hrs := &v1alpha1.HostedResourceList{}
	if err := r.Annex.List(ctx, hrs); err != nil {
		return reconcile.Result{}, err
	}
	apiServices := &apiregistrationv1.APIServiceList{}
	if err := r.Cluster.List(ctx, apiServices); err != nil {
		return reconcile.Result{}, err
	}
	existing := map[string]*apiregistrationv1.APIService{}
	for i := range apiServices.Items {
		existing[apiServices.Items[i].Name] = &apiServices.Items[i]
	}
	clusterCRDs := &metav1.PartialObjectMetadataList{}
	clusterCRDs.SetGroupVersionKind(crdGVK)
	if err := r.Cluster.List(ctx, clusterCRDs); err != nil {
		return reconcile.Result{}, err
	}
	crdNames := make([]string, 0, len(clusterCRDs.Items))
	for _, crd := range clusterCRDs.Items {
		// A CRD this install adopted is served by annex, not the cluster.
		if crd.Annotations[v1alpha1.AdoptedByAnnotation] == r.Target.Install().ManagedByValue() {
			continue
		}
		crdNames = append(crdNames, crd.Name)
	}
	cluster := clustergroups.New(crdNames, apiServices.Items, r.Target.Install())

	desired := desiredGroupVersions(hrs.Items)
	// What each HostedResource is told, by name.
	problems := map[string][]problem{}
	pending := map[string][]string{}
	var refused bool
	for _, name := range slices.Sorted(maps.Keys(desired)) {
		gv := desired[name]
		var p *problem
		switch current := existing[name]; {
		case len(cluster.CRDs(gv.Group)) > 0 && gv.adopting:
			p = &problem{reason: v1alpha1.ReasonAdopting, message: fmt.Sprintf(
				"the cluster serves group %s through CustomResourceDefinitions %s until the adoption switches its APIServices to annex",
				gv.Group, strings.Join(cluster.CRDs(gv.Group), ", "))}
		case len(cluster.CRDs(gv.Group)) > 0:
			p = &problem{reason: v1alpha1.ReasonGroupServedByCluster, message: fmt.Sprintf(
				"the cluster serves group %s itself through CustomResourceDefinitions %s; annex leaves the cluster untouched",
				gv.Group, strings.Join(cluster.CRDs(gv.Group), ", "))}
		case current != nil && !r.Target.Install().Owns(current):
			p = &problem{reason: v1alpha1.ReasonAPIServiceConflict, message: r.conflictMessage(current)}
		default:
			apiService, err := r.ensure(ctx, gv, current, versionPriority(gv.GroupVersion, desired))
			if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
				// Refused by the cluster's admission (the chart's policy on
				// the groups annex may register) or validation: retrying at
				// once will not help, and the other groups must not wait for
				// this one.
				p = &problem{reason: v1alpha1.ReasonAPIServiceRefused, message: err.Error()}
				refused = true
				break
			}
			if err != nil {
				return reconcile.Result{}, err
			}
			if !apiregistrationv1helper.IsAPIServiceConditionTrue(apiService, apiregistrationv1.Available) {
				for _, hr := range gv.hostedResources {
					pending[hr] = append(pending[hr], fmt.Sprintf("APIService %s is not available yet: %s", name, availableMessage(apiService)))
				}
			}
		}
		if p != nil {
			for _, hr := range gv.hostedResources {
				problems[hr] = append(problems[hr], *p)
			}
		}
	}

	for name, apiService := range existing {
		if !r.Target.Install().Owns(apiService) {
			continue
		}
		if _, ok := desired[name]; ok {
			continue
		}
		// Exactly the object judged above: one changed since (re-pointed,
		// relabelled) is judged again at the reconcile its change triggers.
		err := r.Cluster.Delete(ctx, apiService, client.Preconditions{UID: &apiService.UID, ResourceVersion: &apiService.ResourceVersion})
		switch {
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			continue
		case err != nil:
			return reconcile.Result{}, err
		}
		logger.Info("Deleted an APIService that no HostedResource serves any more", "apiService", name)
	}

	for i := range hrs.Items {
		if err := r.report(ctx, &hrs.Items[i], problems[hrs.Items[i].Name], pending[hrs.Items[i].Name]); err != nil {
			return reconcile.Result{}, err
		}
	}
	if refused {
		// What refused it may change with no event this controller sees:
		// the chart's policy, replaced by an upgrade a moment after annex
		// restarted, or its list of groups.
		return reconcile.Result{RequeueAfter: RefusedRetryInterval}, nil
	}
	return reconcile.Result{}, nil
}

// RefusedRetryInterval is how long after the cluster refused an APIService
// annex writes it again.
const RefusedRetryInterval = 30 * time.Second

// desiredGroupVersions maps APIService names to the served group/versions of all HostedResources.
func desiredGroupVersions(hrs []v1alpha1.HostedResource) map[string]*groupVersion {
	desired := map[string]*groupVersion{}
	for _, hr := range hrs {
		for _, v := range hr.Spec.Versions {
			if !v.Served {
				continue
			}
			gv := schema.GroupVersion{Group: hr.Spec.Group, Version: v.Name}
			name := apiServiceName(gv)
			if desired[name] == nil {
				desired[name] = &groupVersion{GroupVersion: gv}
			}
			desired[name].hostedResources = append(desired[name].hostedResources, hr.Name)
			if a := hr.Status.Adoption; hr.Spec.Adoption != nil && (a == nil || a.Phase != v1alpha1.AdoptionFailed && a.SwitchedTime == nil) {
				desired[name].adopting = true
			}
		}
	}
	return desired
}

// versionPriority orders the versions of a group as Kubernetes orders them
// (v2 > v1 > v1beta2 > v1alpha1), so that clients prefer the most stable one.
func versionPriority(gv schema.GroupVersion, desired map[string]*groupVersion) int32 {
	var versions []string
	for _, other := range desired {
		if other.Group == gv.Group {
			versions = append(versions, other.Version)
		}
	}
	sort.Slice(versions, func(i, j int) bool { return version.CompareKubeAwareVersionStrings(versions[i], versions[j]) > 0 })
	for i, v := range versions {
		if v == gv.Version {
			return int32(100 - i)
		}
	}
	return 1
}

func (r *Reconciler) ensure(ctx context.Context, gv *groupVersion, current *apiregistrationv1.APIService, priority int32) (*apiregistrationv1.APIService, error) {
	port := r.Target.Port
	spec := apiregistrationv1.APIServiceSpec{
		Service:              &apiregistrationv1.ServiceReference{Namespace: r.Target.Namespace, Name: r.Target.Name, Port: &port},
		Group:                gv.Group,
		Version:              gv.Version,
		CABundle:             r.Target.CABundle,
		GroupPriorityMinimum: 1000,
		VersionPriority:      priority,
	}
	managedBy := r.Target.Install().ManagedByValue()
	if current == nil {
		apiService := &apiregistrationv1.APIService{
			ObjectMeta: metav1.ObjectMeta{Name: apiServiceName(gv.GroupVersion), Labels: map[string]string{v1alpha1.ManagedByLabel: managedBy}},
			Spec:       spec,
		}
		if err := r.Cluster.Create(ctx, apiService); err != nil {
			return nil, fmt.Errorf("registering %s with the cluster: %w", apiService.Name, err)
		}
		ctrl.LoggerFrom(ctx).Info("Registered a hosted group/version with the cluster", "apiService", apiService.Name)
		return apiService, nil
	}
	if apiequality.Semantic.DeepEqual(current.Spec, spec) && current.Labels[v1alpha1.ManagedByLabel] == managedBy {
		return current, nil
	}
	updated := current.DeepCopy()
	updated.Spec = spec
	// An APIService of this install from before it had a value of its own
	// (legacy) is relabelled, in the same update.
	if updated.Labels == nil {
		updated.Labels = map[string]string{}
	}
	updated.Labels[v1alpha1.ManagedByLabel] = managedBy
	if err := r.Cluster.Update(ctx, updated); err != nil {
		return nil, fmt.Errorf("updating APIService %s: %w", updated.Name, err)
	}
	if current.Labels[v1alpha1.ManagedByLabel] != managedBy {
		ctrl.LoggerFrom(ctx).Info("Adopted an APIService of this install labelled with the value from before installs had their own",
			"apiService", updated.Name, "from", current.Labels[v1alpha1.ManagedByLabel], "to", managedBy)
	}
	return updated, nil
}

// conflictMessage says why an APIService of a hosted group/version is not this install's.
func (r *Reconciler) conflictMessage(apiService *apiregistrationv1.APIService) string {
	value, labelled := apiService.Labels[v1alpha1.ManagedByLabel]
	switch {
	case !labelled:
		return fmt.Sprintf("the cluster already has APIService %s, which annex does not manage", apiService.Name)
	case !r.Target.Install().IsService(apiService.Spec.Service):
		return fmt.Sprintf("the cluster already has APIService %s, labelled %s=%s but pointing at %s, not at this install's Service %s/%s; annex leaves it alone",
			apiService.Name, v1alpha1.ManagedByLabel, value, serviceName(apiService.Spec.Service), r.Target.Namespace, r.Target.Name)
	default:
		return fmt.Sprintf("the cluster already has APIService %s, labelled %s=%s (another install's), not %s",
			apiService.Name, v1alpha1.ManagedByLabel, value, r.Target.Install().ManagedByValue())
	}
}

func serviceName(ref *apiregistrationv1.ServiceReference) string {
	if ref == nil {
		return "no Service (served by the kube-apiserver itself)"
	}
	return "Service " + ref.Namespace + "/" + ref.Name
}

// availableMessage says why the aggregator finds an APIService unavailable.
func availableMessage(apiService *apiregistrationv1.APIService) string {
	if c := apiregistrationv1helper.GetAPIServiceConditionByType(apiService, apiregistrationv1.Available); c != nil {
		return c.Reason + ": " + c.Message
	}
	return "the aggregator has not checked it yet"
}

// problem is why annex does not register one group/version of a HostedResource.
type problem struct {
	reason, message string
}

// report sets the APIServiceAvailable condition of one HostedResource. Its
// reason is the first problem's; its message names every problem with its
// reason, since the versions of a type may differ.
func (r *Reconciler) report(ctx context.Context, hr *v1alpha1.HostedResource, problems []problem, pending []string) error {
	c := metav1.Condition{Type: v1alpha1.HostedResourceAPIServiceAvailable, ObservedGeneration: hr.Generation}
	switch {
	case len(problems) > 0:
		messages := make([]string, 0, len(problems))
		for _, p := range problems {
			messages = append(messages, p.reason+": "+p.message)
		}
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, problems[0].reason, strings.Join(messages, "; ")
	case len(pending) > 0:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1alpha1.ReasonPending, strings.Join(pending, "; ")
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, v1alpha1.ReasonRegistered, "every served version is registered with the cluster and available"
	}
	return statusOwner.Apply(ctx, r.Annex, hr, c)
}

// statusOwner applies APIServiceAvailable, the one condition this controller owns.
var statusOwner = conditions.Owner{
	FieldManager: "annex-apiservice-controller",
	Types:        []string{v1alpha1.HostedResourceAPIServiceAvailable},
}
