package namespace

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/klog/v2"
)

// contentResult is what one pass over a namespace's content found.
type contentResult struct {
	discoveryErr error
	deleteErrs   []error
	// remaining counts the objects left per resource, finalizers the
	// objects left per finalizer.
	remaining  map[string]int
	finalizers map[string]int
}

// err is nil once the namespace is empty and every resource was examined.
func (r contentResult) err() error {
	if r.discoveryErr != nil || len(r.deleteErrs) > 0 {
		return errors.Join(append([]error{r.discoveryErr}, r.deleteErrs...)...)
	}
	if len(r.remaining) > 0 {
		return errContentRemaining
	}
	return nil
}

// conditions are the namespace's status conditions that tell a user why it
// is still there.
func (r contentResult) conditions() []corev1.NamespaceCondition {
	discovered := condition(corev1.NamespaceDeletionDiscoveryFailure, "ResourcesDiscovered", "All resources successfully discovered")
	if r.discoveryErr != nil {
		discovered = failed(corev1.NamespaceDeletionDiscoveryFailure, "DiscoveryFailed", "Discovery failed for some groups: "+r.discoveryErr.Error())
	}
	deleted := condition(corev1.NamespaceDeletionContentFailure, "ContentDeleted", "All content successfully deleted, may be waiting on finalization")
	if len(r.deleteErrs) > 0 {
		deleted = failed(corev1.NamespaceDeletionContentFailure, "ContentDeletionFailed", "Failed to delete all resource types: "+errors.Join(r.deleteErrs...).Error())
	}
	remaining := condition(corev1.NamespaceContentRemaining, "ContentRemoved", "All content successfully removed")
	if len(r.remaining) > 0 {
		remaining = failed(corev1.NamespaceContentRemaining, "SomeResourcesRemain", "Some resources are remaining: "+summary(r.remaining, "has %d resource instances"))
	}
	finalizers := condition(corev1.NamespaceFinalizersRemaining, "ContentHasNoFinalizers", "All content-preserving finalizers finished")
	if len(r.finalizers) > 0 {
		finalizers = failed(corev1.NamespaceFinalizersRemaining, "SomeFinalizersRemain", "Some content in the namespace has finalizers remaining: "+summary(r.finalizers, "in %d resource instances"))
	}
	return []corev1.NamespaceCondition{discovered, deleted, remaining, finalizers}
}

func condition(t corev1.NamespaceConditionType, reason, message string) corev1.NamespaceCondition {
	return corev1.NamespaceCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: message}
}

func failed(t corev1.NamespaceConditionType, reason, message string) corev1.NamespaceCondition {
	return corev1.NamespaceCondition{Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message}
}

// summary prints counts in a stable order: "a has 2 resource instances, b has 1 ...".
func summary(counts map[string]int, format string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, k+" "+fmt.Sprintf(format, counts[k]))
	}
	return strings.Join(parts, ", ")
}

// deleteContent discovers every namespaced resource the server serves now
// (hosted types come and go, so nothing is cached) and deletes all their
// objects in the namespace.
func (c *Controller) deleteContent(ctx context.Context, namespace string) contentResult {
	result := contentResult{remaining: map[string]int{}, finalizers: map[string]int{}}
	lists, err := discovery.ServerPreferredNamespacedResources(c.discovery)
	if err != nil {
		// A group that failed discovery may hold content: never finalize
		// while it does, but clean up what is known.
		result.discoveryErr = err
	}
	deletable := discovery.FilteredBy(discovery.SupportsAllVerbs{Verbs: []string{"list", "delete"}}, lists)
	for _, list := range deletable {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			result.deleteErrs = append(result.deleteErrs, err)
			continue
		}
		for _, r := range list.APIResources {
			if strings.Contains(r.Name, "/") {
				continue
			}
			gvr := gv.WithResource(r.Name)
			n, err := c.deleteResource(ctx, gvr, namespace, slices.Contains(r.Verbs, "deletecollection"), result.finalizers)
			if err != nil {
				result.deleteErrs = append(result.deleteErrs, fmt.Errorf("%s: %w", gvr.GroupResource(), err))
			}
			if n > 0 {
				result.remaining[gvr.GroupResource().String()] = n
			}
		}
	}
	return result
}

// deleteResource deletes the objects of one resource in the namespace and
// returns how many remain, adding the finalizers that hold them to finalizers.
func (c *Controller) deleteResource(ctx context.Context, gvr schema.GroupVersionResource, namespace string, collection bool, finalizers map[string]int) (int, error) {
	logger := klog.FromContext(ctx).WithValues("resource", gvr)
	client := c.metadata.Resource(gvr).Namespace(namespace)
	background := metav1.DeletePropagationBackground
	if collection {
		err := client.DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &background}, metav1.ListOptions{})
		switch {
		case err == nil:
		case apierrors.IsNotFound(err):
			// The type went away after discovery: nothing of it remains.
			return 0, nil
		case apierrors.IsMethodNotSupported(err):
			collection = false
		default:
			return 0, fmt.Errorf("deleting the collection: %w", err)
		}
	}

	objects, err := client.List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("listing: %w", err)
	}
	remaining := 0
	for _, obj := range objects.Items {
		if obj.DeletionTimestamp == nil {
			// Without deletecollection, or created since: delete it alone.
			uid := obj.UID
			err := client.Delete(ctx, obj.Name, metav1.DeleteOptions{PropagationPolicy: &background, Preconditions: &metav1.Preconditions{UID: &uid}})
			if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				continue
			}
			if err != nil {
				return remaining, fmt.Errorf("deleting %s: %w", obj.Name, err)
			}
			if len(obj.Finalizers) == 0 {
				// Gone at once; if not, the next pass counts it.
				continue
			}
		}
		remaining++
		for _, f := range obj.Finalizers {
			finalizers[f]++
		}
	}
	if remaining > 0 {
		logger.V(3).Info("Objects remain", "count", remaining, "deleteCollection", collection)
	}
	return remaining, nil
}
