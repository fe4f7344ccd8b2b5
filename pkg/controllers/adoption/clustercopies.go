package adoption

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// Reasons of the deletion of the cluster's copies.
const (
	// ReasonClusterCopiesNotDeleted: the deletion that
	// spec.adoption.deleteClusterCopies asks for cannot be done; the
	// message says why. annex still serves the type, and tries again later.
	ReasonClusterCopiesNotDeleted = "ClusterCopiesNotDeleted"
)

// DefaultDeleteBatch is how many of the cluster's copies one batch
// deletes: one list of the cluster's, then the deletions, then the status.
const DefaultDeleteBatch = 500

// more is returned when a step of work ended and the next should follow at
// once (a batch of deletions): the reconciler runs again for it, after the
// other groups' waiting work.
type more struct{}

func (more) Error() string { return "more to do" }

// clusterCopiesPending says whether the member asks for its cluster's
// copies to be deleted and they are not all deleted yet.
func (a *adoption) clusterCopiesPending() bool {
	if !a.hr.Spec.Adoption.DeleteClusterCopies || a.status.Phase != v1alpha1.AdoptionAdopted {
		return false
	}
	c := a.status.ClusterCopies
	return c == nil || c.CompletionTime == nil
}

// deleteClusterCopies deletes one batch of the cluster's copies of each
// member that asks for it, and returns more while some are left.
func (g *group) deleteClusterCopies(ctx context.Context) error {
	left := false
	for _, a := range g.members {
		if !a.clusterCopiesPending() {
			continue
		}
		done, err := a.deleteClusterCopiesBatch(ctx)
		var f *failed
		if errors.As(err, &f) {
			// Nothing annex can change by trying at once: the type stays
			// served, the copies wait, and the reason says why.
			ctrl.LoggerFrom(ctx).Info("Cannot delete the cluster's copies of an adopted type", "crd", a.crd.Name, "message", f.message)
			a.status.Reason, a.status.Message = ReasonClusterCopiesNotDeleted, f.message
			if err := a.writeStatus(ctx); err != nil {
				return err
			}
			return &waiting{reason: ReasonClusterCopiesNotDeleted, message: f.message}
		}
		if err != nil {
			return err
		}
		left = left || !done
	}
	if left {
		return more{}
	}
	return nil
}

// deleteClusterCopiesBatch deletes up to DeleteBatch of the objects that
// the cluster's etcd holds of the type, through ReleaseVersion (which the
// cluster serves for the time), finalizers or not, and says whether none
// is left. annex's objects are not touched: the type's own versions point
// at annex, and only ReleaseVersion reaches the cluster's etcd.
func (a *adoption) deleteClusterCopiesBatch(ctx context.Context) (done bool, err error) {
	s := a.status
	if s.ClusterCopies == nil {
		s.ClusterCopies = &v1alpha1.ClusterCopiesStatus{StartTime: ptr.To(metav1.Now())}
	}
	c := s.ClusterCopies
	if a.crd.UID == "" {
		// readCRD found it gone, or no longer the type.
		err := a.ClusterReader.Get(ctx, client.ObjectKey{Name: a.crd.Name}, &apiextensionsv1.CustomResourceDefinition{})
		switch {
		case apierrors.IsNotFound(err):
			return true, a.clusterCopiesDeleted(ctx, "the cluster has no CustomResourceDefinition "+a.crd.Name+" any more: its objects went with it")
		case err != nil:
			return false, err
		}
		return false, &failed{message: fmt.Sprintf("CustomResourceDefinition %s changed in the cluster and is no longer the HostedResource's type: "+
			"annex does not delete objects through it", a.crd.Name)}
	}
	if err := a.serveReleaseVersion(ctx); err != nil {
		return false, fmt.Errorf("serving version %s of %s in the cluster: %w", ReleaseVersion, a.crd.Name, err)
	}
	if err := a.waitServed(ctx); err != nil {
		return false, err
	}
	gvr := a.releaseGVR()
	page, err := a.Metadata.Resource(gvr).List(ctx, metav1.ListOptions{Limit: int64(a.DeleteBatch)})
	if err != nil {
		return false, fmt.Errorf("listing %s in the cluster: %w", gvr.GroupResource(), err)
	}
	left := int64(len(page.Items))
	if rest := page.RemainingItemCount; rest != nil {
		left += *rest
	} else if page.Continue != "" {
		left++ // at least one more than this page
	}
	if c.Total == 0 {
		c.Total = left
	}
	c.Total = max(c.Total, left)
	c.Deleted = c.Total - left
	if len(page.Items) == 0 {
		return true, a.clusterCopiesDeleted(ctx, "")
	}
	g, deleting := errgroup.WithContext(ctx)
	g.SetLimit(copyWorkers)
	for i := range page.Items {
		g.Go(func() error {
			err := a.deleteFromCluster(deleting, &page.Items[i])
			if permanent(err) {
				return &failed{message: err.Error()}
			}
			return err
		})
	}
	err = g.Wait()
	if err != nil {
		return false, err
	}
	c.Deleted += int64(len(page.Items))
	s.Reason, s.Message = "", fmt.Sprintf("annex serves the type; deleting its objects of before the adoption from the cluster's etcd: %d of %d", c.Deleted, c.Total)
	if err := a.writeStatus(ctx); err != nil {
		return false, err
	}
	return false, nil
}

