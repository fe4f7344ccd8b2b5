//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"annex.dev/annex/test/integration/framework"
)

const (
	postgresDeniedMessage = "postgres backends are not allowed here"
	// policyTimeout bounds how long annex may take to see a new policy
	// through its informers.
	policyTimeout = 30 * time.Second
)

// TestClusterAdmissionPolicyApplies checks that a ValidatingAdmissionPolicy
// created in the cluster is enforced on annex's resources.
func TestClusterAdmissionPolicyApplies(t *testing.T) {
	denyPostgres(t)
	res := adminClient(t).Resource(framework.StorageBackends)

	// Until annex's informers see the policy, creates succeed; each attempt
	// uses a new name so that a create that got through is told apart.
	var lastErr error
	var rejected string
	err := wait.PollUntilContextTimeout(testContext(t), time.Second, policyTimeout, true, func(ctx context.Context) (bool, error) {
		name := uniqueName("admission-pg")
		_, lastErr = res.Create(ctx, storageBackend(name, "Postgres", nil), metav1.CreateOptions{})
		if lastErr == nil {
			deleteIfExists(t, framework.StorageBackends, name)
			return false, nil
		}
		rejected = name
		return strings.Contains(lastErr.Error(), postgresDeniedMessage), nil
	})
	if err != nil {
		t.Fatalf("creating a Postgres StorageBackend was never rejected with %q within %s; last result: %v", postgresDeniedMessage, policyTimeout, lastErr)
	}
	if !apierrors.IsInvalid(lastErr) {
		t.Errorf("policy denial: want 422 Invalid (the policy sets no reason), got %d: %v", statusCode(lastErr), lastErr)
	}
	expectAbsent(t, framework.StorageBackends, rejected)

	create(t, adminClient(t), framework.StorageBackends, storageBackend(uniqueName("admission-embedded"), "Embedded", nil))
}

// denyPostgres creates, for the length of the test, a policy and binding
// that deny creating Postgres StorageBackends.
func denyPostgres(t *testing.T) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	denyCreates(t, cs, "deny-postgres", nil, admissionregistrationv1.Rule{
		APIGroups:   []string{framework.Group},
		APIVersions: []string{framework.Version},
		Resources:   []string{"storagebackends"},
	}, "object.spec.type != 'Postgres'", postgresDeniedMessage)
}

// denyCreates creates, for the length of the test, a ValidatingAdmissionPolicy
// and its binding that deny creating the objects of rule, among those
// objectSelector matches (all when nil), for which expression is false.
func denyCreates(t *testing.T, cs kubernetes.Interface, prefix string, objectSelector *metav1.LabelSelector, rule admissionregistrationv1.Rule, expression, message string) {
	t.Helper()
	name := uniqueName(prefix)
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ObjectSelector: objectSelector,
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule:       rule,
					},
				}},
			},
			Validations: []admissionregistrationv1.Validation{{
				Expression: expression,
				Message:    message,
			}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	ctx := testContext(t)
	if _, err := cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ValidatingAdmissionPolicy: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, name, metav1.DeleteOptions{})
		_ = cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Delete(ctx, name, metav1.DeleteOptions{})
	})
	if _, err := cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ValidatingAdmissionPolicyBinding: %v", err)
	}
}
