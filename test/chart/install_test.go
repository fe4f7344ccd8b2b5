//go:build integration

package chart

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregatorclient "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"

	"annex.dev/annex/test/integration/framework"
	"annex.dev/annex/test/process"
)

var apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// managedBySelector selects the APIServices of the install below, whose
// label value is <namespace>.<fullname>.
const managedBySelector = "annex.dev/managed-by=annex-system.annex"

// clients returns a clientset and a dynamic client of the test cluster.
func clients(t *testing.T) (kubernetes.Interface, dynamic.Interface) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return cs, dyn
}

// chartCABundle returns the caBundle of the APIService of annex.dev that
// the chart installs.
func chartCABundle(t *testing.T, ctx context.Context, dyn dynamic.Interface) string {
	t.Helper()
	apiService, err := dyn.Resource(apiServices).Get(ctx, "v1alpha1.annex.dev", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the chart's APIService: %v", err)
	}
	caBundle, _, _ := unstructured.NestedString(apiService.Object, "spec", "caBundle")
	return caBundle
}

// TestInstallServeUninstall installs the chart in the embedded mode, runs
// annex with exactly the configuration the chart gives its pod (there is no
// container runtime, so annex runs as a local process), checks that the
// cluster serves annex.dev and a hosted type through the chart's APIService
// with annex holding nothing but the chart's RBAC, then uninstalls and checks
// that no APIService of annex remains. On the way, annex adopts what an
// install from before per-install label values leaves: it relabels the
// hosted type's APIService when that carries the old value, and deletes one
// no HostedResource serves; and a second install's APIService, there all
// along, is left alone by annex, by its policy and by the uninstall hook.
func TestInstallServeUninstall(t *testing.T) {
	const (
		release   = "annex"
		namespace = "annex-system"
		fullname  = "annex" // the release name contains the chart's name
	)
	annexBin := os.Getenv(framework.AnnexBinEnv)
	if annexBin == "" {
		t.Fatalf("%s is not set: `make test-chart` sets it to the annex-apiserver binary taken out of the image (`make test-image-build`)", framework.AnnexBinEnv)
	}
	ctx := testContext(t, 6*time.Minute)
	cs, dyn := clients(t)
	aggregator, err := aggregatorclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}

	// A local process has no kube-proxy to map the Service's port to the
	// container's, so both are one free port here: the aggregator dials the
	// Service's port and annex listens on its container port.
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := env.Helm(ctx, "install", release, chartDir, "--namespace", namespace, "--create-namespace",
		"--set", "image.repository="+testImage,
		"--set", fmt.Sprintf("service.port=%d", port),
		"--set", fmt.Sprintf("containerPort=%d", port),
		// The audit policy is a ConfigMap the pod mounts: one more file to carry over.
		"--set", "audit.enabled=true",
	); err != nil {
		t.Fatal(err)
	}

	// The StatefulSet as the cluster stores it: what the kubelet would run.
	sts, err := cs.AppsV1().StatefulSets(namespace).Get(ctx, fullname, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if chartCABundle(t, ctx, dyn) == "" {
		t.Fatal("the installed APIService carries no caBundle")
	}

	// An APIService of this install from before per-install values, for a
	// group no HostedResource serves, and one of a second install.
	for name, a := range map[string]*apiregistrationv1.APIService{
		"unserved": newAPIService("gone.example.com", legacyManagedBy, namespace, fullname),
		"second":   newAPIService("second.example.org", "team-b.annex-b", "team-b", "annex-b"),
	} {
		a.Name = "v1." + a.Spec.Group
		a.Spec.Version = "v1"
		if _, err := aggregator.ApiregistrationV1().APIServices().Create(ctx, a, metav1.CreateOptions{}); err != nil {
			t.Fatalf("the %s APIService: %v", name, err)
		}
	}
	t.Cleanup(func() {
		for _, name := range []string{"v1.second.example.org", "v1.gone.example.com"} {
			_ = aggregator.ApiregistrationV1().APIServices().Delete(context.Background(), name, metav1.DeleteOptions{})
		}
	})

	pod := newLocalPod(t, ctx, cs, namespace, &sts.Spec.Template.Spec, sts.Spec.VolumeClaimTemplates)
	annex := pod.start(t, annexBin)

	// The Service has no endpoints without pods; point it at the local
	// process instead, as test/integration/framework does: ExternalName to
	// localhost on the same port.
	patch := `{"spec":{"type":"ExternalName","externalName":"localhost","clusterIP":null,"clusterIPs":null,"selector":null,` +
		`"ipFamilies":null,"ipFamilyPolicy":null,"internalTrafficPolicy":null}}`
	if _, _, err := env.Kubectl(ctx, "patch", "service", fullname, "-n", namespace, "--type=merge", "-p", patch); err != nil {
		t.Fatal(err)
	}

	t.Run("the cluster serves annex.dev through the chart's APIService", func(t *testing.T) {
		waitAvailable(t, ctx, dyn, "v1alpha1.annex.dev", annex)
		if _, _, err := env.Kubectl(ctx, "get", "hostedresources"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the cluster serves a hosted type through an APIService annex registers", func(t *testing.T) {
		sample := filepath.Join(chartDir, "..", "..", "config", "samples", "policyreports.yaml")
		if _, _, err := env.Kubectl(ctx, "apply", "-f", sample); err != nil {
			t.Fatal(err)
		}
		waitAvailable(t, ctx, dyn, "v1.reports.example.com", annex)
		a, err := aggregator.ApiregistrationV1().APIServices().Get(ctx, "v1.reports.example.com", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := "annex.dev/managed-by=" + a.Labels["annex.dev/managed-by"]; got != managedBySelector {
			t.Errorf("APIService v1.reports.example.com is labelled %s, want %s", got, managedBySelector)
		}
		// As an install from before per-install values left it: annex
		// relabels it, through the chart's policy.
		if _, _, err := env.Kubectl(ctx, "label", "--overwrite", "apiservice", "v1.reports.example.com", "annex.dev/managed-by="+legacyManagedBy); err != nil {
			t.Fatal(err)
		}
		last := ""
		err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			a, err := aggregator.ApiregistrationV1().APIServices().Get(ctx, "v1.reports.example.com", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			last = a.Labels["annex.dev/managed-by"]
			return "annex.dev/managed-by="+last == managedBySelector, nil
		})
		if err != nil {
			t.Errorf("APIService v1.reports.example.com labelled %s was not adopted: %v (label now %q)", legacyManagedBy, err, last)
		}
		waitAvailable(t, ctx, dyn, "v1.reports.example.com", annex)
		// The one no HostedResource serves is deleted.
		err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := aggregator.ApiregistrationV1().APIServices().Get(ctx, "v1.gone.example.com", metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Errorf("APIService v1.gone.example.com, this install's from before and served by no HostedResource, was not deleted: %v", err)
		}
		if _, _, err := env.Kubectl(ctx, "create", "namespace", "team-a"); err != nil {
			t.Fatal(err)
		}
		report := `{"apiVersion":"reports.example.com/v1","kind":"PolicyReport","metadata":{"name":"nightly","namespace":"team-a"},` +
			`"spec":{"scope":{"kind":"Deployment","name":"web"}},"summary":{"pass":3,"fail":0}}`
		if _, _, err := env.KubectlAs(ctx, env.KubeconfigFile, strings.NewReader(report), "create", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		out, _, err := env.Kubectl(ctx, "get", "policyreports", "nightly", "-n", "team-a", "-o", "jsonpath={.spec.scope.name}")
		if err != nil {
			t.Fatal(err)
		}
		if out != "web" {
			t.Errorf("PolicyReport read back through the cluster: spec.scope.name = %q, want web", out)
		}
	})

	t.Run("annex's ServiceAccount may write only the APIServices annex manages", func(t *testing.T) {
		kubeconfig := pod.serviceAccountKubeconfig(t)
		foreign := fmt.Sprintf(`{"apiVersion":"apiregistration.k8s.io/v1","kind":"APIService","metadata":{"name":"v1.foreign.example.com"},`+
			`"spec":{"group":"foreign.example.com","version":"v1","service":{"namespace":%q,"name":%q,"port":%d},`+
			`"groupPriorityMinimum":1000,"versionPriority":15}}`, namespace, fullname, port)
		_, _, err := env.KubectlAs(ctx, kubeconfig, strings.NewReader(foreign), "create", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), "annex may write only APIServices labelled") {
			t.Errorf("creating an unlabelled APIService as annex: want the chart's policy to refuse it, got %v", err)
		}
		_, _, err = env.KubectlAs(ctx, kubeconfig, nil, "delete", "apiservice", "v1alpha1.annex.dev", "--dry-run=server")
		if err == nil || !strings.Contains(err.Error(), "annex may change or delete only the APIServices of this install") {
			t.Errorf("deleting annex.dev's APIService as annex: want the chart's policy to refuse it, got %v", err)
		}
		// A group Kubernetes reserves, labelled and pointing as annex's own.
		reserved := newAPIService("metrics.k8s.io", strings.TrimPrefix(managedBySelector, "annex.dev/managed-by="), namespace, fullname)
		_, _, err = env.KubectlAs(ctx, kubeconfig, encode(t, []*unstructured.Unstructured{toUnstructured(t, reserved)}), "create", "--dry-run=server", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), "Kubernetes reserves groups without a dot") {
			t.Errorf("registering metrics.k8s.io as annex: want the chart's policy to refuse it, got %v", err)
		}
		// A second install's APIService.
		_, _, err = env.KubectlAs(ctx, kubeconfig, nil, "delete", "apiservice", "v1.second.example.org", "--dry-run=server")
		if err == nil || !strings.Contains(err.Error(), "annex may change or delete only the APIServices of this install") {
			t.Errorf("deleting a second install's APIService as annex: want the chart's policy to refuse it, got %v", err)
		}
	})

	t.Run("annex may read Secrets only where StorageBackends keep theirs", func(t *testing.T) {
		kubeconfig := pod.serviceAccountKubeconfig(t)
		for ns, want := range map[string]string{"annex-storage-secrets": "yes", namespace: "no", "kube-system": "no", "default": "no"} {
			out, _, _ := env.KubectlAs(ctx, kubeconfig, nil, "auth", "can-i", "get", "secrets", "-n", ns)
			if got := strings.TrimSpace(out); got != want {
				t.Errorf("may annex get Secrets in %s? %q, want %q", ns, got, want)
			}
		}
		// annex, run with the chart's flags, refuses a StorageBackend that
		// names its own serving Secret.
		sb := fmt.Sprintf(`{"apiVersion":"annex.dev/v1alpha1","kind":"StorageBackend","metadata":{"name":"serving-key"},`+
			`"spec":{"type":"Postgres","postgres":{"dsnSecretRef":{"namespace":%q,"name":%q,"key":"tls.key"}}}}`, namespace, fullname+"-tls")
		_, _, err := env.KubectlAs(ctx, env.KubeconfigFile, strings.NewReader(sb), "create", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), "spec.postgres.dsnSecretRef.namespace") || !strings.Contains(err.Error(), "annex-storage-secrets") {
			t.Errorf("creating a StorageBackend that names annex's serving Secret: %v, want 422 on spec.postgres.dsnSecretRef.namespace", err)
		}
	})

	t.Run("annex needed nothing beyond the chart's RBAC", func(t *testing.T) {
		log, err := os.ReadFile(pod.log)
		if err != nil {
			t.Fatal(err)
		}
		var denied []string
		for _, line := range strings.Split(string(log), "\n") {
			// klog quotes the user as \"system:serviceaccount:...\" inside err="...".
			if strings.Contains(line, "is forbidden: User") && strings.Contains(line, "system:serviceaccount:") {
				denied = append(denied, line)
			}
		}
		if len(denied) > 0 {
			t.Errorf("the cluster refused annex %d requests:\n%s", len(denied), strings.Join(denied, "\n"))
		}
	})

	// Uninstall. annex stops first, as its pods would when Helm deletes the
	// StatefulSet.
	if err := annex.Stop(time.Minute); err != nil {
		t.Errorf("stopping annex: %v", err)
	}
	hooksOut, _, err := env.Helm(ctx, "get", "hooks", release, "--namespace", namespace)
	if err != nil {
		t.Fatal(err)
	}
	hooks := decodeManifests(t, hooksOut)
	// The post-delete hook Job never completes without a container runtime,
	// so `helm uninstall` runs without hooks and the test runs the hook below
	// exactly as its Job would.
	if _, _, err := env.Helm(ctx, "uninstall", release, "--namespace", namespace, "--no-hooks"); err != nil {
		t.Fatal(err)
	}
	hosted, err := dyn.Resource(apiServices).List(ctx, metav1.ListOptions{LabelSelector: managedBySelector})
	if err != nil {
		t.Fatal(err)
	}
	if len(hosted.Items) == 0 {
		t.Fatal("before the hook runs, the hosted group's APIServices must still exist, or this test proves nothing")
	}
	runUninstallHook(t, ctx, cs, namespace, hooks, annexBin, sts.Spec.Template.Spec.Containers[0].Image)

	t.Run("no APIService of annex remains", func(t *testing.T) {
		if _, err := dyn.Resource(apiServices).Get(ctx, "v1.second.example.org", metav1.GetOptions{}); err != nil {
			t.Errorf("a second install's APIService after uninstall: %v, want it kept", err)
		}
		if _, err := dyn.Resource(apiServices).Get(ctx, "v1alpha1.annex.dev", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("APIService v1alpha1.annex.dev after uninstall: want NotFound, got %v", err)
		}
		left, err := dyn.Resource(apiServices).List(ctx, metav1.ListOptions{LabelSelector: managedBySelector})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range left.Items {
			t.Errorf("APIService %s (%s) remains after uninstall", a.GetName(), managedBySelector)
		}
		// The Secret namespace stays, with the Secrets the user put there.
		if _, err := cs.CoreV1().Namespaces().Get(ctx, "annex-storage-secrets", metav1.GetOptions{}); err != nil {
			t.Errorf("the namespace annex-storage-secrets after uninstall: %v, want it kept", err)
		}
		instance := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release}
		for _, gvr := range []schema.GroupVersionResource{
			{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
			{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
			{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"},
		} {
			list, err := dyn.Resource(gvr).List(ctx, instance)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range list.Items {
				t.Errorf("%s %s remains after uninstall", gvr.Resource, o.GetName())
			}
		}
	})
}

// runUninstallHook does what the post-delete hook does: creates its
// ServiceAccount and RBAC, runs the Job's container (command, arguments,
// environment) from annex's binary with that ServiceAccount's token, then
// deletes them again (hook-delete-policy hook-succeeded).
func runUninstallHook(t *testing.T, ctx context.Context, cs kubernetes.Interface, namespace string, hooks []*unstructured.Unstructured, annexBin, annexImage string) {
	t.Helper()
	var job batchv1.Job
	var rest []*unstructured.Unstructured
	for _, h := range hooks {
		if h.GetAnnotations()["helm.sh/hook"] != "post-delete" {
			t.Fatalf("unexpected hook %s %s: %v", h.GetKind(), h.GetName(), h.GetAnnotations())
		}
		if h.GetKind() == "Job" {
			fromUnstructured(t, h, &job)
			continue
		}
		rest = append(rest, h)
	}
	if job.Name == "" {
		t.Fatal("the chart renders no uninstall Job")
	}
	if _, _, err := env.KubectlAs(ctx, env.KubeconfigFile, encode(t, rest), "create", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	pod := newLocalPod(t, ctx, cs, namespace, &job.Spec.Template.Spec, nil)
	if image := job.Spec.Template.Spec.Containers[0].Image; image != annexImage {
		t.Errorf("the uninstall hook runs image %s, annex %s: an air-gapped install would have to mirror both", image, annexImage)
	}
	out, err := pod.run(t, ctx, map[string]string{"/annex-apiserver": annexBin})
	if err != nil {
		t.Fatalf("the uninstall hook failed: %v\n%s", err, out)
	}
	t.Logf("uninstall hook: %s", strings.TrimSpace(out))
	if _, _, err := env.KubectlAs(ctx, env.KubeconfigFile, encode(t, rest), "delete", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// waitAvailable waits until the cluster reports the APIService Available.
func waitAvailable(t *testing.T, ctx context.Context, dyn dynamic.Interface, name string, annex *process.Process) {
	t.Helper()
	last := "not found"
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		if exited, err := annex.Exited(); exited {
			return false, fmt.Errorf("annex exited: %v", err)
		}
		a, err := dyn.Resource(apiServices).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		conditions, _, _ := unstructured.NestedSlice(a.Object, "status", "conditions")
		for _, c := range conditions {
			c, _ := c.(map[string]any)
			if c["type"] == "Available" {
				last = fmt.Sprintf("Available=%v %v: %v", c["status"], c["reason"], c["message"])
				return c["status"] == "True", nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("APIService %s did not become Available: %v (last: %s)", name, err, last)
	}
}

// localPod runs a pod's first container as a local process: the files of its
// Secret and ConfigMap volumes written under root at their mount paths, its
// emptyDirs and claims as empty directories there, and the Kubernetes
// ServiceAccount credentials the kubelet would mount.
type localPod struct {
	spec      *corev1.PodSpec
	namespace string
	// root stands in for the container's /: every mount path lives under it.
	root string
	// mounts are the container's mount paths, longest first.
	mounts []string
	// saDir holds token, ca.crt and namespace of the pod's ServiceAccount.
	saDir string
	// inCluster says whether saDir can be bind-mounted where client-go's
	// rest.InClusterConfig reads it (a private mount namespace, as root).
	inCluster bool
	log       string
}

func newLocalPod(t *testing.T, ctx context.Context, cs kubernetes.Interface, namespace string, spec *corev1.PodSpec, claims []corev1.PersistentVolumeClaim) *localPod {
	t.Helper()
	dir := t.TempDir()
	p := &localPod{spec: spec, namespace: namespace, root: filepath.Join(dir, "root"), saDir: filepath.Join(dir, "serviceaccount"), log: filepath.Join(dir, "container.log")}
	// The container's / (its working directory), even with no volumes.
	if err := os.MkdirAll(p.root, 0o755); err != nil {
		t.Fatal(err)
	}
	c := spec.Containers[0]
	for _, m := range c.VolumeMounts {
		target := filepath.Join(p.root, m.MountPath)
		if err := os.MkdirAll(target, 0o755); err != nil {
			t.Fatal(err)
		}
		p.mounts = append(p.mounts, m.MountPath)
		if isClaim(claims, m.Name) {
			continue // a fresh claim is an empty directory
		}
		vol := volume(t, spec, m.Name)
		switch {
		case vol.EmptyDir != nil:
		case vol.Secret != nil:
			s, err := cs.CoreV1().Secrets(namespace).Get(ctx, vol.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			writeVolume(t, target, s.Data, vol.Secret.Items)
		case vol.ConfigMap != nil:
			cm, err := cs.CoreV1().ConfigMaps(namespace).Get(ctx, vol.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			data := map[string][]byte{}
			for k, v := range cm.Data {
				data[k] = []byte(v)
			}
			writeVolume(t, target, data, vol.ConfigMap.Items)
		default:
			t.Fatalf("volume %s: only Secret, ConfigMap, emptyDir and claim volumes are carried over", m.Name)
		}
	}
	sort.Slice(p.mounts, func(i, j int) bool { return len(p.mounts[i]) > len(p.mounts[j]) })

	// The kubelet mounts a token of the pod's ServiceAccount; this one comes
	// from the TokenRequest API for the same account, so the process has
	// exactly the chart's RBAC and nothing more.
	expiry := int64(3600)
	token, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, spec.ServiceAccountName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for ServiceAccount %s/%s: %v", namespace, spec.ServiceAccountName, err)
	}
	if err := os.MkdirAll(p.saDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"token": []byte(token.Status.Token), "ca.crt": env.Config.CAData, "namespace": []byte(namespace)} {
		if err := os.WriteFile(filepath.Join(p.saDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.inCluster = privateMountsWork()
	if p.inCluster {
		t.Logf("ServiceAccount %s/%s: its token is bind-mounted at /var/run/secrets/kubernetes.io/serviceaccount in a private mount namespace", namespace, spec.ServiceAccountName)
	} else {
		t.Logf("no private mount namespace here (needs root and unshare): the ServiceAccount's token is passed as a kubeconfig instead of the in-cluster files")
	}
	return p
}

func isClaim(claims []corev1.PersistentVolumeClaim, name string) bool {
	for _, c := range claims {
		if c.Name == name {
			return true
		}
	}
	return false
}

func volume(t *testing.T, spec *corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("volume %s is mounted but not defined", name)
	return corev1.Volume{}
}

// writeVolume writes a Secret's or ConfigMap's data as the kubelet projects
// it: every key as a file, or only the listed items at their paths.
func writeVolume(t *testing.T, dir string, data map[string][]byte, items []corev1.KeyToPath) {
	t.Helper()
	if len(items) == 0 {
		for k := range data {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			t.Fatalf("volume item %s: no such key", it.Key)
		}
		if err := os.WriteFile(filepath.Join(dir, it.Path), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// privateMountsWork probes for a private mount namespace.
func privateMountsWork() bool {
	if os.Geteuid() != 0 {
		return false
	}
	return exec.Command("unshare", "--mount", "--propagation", "private", "true").Run() == nil
}

// rewrite maps a path inside the container to the same path under root. The
// container's files are not at / on this machine, so every argument and
// environment value that names a file under a mount is rewritten; a value
// naming any other absolute path is an error, since that file would be
// missing in the pod too.
func (p *localPod) rewrite(t *testing.T, value string) string {
	t.Helper()
	key, path, ok := strings.Cut(value, "=")
	if !ok {
		key, path = "", value
	} else {
		key += "="
	}
	if !strings.HasPrefix(path, "/") {
		return value
	}
	for _, m := range p.mounts {
		if path == m || strings.HasPrefix(path, m+"/") {
			return key + filepath.Join(p.root, path)
		}
	}
	if key == "--authorization-always-allow-paths=" {
		return value // URL paths, not files
	}
	t.Fatalf("%q names a file outside the pod's volumes", value)
	return ""
}

// command builds the container's command line and environment. commands maps
// the container's command to a local binary.
func (p *localPod) command(t *testing.T, commands map[string]string) (bin string, args, envv []string) {
	t.Helper()
	c := p.spec.Containers[0]
	if len(c.Command) != 1 || commands[c.Command[0]] == "" {
		t.Fatalf("container command %v: no local binary for it", c.Command)
	}
	for _, a := range c.Args {
		args = append(args, p.rewrite(t, a))
	}
	envv = []string{"PATH=" + os.Getenv("PATH")}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Fatalf("env %s: valueFrom is not carried over", e.Name)
		}
		envv = append(envv, e.Name+"="+p.rewrite(t, e.Value))
	}
	host, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	if !p.inCluster {
		kubeconfig := p.serviceAccountKubeconfig(t)
		// The server takes three kubeconfig flags; its subcommands and
		// other programs read $KUBECONFIG.
		if c.Command[0] == "/annex-apiserver" && (len(c.Args) == 0 || strings.HasPrefix(c.Args[0], "-")) {
			args = append(args, "--kubeconfig="+kubeconfig, "--authentication-kubeconfig="+kubeconfig, "--authorization-kubeconfig="+kubeconfig)
		} else {
			envv = append(envv, "KUBECONFIG="+kubeconfig)
		}
		return commands[c.Command[0]], args, envv
	}
	// What the kubelet sets in every container, and the ServiceAccount's
	// files where client-go's rest.InClusterConfig reads them: bind-mounted in
	// a private mount namespace over a tmpfs /var/run, so the machine's own
	// /var/run is untouched.
	envv = append(envv, "KUBERNETES_SERVICE_HOST="+host.Hostname(), "KUBERNETES_SERVICE_PORT="+host.Port())
	script := `set -e; run=$(readlink -f /var/run); mount -t tmpfs tmpfs "$run"; ` +
		`mkdir -p "$run/secrets/kubernetes.io/serviceaccount"; mount --bind "$0" "$run/secrets/kubernetes.io/serviceaccount"; exec "$@"`
	args = append([]string{"--mount", "--propagation", "private", "sh", "-c", script, p.saDir, commands[c.Command[0]]}, args...)
	return "unshare", args, envv
}

// start runs the container as a background process, its output to p.log.
func (p *localPod) start(t *testing.T, annexBin string) *process.Process {
	t.Helper()
	bin, args, envv := p.command(t, map[string]string{"/annex-apiserver": annexBin})
	out, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	if bin == "unshare" {
		if bin, err = exec.LookPath(bin); err != nil {
			t.Fatal(err)
		}
	}
	if envv == nil {
		envv = []string{} // the container's environment only, none of the test's
	}
	proc, err := process.Start(bin, args, envv, p.root, out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if exited, _ := proc.Exited(); !exited {
			_ = proc.Stop(time.Minute)
		}
		if t.Failed() {
			t.Logf("annex's log:%s", process.FileTail(p.log, 60))
		}
	})
	return proc
}

// run runs the container to completion and returns its output.
func (p *localPod) run(t *testing.T, ctx context.Context, commands map[string]string) (string, error) {
	t.Helper()
	bin, args, envv := p.command(t, commands)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = envv
	cmd.Dir = p.root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// serviceAccountKubeconfig writes a kubeconfig holding the pod's
// ServiceAccount token, for requests made as annex.
func (p *localPod) serviceAccountKubeconfig(t *testing.T) string {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(p.saDir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cluster"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	cfg.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: string(token)}
	cfg.Contexts["sa"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: "sa", Namespace: p.namespace}
	cfg.CurrentContext = "sa"
	path := filepath.Join(filepath.Dir(p.saDir), "serviceaccount.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func toUnstructured(t *testing.T, a *apiregistrationv1.APIService) *unstructured.Unstructured {
	t.Helper()
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(a)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: obj}
	u.SetAPIVersion("apiregistration.k8s.io/v1")
	u.SetKind("APIService")
	return u
}