// clusterCopiesDeleted ends the deletion: the cluster no longer serves
// ReleaseVersion, and the status says when the last copy went.
func (a *adoption) clusterCopiesDeleted(ctx context.Context, why string) error {
	if a.crd.UID != "" {
		if err := a.dropReleaseVersion(ctx); err != nil {
			return fmt.Errorf("removing version %s from %s: %w", ReleaseVersion, a.crd.Name, err)
		}
	}
	s := a.status
	c := s.ClusterCopies
	c.Deleted, c.CompletionTime = c.Total, ptr.To(metav1.Now())
	s.Reason, s.Message = "", a.adoptedMessage()
	took := c.CompletionTime.Sub(c.StartTime.Time).Round(time.Millisecond)
	ctrl.LoggerFrom(ctx).Info("Deleted the cluster's copies of an adopted type", "crd", a.crd.Name, "objects", c.Total, "took", took.String(),
		"note", why)
	return a.writeStatus(ctx)
}

// adoptedMessage is the message of an adoption that is Adopted, and says
// where the objects of before the adoption are.
func (a *adoption) adoptedMessage() string {
	if c := a.status.ClusterCopies; c != nil && c.CompletionTime != nil {
		return "annex serves the type; its objects of before the adoption were deleted from the cluster's etcd"
	}
	if a.hr.Spec.Adoption.DeleteClusterCopies {
		return "annex serves the type; its objects of before the adoption are being deleted from the cluster's etcd"
	}
	return adoptedMessage
}

// forgetReleaseVersion removes ReleaseVersion from the CRD of a
// HostedResource being deleted while annex deleted its cluster's copies
// through it: no one would remove it after. A release under way keeps it.
func (r *Reconciler) forgetReleaseVersion(ctx context.Context, hr *v1alpha1.HostedResource) error {
	s := hr.Status.Adoption
	if !hr.Spec.Adoption.DeleteClusterCopies || s == nil || s.Phase != v1alpha1.AdoptionAdopted {
		return nil
	}
	a := &adoption{Reconciler: r, hr: hr, status: s.DeepCopy(),
		crd: &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: hr.Spec.Adoption.CustomResourceDefinition}}}
	err := a.dropReleaseVersion(ctx)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// dropLeftReleaseVersions removes ReleaseVersion from the CRDs of the
// group that this install adopted, once no HostedResource adopts them: one
// deleted while annex deleted its cluster's copies through it, and gone
// before forgetReleaseVersion saw it.
func (g *group) dropLeftReleaseVersions(ctx context.Context) error {
	crds := &metav1.PartialObjectMetadataList{}
	crds.SetGroupVersionKind(crdGVK)
	if err := g.ClusterReader.List(ctx, crds); err != nil {
		return err
	}
	for _, crd := range crds.Items {
		if _, group, _ := strings.Cut(crd.Name, "."); group != g.name || crd.Annotations[v1alpha1.AdoptedByAnnotation] != g.managedBy() {
			continue
		}
		a := &adoption{Reconciler: g.Reconciler, crd: &apiextensionsv1.CustomResourceDefinition{ObjectMeta: crd.ObjectMeta}}
		if err := a.dropReleaseVersion(ctx); err != nil {
			return err
		}
	}
	return nil
}

// deleteFromClusterError names the object whose deletion from the
// cluster failed.
func deleteFromClusterError(k string, err error) error {
	return fmt.Errorf("deleting %s from the cluster: %w", strings.TrimPrefix(k, "/"), err)
}
