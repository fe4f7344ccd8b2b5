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
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

const (
	slipGroup = "nsdel.example.net"
	slipKind  = "Slip"

	// namespaceDeletionTimeout bounds how long the namespace controller may
	// take to empty and remove a namespace.
	namespaceDeletionTimeout = 90 * time.Second
)

// TestHostedNamespaceDeletion runs the cluster's namespace controller and
// checks that deleting a namespace deletes the hosted objects in it and then
// finishes. It must not run in parallel: it owns the cluster's controllers
// for its length.
func TestHostedNamespaceDeletion(t *testing.T) {
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := createNamespace(t, "nsdel-hosted")
	slips := serveHostedType(t, slipKind, "slips", slipGroup, ns)
	// An unrelated namespace's slip is the control: it must survive.
	otherNS := createNamespace(t, "nsdel-other")
	slipsIn := adminClient(t).Resource(slips).Namespace(ns)
	var names []string
	for i := range 3 {
		name := fmt.Sprintf("slip-%d", i)
		if _, err := slipsIn.Create(testContext(t), hostedObject(slips, slipKind, name, int64(i)), metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating slip %s/%s: %v", ns, name, err)
		}
		names = append(names, name)
	}
	if _, err := adminClient(t).Resource(slips).Namespace(otherNS).Create(testContext(t), hostedObject(slips, slipKind, "survivor", 1), metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating slip %s/survivor: %v", otherNS, err)
	}

	startControllerManager(t, "namespace-controller")

	if err := cs.CoreV1().Namespaces().Delete(testContext(t), ns, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting namespace %s: %v", ns, err)
	}
	var last *corev1.Namespace
	var lastErr error
	err = wait.PollUntilContextTimeout(testContext(t), time.Second, namespaceDeletionTimeout, true, func(ctx context.Context) (bool, error) {
		last, lastErr = cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(lastErr), nil
	})
	if err != nil {
		state := fmt.Sprintf("last error: %v", lastErr)
		if lastErr == nil {
			// The namespace controller reports what holds it up in conditions.
			state = fmt.Sprintf("it is %s with finalizers %q and conditions:", last.Status.Phase, last.Spec.Finalizers)
			for _, c := range last.Status.Conditions {
				state += fmt.Sprintf("\n  %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
			}
		}
		list, listErr := slipsIn.List(testContext(t), metav1.ListOptions{})
		if listErr == nil {
			state += fmt.Sprintf("\nslips left in it: %d", len(list.Items))
		}
		t.Fatalf("namespace %s was not deleted within %s; %s", ns, namespaceDeletionTimeout, state)
	}

	for _, name := range names {
		if _, err := slipsIn.Get(testContext(t), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("slip %s/%s after its namespace was deleted: want 404 NotFound, got %v", ns, name, err)
		}
	}
	list, err := slipsIn.List(testContext(t), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing slips in the deleted namespace %s: %v", ns, err)
	}
	if len(list.Items) != 0 {
		t.Errorf("annex still stores %d slips in the deleted namespace %s", len(list.Items), ns)
	}
	if _, err := adminClient(t).Resource(slips).Namespace(otherNS).Get(testContext(t), "survivor", metav1.GetOptions{}); err != nil {
		t.Errorf("slip %s/survivor in a namespace that was not deleted: %v", otherNS, err)
	}
}
