//go:build integration

package chart

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregatorclient "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"k8s.io/utils/ptr"
)

// legacyManagedBy is the value of annex.dev/managed-by that every install
// used before each had its own.
const legacyManagedBy = "annex-apiserver"

// rendered is what one render of the chart says about an install's
// APIServices: the label value annex is given, the uninstall hook's
// arguments, and the policy's variable.
type rendered struct {
	podArgs, hookArgs map[string]string
	policyValue       string
}

func renderInstall(t *testing.T, ctx context.Context, release, namespace string, sets ...string) rendered {
	t.Helper()
	out, err := helmTemplate(ctx, release, namespace, append([]string{"image.repository=" + testImage}, sets...))
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeManifests(t, out)
	var r rendered
	var sts appsv1.StatefulSet
	fromUnstructured(t, find(t, objs, "StatefulSet", ""), &sts)
	r.podArgs = flagMap(sts.Spec.Template.Spec.Containers[0].Args)
	var job batchv1.Job
	fromUnstructured(t, find(t, objs, "Job", ""), &job)
	r.hookArgs = flagMap(job.Spec.Template.Spec.Containers[0].Args)
	variables, _, _ := unstructured.NestedSlice(find(t, objs, "ValidatingAdmissionPolicy", "").Object, "spec", "variables")
	for _, v := range variables {
		if v := v.(map[string]any); v["name"] == "value" {
			r.policyValue = strings.Trim(v["expression"].(string), "'")
		}
	}
	return r
}

func flagMap(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		m[k] = v
	}
	return m
}

// TestManagedByValue renders installs of different releases and namespaces:
// each has a value of annex.dev/managed-by of its own, a valid label value
// even from the longest names, and annex, its uninstall hook and its policy
// agree on it and on annex's Service.
func TestManagedByValue(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	long := strings.Repeat("n", 63)
	for _, tc := range []struct {
		name, release, namespace string
		sets                     []string
		want, fullname           string
	}{
		{"the default install", "annex", "annex-system", nil, "annex-system.annex", "annex"},
		{"a second install", "annex-b", "team-b", nil, "team-b.annex-b", "annex-b"},
		{"a fullnameOverride", "r", "team-c", []string{"fullnameOverride=reports"}, "team-c.reports", "reports"},
		{"names too long for a label value", "r", long, []string{"fullnameOverride=" + strings.Repeat("f", 62) + "1"}, "", strings.Repeat("f", 62) + "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := renderInstall(t, ctx, tc.release, tc.namespace, tc.sets...)
			value := r.podArgs["--apiservice-managed-by"]
			if tc.want != "" && value != tc.want {
				t.Errorf("--apiservice-managed-by=%s, want %s", value, tc.want)
			}
			if msgs := validation.IsValidLabelValue(value); value == "" || len(msgs) > 0 {
				t.Errorf("--apiservice-managed-by=%q is not a label value: %v", value, msgs)
			}
			if tc.want == "" && !strings.HasPrefix(value, tc.namespace[:40]) {
				t.Errorf("--apiservice-managed-by=%s: a long value keeps a readable prefix of the namespace", value)
			}
			if r.hookArgs["--apiservice-managed-by"] != value || r.policyValue != value {
				t.Errorf("the uninstall hook's value %q and the policy's %q differ from annex's %q", r.hookArgs["--apiservice-managed-by"], r.policyValue, value)
			}
			for _, args := range []map[string]string{r.podArgs, r.hookArgs} {
				if args["--apiservice-namespace"] != tc.namespace || args["--apiservice-service-name"] != tc.fullname {
					t.Errorf("annex's Service is %s/%s, want %s/%s", args["--apiservice-namespace"], args["--apiservice-service-name"], tc.namespace, tc.fullname)
				}
			}
		})
	}
	// Two long names that differ only beyond the readable prefix still get
	// values of their own.
	a := renderInstall(t, ctx, "r", long, "fullnameOverride="+strings.Repeat("f", 62)+"1").podArgs["--apiservice-managed-by"]
	b := renderInstall(t, ctx, "r", long, "fullnameOverride="+strings.Repeat("f", 62)+"2").podArgs["--apiservice-managed-by"]
	if a == b {
		t.Errorf("two installs whose names differ at the end share the value %s", a)
	}
}

