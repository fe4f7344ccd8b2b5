//go:build integration

package uninstall_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	certutil "k8s.io/client-go/util/cert"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregatorclient "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"k8s.io/utils/ptr"

	"annex.dev/annex/pkg/cmd/uninstall"
	"annex.dev/annex/test/integration/framework"
)

// TestDeleteHostedAPIServices runs `annex-apiserver delete-hosted-apiservices`
// against a real kube-apiserver as the chart's hook does: it deletes the
// APIServices of its install (its label value, or the value from before
// installs had their own, pointing at its Service) and no other, not even
// another install's that carries the same label, and a second run finds
// nothing to do.
func TestDeleteHostedAPIServices(t *testing.T) {
	// A CA's certificate for the APIServices, which no Service answers for.
	caBundle, _, err := certutil.GenerateSelfSignedCertKey("unused-ca", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	env, err := framework.StartControlPlane(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			env.KeepDir = true
		}
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	client, err := aggregatorclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	apiServices := client.ApiregistrationV1().APIServices()
	const value = "annex-system.annex"
	for group, tc := range map[string]struct {
		labels  map[string]string
		service string
	}{
		"reports.example.com": {map[string]string{"annex.dev/managed-by": value}, "annex"},
		// An APIService of this install from before it had a value of its own.
		"runs.example.com": {map[string]string{"annex.dev/managed-by": "annex-apiserver"}, "annex"},
		// Another install's, with the old value or its own.
		"legacy.example.com": {map[string]string{"annex.dev/managed-by": "annex-apiserver"}, "other"},
		"other.example.com":  {map[string]string{"annex.dev/managed-by": "team-b.other"}, "other"},
		// This install's value, but not its Service.
		"relabelled.example.com": {map[string]string{"annex.dev/managed-by": value}, "other"},
		"plain.example.com":      {nil, "annex"},
	} {
		_, err := apiServices.Create(ctx, &apiregistrationv1.APIService{
			ObjectMeta: metav1.ObjectMeta{Name: "v1." + group, Labels: tc.labels},
			Spec: apiregistrationv1.APIServiceSpec{
				Group: group, Version: "v1", GroupPriorityMinimum: 1000, VersionPriority: 15,
				Service: &apiregistrationv1.ServiceReference{Namespace: "annex-system", Name: tc.service, Port: ptr.To[int32](443)},
				// No Service answers in this test; the APIService only has to exist.
				CABundle: caBundle,
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}

	run := func() string {
		t.Helper()
		var out bytes.Buffer
		cmd := uninstall.NewCommand()
		cmd.SetArgs([]string{"--kubeconfig=" + env.KubeconfigFile, "--timeout=1m",
			"--apiservice-managed-by=" + value, "--apiservice-namespace=annex-system", "--apiservice-service-name=annex"})
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		if err := cmd.ExecuteContext(ctx); err != nil {
			t.Fatalf("delete-hosted-apiservices: %v\n%s", err, out.String())
		}
		return out.String()
	}
	out := run()
	for _, name := range []string{"v1.reports.example.com", "v1.runs.example.com"} {
		if !strings.Contains(out, `"`+name+`" deleted`) {
			t.Errorf("the output does not report %s deleted:\n%s", name, out)
		}
		// The command returns once they are gone, so no polling here.
		if _, err := apiServices.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("APIService %s: want NotFound after the command returned, got %v", name, err)
		}
	}
	for _, name := range []string{"v1.legacy.example.com", "v1.other.example.com", "v1.relabelled.example.com", "v1.plain.example.com"} {
		if _, err := apiServices.Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("APIService %s is not this install's and must stay: %v", name, err)
		}
	}
	if out := run(); !strings.Contains(out, "No APIServices of this install") {
		t.Errorf("a second run: want nothing to delete, got:\n%s", out)
	}
}
