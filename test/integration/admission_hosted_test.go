//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"annex.dev/annex/test/integration/framework"
)

const (
	noteGroup = "admission.example.net"
	noteKind  = "Note"

	// noteTestLabel selects the objects each webhook and policy of this
	// file applies to, so that a configuration annex still holds in its
	// informers after its subtest ended cannot affect another subtest.
	noteTestLabel = "annex-test"

	forbiddenNoteMessage = "notes labelled forbidden=true are not accepted"
	largeNoteMessage     = "a note may not be larger than 10"

	// admissionConfigTimeout bounds how long annex may take to see a new
	// webhook configuration, policy or namespace through its informers.
	admissionConfigTimeout = 30 * time.Second
	// holdFinalizer keeps a ConfigMap, and so its namespace, from going away
	// until the test removes it.
	holdFinalizer = "admission.example.net/hold"
)

// TestHostedAdmission checks that the cluster's admission configuration
// applies to a hosted type: its validating webhooks, its
// ValidatingAdmissionPolicies and the lifecycle of its namespaces.
func TestHostedAdmission(t *testing.T) {
	ns := createNamespace(t, "admission-hosted")
	notes := serveHostedType(t, noteKind, "notes", noteGroup, ns)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a validating webhook of the cluster rejects", func(t *testing.T) {
		webhook := startDenyWebhook(t, noteGroup, "notes", forbiddenNoteMessage)
		registerDenyWebhook(t, cs, webhook, admissionregistrationv1.NamespacedScope, &metav1.LabelSelector{MatchLabels: map[string]string{noteTestLabel: "webhook"}})

		forbidden := map[string]string{noteTestLabel: "webhook", "forbidden": "true"}
		rejected, lastErr := createUntilRejected(t, notes, ns, "forbidden", forbidden, 3, forbiddenNoteMessage)
		if !apierrors.IsForbidden(lastErr) {
			t.Errorf("webhook denial with code 403: want 403 Forbidden, got %d: %v", statusCode(lastErr), lastErr)
		}
		expectHostedAbsent(t, notes, ns, rejected)
		if webhook.calls.Load() == 0 {
			t.Fatal("the webhook saw no request for notes, yet the create was rejected with its message")
		}

		before := webhook.calls.Load()
		allowed := hostedObject(notes, noteKind, uniqueName("allowed"), 3)
		allowed.SetLabels(map[string]string{noteTestLabel: "webhook"})
		if _, err := adminClient(t).Resource(notes).Namespace(ns).Create(testContext(t), allowed, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating a note the webhook allows: %v", err)
		}
		if after := webhook.calls.Load(); after <= before {
			t.Errorf("the webhook saw %d requests before and %d after an accepted create, want more", before, after)
		}
	})

	t.Run("a ValidatingAdmissionPolicy of the cluster rejects", func(t *testing.T) {
		denyLargeNotes(t, cs)
		selected := map[string]string{noteTestLabel: "policy"}
		_, lastErr := createUntilRejected(t, notes, ns, "large", selected, 11, largeNoteMessage)
		if !apierrors.IsInvalid(lastErr) {
			t.Errorf("policy denial: want 422 Invalid (the policy sets no reason), got %d: %v", statusCode(lastErr), lastErr)
		}
		small := hostedObject(notes, noteKind, uniqueName("small"), 10)
		small.SetLabels(selected)
		if _, err := adminClient(t).Resource(notes).Namespace(ns).Create(testContext(t), small, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating a note the policy allows: %v", err)
		}
	})

	t.Run("NamespaceLifecycle rejects a namespace that does not exist", func(t *testing.T) {
		absent := uniqueName("absent")
		_, err := adminClient(t).Resource(notes).Namespace(absent).Create(testContext(t), hostedObject(notes, noteKind, "n", 3), metav1.CreateOptions{})
		if !apierrors.IsNotFound(err) {
			t.Fatalf("creating a note in namespace %s, which does not exist: want 404 NotFound, got %d: %v", absent, statusCode(err), err)
		}
		// A 404 for the resource itself would also be NotFound: the details
		// must name the namespace.
		details := err.(apierrors.APIStatus).Status().Details
		if details == nil || details.Kind != "namespaces" || details.Name != absent {
			t.Errorf("the NotFound does not name namespace %s: details %+v, error %v", absent, details, err)
		}
		if want := fmt.Sprintf("namespaces %q not found", absent); !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	})

	t.Run("NamespaceLifecycle rejects a Terminating namespace", func(t *testing.T) {
		terminating := terminatingNamespace(t, cs)
		// annex learns of the deletion through its namespace informer.
		var lastErr error
		err := wait.PollUntilContextTimeout(testContext(t), 500*time.Millisecond, admissionConfigTimeout, true, func(ctx context.Context) (bool, error) {
			name := uniqueName("late")
			_, lastErr = adminClient(t).Resource(notes).Namespace(terminating).Create(ctx, hostedObject(notes, noteKind, name, 3), metav1.CreateOptions{})
			if lastErr == nil {
				deleteHosted(t, notes, terminating, name)
				return false, nil
			}
			return apierrors.IsForbidden(lastErr), nil
		})
		if err != nil {
			t.Fatalf("creating a note in Terminating namespace %s was not rejected with 403 Forbidden within %s; last result: %v", terminating, admissionConfigTimeout, lastErr)
		}
		if want := "because it is being terminated"; !strings.Contains(lastErr.Error(), want) {
			t.Errorf("error %q does not say %q", lastErr, want)
		}
		list, err := adminClient(t).Resource(notes).Namespace(terminating).List(testContext(t), metav1.ListOptions{})
		if err != nil {
			t.Fatalf("listing notes in %s: %v", terminating, err)
		}
		if len(list.Items) != 0 {
			t.Errorf("namespace %s holds %d notes after every create was rejected", terminating, len(list.Items))
		}
	})
}