// TestAPIServicePolicy applies the chart's ValidatingAdmissionPolicy and
// RBAC to the test cluster and sends APIService writes as annex's
// ServiceAccount: the policy refuses the groups Kubernetes reserves, annex's
// own, and those rbac.apiServiceGroups leaves out; it refuses any label but
// the install's own value, and any write to another install's APIServices,
// even one labelled with the value all installs used before; and it lets the
// install relabel and delete its own APIServices from before.
func TestAPIServicePolicy(t *testing.T) {
	const (
		release   = "policy"
		namespace = "annex-policy"
		fullname  = "policy-annex"
		value     = namespace + "." + fullname
		user      = "system:serviceaccount:" + namespace + ":" + fullname
	)
	ctx := testContext(t, 3*time.Minute)
	out, err := helmTemplate(ctx, release, namespace, []string{"image.repository=" + testImage,
		"rbac.apiServiceGroups={reports.example.com,*.example.org}"})
	if err != nil {
		t.Fatal(err)
	}
	var apply []*unstructured.Unstructured
	for _, o := range decodeManifests(t, out) {
		switch k := o.GetKind(); {
		case k == "ValidatingAdmissionPolicy", k == "ValidatingAdmissionPolicyBinding",
			(k == "ClusterRole" || k == "ClusterRoleBinding") && o.GetName() == fullname:
			apply = append(apply, o)
		}
	}
	if len(apply) != 4 {
		t.Fatalf("want the policy, its binding, annex's ClusterRole and its binding; found %d objects", len(apply))
	}
	if _, _, err := env.KubectlAs(ctx, env.KubeconfigFile, encode(t, apply), "create", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, _, err := env.KubectlAs(context.Background(), env.KubeconfigFile, encode(t, apply), "delete", "-f", "-"); err != nil {
			t.Errorf("cleaning up: %v", err)
		}
	})

	admin, err := aggregatorclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	asAnnex := rest.CopyConfig(env.Config)
	asAnnex.Impersonate = rest.ImpersonationConfig{UserName: user}
	annex, err := aggregatorclient.NewForConfig(asAnnex)
	if err != nil {
		t.Fatal(err)
	}
	dryRun := []string{metav1.DryRunAll}
	create := func(a *apiregistrationv1.APIService) error {
		_, err := annex.ApiregistrationV1().APIServices().Create(ctx, a, metav1.CreateOptions{DryRun: dryRun})
		return err
	}

	// The policy applies once the kube-apiserver has loaded it.
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return create(newAPIService("metrics.k8s.io", value, namespace, fullname)) != nil, nil
	})
	if err != nil {
		t.Fatalf("the policy did not take effect: %v", err)
	}

	const (
		reserved     = "Kubernetes reserves groups without a dot and those under k8s.io and kubernetes.io"
		annexOwn     = "annex.dev is the API of annex itself"
		notListed    = "rbac.apiServiceGroups allows only reports.example.com, *.example.org"
		notThisLabel = "annex may write only APIServices labelled annex.dev/managed-by=" + value + " that point at its own Service " + namespace + "/" + fullname
		notThisOne   = "annex may change or delete only the APIServices of this install"
	)
	for _, tc := range []struct {
		name       string
		apiService *apiregistrationv1.APIService
		refusal    string
	}{
		{"a listed group", newAPIService("reports.example.com", value, namespace, fullname), ""},
		{"a group under a listed suffix", newAPIService("audit.example.org", value, namespace, fullname), ""},
		{"a built-in group without a dot", newAPIService("apps", value, namespace, fullname), reserved},
		{"a group under k8s.io", newAPIService("metrics.k8s.io", value, namespace, fullname), reserved},
		{"k8s.io itself", newAPIService("k8s.io", value, namespace, fullname), reserved},
		{"a group under kubernetes.io", newAPIService("storage.kubernetes.io", value, namespace, fullname), reserved},
		{"annex.dev", newAPIService("annex.dev", value, namespace, fullname), annexOwn},
		{"a group under annex.dev", newAPIService("extra.annex.dev", value, namespace, fullname), annexOwn},
		{"a group not listed", newAPIService("other.example.com", value, namespace, fullname), notListed},
		{"the domain of a suffix", newAPIService("example.org", value, namespace, fullname), notListed},
		{"the value all installs used before", newAPIService("reports.example.com", legacyManagedBy, namespace, fullname), notThisLabel},
		{"a second install's value", newAPIService("reports.example.com", "team-b.annex-b", namespace, fullname), notThisLabel},
		{"no label", newAPIService("reports.example.com", "", namespace, fullname), notThisLabel},
		{"another Service", newAPIService("reports.example.com", value, "team-b", "annex-b"), notThisLabel},
	} {
		t.Run("create: "+tc.name, func(t *testing.T) {
			checkRefusal(t, create(tc.apiService), tc.refusal)
		})
	}

	// APIServices that exist: this install's from before it had a value of
	// its own, a second install's, and one of another install labelled with
	// the value all installs used before.
	mine := newAPIService("reports.example.com", legacyManagedBy, namespace, fullname)
	second := newAPIService("second.example.org", "team-b.annex-b", "team-b", "annex-b")
	shared := newAPIService("shared.example.org", legacyManagedBy, "team-b", "annex-b")
	for _, a := range []*apiregistrationv1.APIService{mine, second, shared} {
		created, err := admin.ApiregistrationV1().APIServices().Create(ctx, a, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		*a = *created
		t.Cleanup(func() {
			if err := admin.ApiregistrationV1().APIServices().Delete(context.Background(), a.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("cleaning up APIService %s: %v", a.Name, err)
			}
		})
	}
	update := func(a *apiregistrationv1.APIService, label, serviceNamespace, serviceName string) error {
		// The aggregator writes the APIService's status: change the latest.
		u, err := admin.ApiregistrationV1().APIServices().Get(ctx, a.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		u.Labels = map[string]string{"annex.dev/managed-by": label}
		u.Spec.Service.Namespace, u.Spec.Service.Name = serviceNamespace, serviceName
		_, err = annex.ApiregistrationV1().APIServices().Update(ctx, u, metav1.UpdateOptions{DryRun: dryRun})
		return err
	}
	del := func(a *apiregistrationv1.APIService) error {
		return annex.ApiregistrationV1().APIServices().Delete(ctx, a.Name, metav1.DeleteOptions{DryRun: dryRun})
	}
	t.Run("this install relabels its APIService from before", func(t *testing.T) {
		checkRefusal(t, update(mine, value, namespace, fullname), "")
	})
	t.Run("this install deletes its APIService from before", func(t *testing.T) {
		checkRefusal(t, del(mine), "")
	})
	t.Run("this install's APIService from before must be relabelled when written", func(t *testing.T) {
		checkRefusal(t, update(mine, legacyManagedBy, namespace, fullname), notThisLabel)
	})
	for name, a := range map[string]*apiregistrationv1.APIService{"a second install's": second, "another install's with the value from before": shared} {
		t.Run("taking over "+name, func(t *testing.T) {
			checkRefusal(t, update(a, value, namespace, fullname), notThisOne)
		})
		t.Run("deleting "+name, func(t *testing.T) {
			checkRefusal(t, del(a), notThisOne)
		})
	}
}

// unusedCABundle is a CA's certificate for the APIServices no Service
// answers for.
var unusedCABundle = func() []byte {
	certPEM, _, err := certutil.GenerateSelfSignedCertKey("unused-ca", nil, nil)
	if err != nil {
		panic(err)
	}
	return certPEM
}()

// newAPIService is an APIService for group (version v1alpha9, which nothing
// serves), labelled annex.dev/managed-by=label (none if empty), pointing at
// Service namespace/name.
func newAPIService(group, label, namespace, name string) *apiregistrationv1.APIService {
	a := &apiregistrationv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: "v1alpha9." + group},
		Spec: apiregistrationv1.APIServiceSpec{
			Group: group, Version: "v1alpha9", GroupPriorityMinimum: 1000, VersionPriority: 15,
			Service: &apiregistrationv1.ServiceReference{Namespace: namespace, Name: name, Port: ptr.To[int32](443)},
			// No Service answers here; the APIService only has to be written.
			CABundle: unusedCABundle,
		},
	}
	if label != "" {
		a.Labels = map[string]string{"annex.dev/managed-by": label}
	}
	return a
}

// checkRefusal checks that err is the policy's refusal with message want, or
// no error when want is empty.
func checkRefusal(t *testing.T, err error, want string) {
	t.Helper()
	var status apierrors.APIStatus
	switch {
	case want == "" && err != nil:
		t.Errorf("want it allowed, got %v", err)
	case want == "":
	case !apierrors.IsForbidden(err) || !errors.As(err, &status):
		t.Errorf("want 403 %q, got %v", want, err)
	case !strings.Contains(status.Status().Message, want):
		t.Errorf("want 403 %q, got %q", want, status.Status().Message)
	}
}
