//go:build integration

package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const (
	memoGroup = "gc.example.net"
	memoKind  = "Memo"

	// collectionTimeout bounds how long the garbage collector may take to
	// delete a dependent once its owner is gone.
	collectionTimeout = 60 * time.Second
)

// TestHostedGarbageCollection runs the cluster's garbage collector and checks
// that it collects hosted objects whose owners are deleted, whether the owner
// is an object of the cluster or another hosted object. It must not run in
// parallel: it owns the cluster's controllers for its length.
func TestHostedGarbageCollection(t *testing.T) {
	ns := createNamespace(t, "gc-hosted")
	// The type is served before the manager starts, so that the collector's
	// first discovery already finds it rather than its periodic resync.
	memos := serveHostedType(t, memoKind, "memos", memoGroup, ns)
	startControllerManager(t, "garbage-collector-controller")
	memosIn := adminClient(t).Resource(memos).Namespace(ns)

	t.Run("owned by a ConfigMap of the cluster", func(t *testing.T) {
		cs, err := kubernetes.NewForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		owner, err := cs.CoreV1().ConfigMaps(ns).Create(testContext(t), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("owner")}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating the owner ConfigMap: %v", err)
		}
		dependent := ownedMemo(memos, uniqueName("dependent"), metav1.OwnerReference{
			APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID,
		})
		if _, err := memosIn.Create(testContext(t), dependent, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating memo %s owned by ConfigMap %s: %v", dependent.GetName(), owner.Name, err)
		}
		// An unowned memo is the control: the collector must leave it alone.
		bystander := hostedObject(memos, memoKind, uniqueName("bystander"), 1)
		if _, err := memosIn.Create(testContext(t), bystander, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating memo %s: %v", bystander.GetName(), err)
		}

		if err := cs.CoreV1().ConfigMaps(ns).Delete(testContext(t), owner.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("deleting the owner ConfigMap: %v", err)
		}
		waitCollected(t, memos, ns, dependent.GetName())
		if _, err := memosIn.Get(testContext(t), bystander.GetName(), metav1.GetOptions{}); err != nil {
			t.Errorf("memo %s, which has no owner, after the collection: %v", bystander.GetName(), err)
		}
	})

	for _, policy := range []metav1.DeletionPropagation{metav1.DeletePropagationBackground, metav1.DeletePropagationForeground} {
		t.Run(fmt.Sprintf("owned by a hosted object deleted with propagation %s", policy), func(t *testing.T) {
			parent, err := memosIn.Create(testContext(t), hostedObject(memos, memoKind, uniqueName("parent"), 1), metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("creating the parent memo: %v", err)
			}
			// blockOwnerDeletion makes a foreground deletion of the parent
			// wait for the child.
			child := ownedMemo(memos, uniqueName("child"), metav1.OwnerReference{
				APIVersion: memos.GroupVersion().String(), Kind: memoKind, Name: parent.GetName(), UID: parent.GetUID(),
				BlockOwnerDeletion: ptr.To(true),
			})
			if _, err := memosIn.Create(testContext(t), child, metav1.CreateOptions{}); err != nil {
				t.Fatalf("creating memo %s owned by memo %s: %v", child.GetName(), parent.GetName(), err)
			}
			if err := memosIn.Delete(testContext(t), parent.GetName(), metav1.DeleteOptions{PropagationPolicy: &policy}); err != nil {
				t.Fatalf("deleting the parent memo with propagation %s: %v", policy, err)
			}
			if policy == metav1.DeletePropagationForeground {
				// The parent waits, with the foregroundDeletion finalizer,
				// for the collector to delete its child first.
				got, err := memosIn.Get(testContext(t), parent.GetName(), metav1.GetOptions{})
				if err == nil && !hasFinalizer(got, metav1.FinalizerDeleteDependents) {
					t.Errorf("parent memo after a foreground delete has finalizers %q, want %s", got.GetFinalizers(), metav1.FinalizerDeleteDependents)
				} else if err != nil && !apierrors.IsNotFound(err) {
					t.Fatalf("getting the parent memo: %v", err)
				}
			}
			if policy == metav1.DeletePropagationForeground {
				// The collector removes the parent's finalizer only once its
				// blocking child is gone, so the child goes first.
				waitCollected(t, memos, ns, parent.GetName())
				if _, err := memosIn.Get(testContext(t), child.GetName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("child memo after its parent's foreground deletion finished: want 404 NotFound, got %v", err)
				}
				return
			}
			waitCollected(t, memos, ns, child.GetName())
			waitCollected(t, memos, ns, parent.GetName())
		})
	}
}

// ownedMemo builds a memo with one owner reference.
func ownedMemo(memos schema.GroupVersionResource, name string, owner metav1.OwnerReference) *unstructured.Unstructured {
	obj := hostedObject(memos, memoKind, name, 1)
	obj.SetOwnerReferences([]metav1.OwnerReference{owner})
	return obj
}

func hasFinalizer(obj *unstructured.Unstructured, finalizer string) bool {
	for _, f := range obj.GetFinalizers() {
		if f == finalizer {
			return true
		}
	}
	return false
}

// waitCollected waits until ns/name of gvr is gone.
func waitCollected(t *testing.T, gvr schema.GroupVersionResource, ns, name string) {
	t.Helper()
	var last *unstructured.Unstructured
	var lastErr error
	err := wait.PollUntilContextTimeout(testContext(t), 500*time.Millisecond, collectionTimeout, true, func(ctx context.Context) (bool, error) {
		last, lastErr = adminClient(t).Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(lastErr), nil
	})
	if err != nil {
		state := fmt.Sprintf("last error: %v", lastErr)
		if lastErr == nil {
			state = fmt.Sprintf("it still exists: deletionTimestamp %v, finalizers %q, ownerReferences %+v",
				last.GetDeletionTimestamp(), last.GetFinalizers(), last.GetOwnerReferences())
		}
		t.Fatalf("%s %s/%s was not collected within %s; %s", gvr.Resource, ns, name, collectionTimeout, state)
	}
}
