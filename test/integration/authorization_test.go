//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"annex.dev/annex/test/integration/framework"
)

// rbacTimeout bounds how long a new binding may take to reach the
// kube-apiserver's authorizer.
const rbacTimeout = 30 * time.Second

// TestAuthorizationIsClusterRBAC checks that who may use annex's API is
// decided by the cluster's RBAC. Each case uses a fresh user: annex caches
// SubjectAccessReview answers for a while.
func TestAuthorizationIsClusterRBAC(t *testing.T) {
	t.Run("a user without a role is forbidden", func(t *testing.T) {
		cfg, err := env.NewUser(uniqueName("no-role"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = dynamicFor(t, cfg).Resource(framework.StorageBackends).List(testContext(t), metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("listing storagebackends without a role: want 403 Forbidden, got %v", err)
		}
		if !strings.Contains(err.Error(), "storagebackends") {
			t.Errorf("the 403 does not say what was denied: %v", err)
		}
	})

	t.Run("a user bound to a ClusterRole may get and list, nothing more", func(t *testing.T) {
		existing := uniqueName("rbac")
		create(t, adminClient(t), framework.StorageBackends, storageBackend(existing, "Embedded", nil))

		user := uniqueName("reader")
		bindReader(t, user)
		cfg, err := env.NewUser(user)
		if err != nil {
			t.Fatal(err)
		}
		res := dynamicFor(t, cfg).Resource(framework.StorageBackends)
		var lastErr error
		err = wait.PollUntilContextTimeout(testContext(t), 500*time.Millisecond, rbacTimeout, true, func(ctx context.Context) (bool, error) {
			_, lastErr = res.List(ctx, metav1.ListOptions{})
			return lastErr == nil, nil
		})
		if err != nil {
			t.Fatalf("a user bound to get/list on storagebackends still cannot list them after %s: %v", rbacTimeout, lastErr)
		}
		if _, err := res.Get(testContext(t), existing, metav1.GetOptions{}); err != nil {
			t.Errorf("get with the get verb granted: %v", err)
		}
		name := uniqueName("rbac-create")
		_, err = res.Create(testContext(t), storageBackend(name, "Embedded", nil), metav1.CreateOptions{})
		if err == nil {
			deleteIfExists(t, framework.StorageBackends, name)
		}
		if !apierrors.IsForbidden(err) {
			t.Errorf("create without the create verb: want 403 Forbidden, got %v", err)
		}
		expectAbsent(t, framework.StorageBackends, name)
	})
}

// bindReader grants user get and list on storagebackends through a
// ClusterRole and ClusterRoleBinding, removed when the test ends.
func bindReader(t *testing.T, user string) {
	t.Helper()
	bindClusterRole(t, user, rbacv1.PolicyRule{
		APIGroups: []string{framework.Group},
		Resources: []string{"storagebackends"},
		Verbs:     []string{"get", "list"},
	})
}