// createUntilRejected creates notes of the given size and labels in ns, each
// under a new name so that a create that got through is told apart, until
// one is rejected with message; creates that got through are deleted. It
// returns the rejected name and error.
func createUntilRejected(t *testing.T, gvr schema.GroupVersionResource, ns, prefix string, labels map[string]string, size int64, message string) (string, error) {
	t.Helper()
	var lastErr error
	var rejected string
	err := wait.PollUntilContextTimeout(testContext(t), time.Second, admissionConfigTimeout, true, func(ctx context.Context) (bool, error) {
		name := uniqueName(prefix)
		obj := hostedObject(gvr, noteKind, name, size)
		obj.SetLabels(labels)
		_, lastErr = adminClient(t).Resource(gvr).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{})
		if lastErr == nil {
			deleteHosted(t, gvr, ns, name)
			return false, nil
		}
		rejected = name
		return strings.Contains(lastErr.Error(), message), nil
	})
	if err != nil {
		t.Fatalf("creating a %s note in %s was never rejected with %q within %s; last result: %v", prefix, ns, message, admissionConfigTimeout, lastErr)
	}
	return rejected, lastErr
}

func deleteHosted(t *testing.T, gvr schema.GroupVersionResource, ns, name string) {
	t.Helper()
	err := adminClient(t).Resource(gvr).Namespace(ns).Delete(testContext(t), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting %s %s/%s: %v", gvr.Resource, ns, name, err)
	}
}

// expectHostedAbsent fails unless ns/name is neither gettable nor listed.
func expectHostedAbsent(t *testing.T, gvr schema.GroupVersionResource, ns, name string) {
	t.Helper()
	res := adminClient(t).Resource(gvr).Namespace(ns)
	if obj, err := res.Get(testContext(t), name, metav1.GetOptions{}); err == nil {
		t.Errorf("%s %s/%s is stored (resourceVersion %s), want it absent", gvr.Resource, ns, name, obj.GetResourceVersion())
	} else if !apierrors.IsNotFound(err) {
		t.Errorf("getting %s %s/%s: want 404 NotFound, got %v", gvr.Resource, ns, name, err)
	}
	list, err := res.List(testContext(t), metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatalf("listing %s in %s: %v", gvr.Resource, ns, err)
	}
	if len(list.Items) != 0 {
		t.Errorf("listing %s in %s by metadata.name=%s returned %d items, want none", gvr.Resource, ns, name, len(list.Items))
	}
}

