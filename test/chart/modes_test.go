//go:build integration

package chart

import (
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestInstallUninstallModes installs the chart in the external-store modes
// (TestInstallServeUninstall covers the embedded mode and what annex does
// with the configuration) and uninstalls it: the cluster accepts every
// object the chart creates, the workload is a Deployment with the store's
// flags, and nothing of annex is left behind.
func TestInstallUninstallModes(t *testing.T) {
	for mode, sets := range map[string][]string{
		"etcd":     storageModes["etcd"],
		"postgres": storageModes["postgres"],
	} {
		t.Run(mode, func(t *testing.T) {
			ctx := testContext(t, 3*time.Minute)
			release, namespace := "annex-"+mode, "annex-"+mode
			cs, dyn := clients(t)
			// A Secret namespace of its own: the default one belongs to the
			// install that created it (TestInstallServeUninstall), and is kept.
			secretNamespace := release + "-storage-secrets"
			args := []string{"install", release, chartDir, "--namespace", namespace, "--create-namespace", "--set", "image.repository=" + testImage,
				"--set", "rbac.storageSecretNamespaces={" + secretNamespace + "}"}
			for _, s := range sets {
				args = append(args, "--set", s)
			}
			if _, stderr, err := env.Helm(ctx, args...); err != nil {
				t.Fatalf("helm install in the %s mode: %v\n%s", mode, err, stderr)
			}

			dep, err := cs.AppsV1().Deployments(namespace).Get(ctx, release, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("the %s mode's Deployment: %v", mode, err)
			}
			flags := strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " ")
			want := map[string]string{"etcd": "--etcd-servers=", "postgres": "--postgres-dsn-file="}[mode]
			if !strings.Contains(flags, want) || !strings.Contains(flags, "--leader-elect") {
				t.Errorf("the %s mode's annex runs with %q, want %s and --leader-elect", mode, flags, want)
			}
			if chartCABundle(t, ctx, dyn) == "" {
				t.Error("the installed APIService carries no caBundle")
			}

			// annex never ran, so no hosted APIService exists and the
			// post-delete hook (TestInstallServeUninstall replays it) has
			// nothing to do.
			if _, stderr, err := env.Helm(ctx, "uninstall", release, "--namespace", namespace, "--no-hooks"); err != nil {
				t.Fatalf("helm uninstall: %v\n%s", err, stderr)
			}
			if _, err := dyn.Resource(apiServices).Get(ctx, "v1alpha1.annex.dev", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("APIService v1alpha1.annex.dev after uninstall: want NotFound, got %v", err)
			}
			// The Secret namespace stays, with the user's Secrets; annex's
			// access to it goes.
			if _, err := cs.CoreV1().Namespaces().Get(ctx, secretNamespace, metav1.GetOptions{}); err != nil {
				t.Errorf("the Secret namespace %s after uninstall: %v, want it kept", secretNamespace, err)
			}
			if _, err := cs.RbacV1().RoleBindings(secretNamespace).Get(ctx, release+":storage-secrets", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("RoleBinding %s:storage-secrets after uninstall: %v, want NotFound", release, err)
			}
			instance := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release}
			for _, gvr := range []schema.GroupVersionResource{
				{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
				{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
				{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"},
				{Group: "apps", Version: "v1", Resource: "deployments"},
			} {
				list, err := dyn.Resource(gvr).Namespace("").List(ctx, instance)
				if err != nil {
					t.Fatal(err)
				}
				for _, o := range list.Items {
					t.Errorf("%s %s remains after uninstall", gvr.Resource, o.GetName())
				}
			}
		})
	}
}