// denyWebhook is a validating admission webhook served over TLS on
// 127.0.0.1 with a certificate from its own CA: it denies the objects of one
// resource labelled forbidden=true, with its message.
type denyWebhook struct {
	url      string
	caBundle []byte
	group    string
	resource string
	message  string
	// calls counts the admission requests for the resource it answered.
	calls atomic.Int32
}

// startDenyWebhook serves a webhook that denies the objects of resource in
// group labelled forbidden=true with message, until the test ends.
func startDenyWebhook(t *testing.T, group, resource, message string) *denyWebhook {
	t.Helper()
	w := &denyWebhook{group: group, resource: resource, message: message}
	w.url, w.caBundle = framework.StartWebhookServer(t, http.HandlerFunc(w.serve))
	w.url += "/validate"
	return w
}

func (w *denyWebhook) serve(rw http.ResponseWriter, req *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(req.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(rw, fmt.Sprintf("decoding AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	if review.Request.Resource.Group == w.group && review.Request.Resource.Resource == w.resource {
		w.calls.Add(1)
	}
	response := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	var obj metav1.PartialObjectMetadata
	if err := json.Unmarshal(review.Request.Object.Raw, &obj); err != nil {
		response.Allowed = false
		response.Result = &metav1.Status{Code: http.StatusBadRequest, Message: fmt.Sprintf("decoding the object: %v", err)}
	} else if obj.Labels["forbidden"] == "true" {
		response.Allowed = false
		response.Result = &metav1.Status{Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden, Message: w.message}
	}
	rw.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(rw).Encode(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Response: response,
	})
}

// registerDenyWebhook registers w with the cluster by URL for creates of
// its resource (in every version, of scope) that selector selects, until
// the test ends.
func registerDenyWebhook(t *testing.T, cs kubernetes.Interface, w *denyWebhook, scope admissionregistrationv1.ScopeType, selector *metav1.LabelSelector) {
	t.Helper()
	name := uniqueName(w.resource + "." + w.group)
	config := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: w.resource + "." + w.group,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL:      ptr.To(w.url),
				CABundle: w.caBundle,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{w.group},
					APIVersions: []string{"*"},
					Resources:   []string{w.resource},
					Scope:       ptr.To(scope),
				},
			}},
			ObjectSelector:          selector,
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}},
	}
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(testContext(t), config, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ValidatingWebhookConfiguration: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting ValidatingWebhookConfiguration %s: %v", name, err)
		}
	})
}

// denyLargeNotes creates, for the length of the test, a policy and binding
// that deny creating notes labelled for the policy subtest whose spec.size
// is above 10.
func denyLargeNotes(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	denyCreates(t, cs, "deny-large-notes", &metav1.LabelSelector{MatchLabels: map[string]string{noteTestLabel: "policy"}}, admissionregistrationv1.Rule{
		APIGroups:   []string{noteGroup},
		APIVersions: []string{"v1"},
		Resources:   []string{"notes"},
	}, "object.spec.size <= 10", largeNoteMessage)
}

// terminatingNamespace creates a namespace and deletes it while a ConfigMap
// in it holds a finalizer, so that it stays Terminating until the test ends
// whether or not a namespace controller runs: the controller cannot finish
// while content remains. At the end the finalizer is removed, so a namespace
// controller (if one ever runs) can finish the deletion.
func terminatingNamespace(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	ctx := testContext(t)
	name := uniqueName("terminating")
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	hold := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "hold", Namespace: name, Finalizers: []string{holdFinalizer}}}
	if _, err := cs.CoreV1().ConfigMaps(name).Create(ctx, hold, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ConfigMap %s/hold: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		patch := []byte(`{"metadata":{"finalizers":null}}`)
		if _, err := cs.CoreV1().ConfigMaps(name).Patch(ctx, "hold", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("releasing ConfigMap %s/hold: %v", name, err)
		}
	})
	if err := cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting namespace %s: %v", name, err)
	}
	got, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("namespace %s after its deletion: %v", name, err)
	}
	if got.Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("namespace %s is %s after its deletion, want Terminating", name, got.Status.Phase)
	}
	return name
}
