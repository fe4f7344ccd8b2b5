//go:build integration

package chart

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/cert"
	"sigs.k8s.io/yaml"
)

// The storage modes and TLS sources that render.
var (
	storageModes = map[string][]string{
		"embedded": nil,
		"etcd": {
			"storage.mode=etcd",
			"storage.etcd.endpoints={https://etcd-0.etcd:2379,https://etcd-1.etcd:2379}",
			"storage.etcd.tls.secretName=etcd-client",
			"replicas=3",
		},
		"postgres": {
			"storage.mode=postgres",
			"storage.postgres.dsnSecret.name=annex-postgres",
			"replicas=2",
		},
	}
	tlsSources = []string{"chart", "certManager", "existingSecret"}
	// Every optional object and flag, on in one variant of each combination.
	allOptions = []string{
		"networkPolicy.enabled=true",
		// As docs/operations.md shows: a control-plane node and its tunnel address.
		"networkPolicy.ingressFrom[0].ipBlock.cidr=10.0.0.10/32",
		"networkPolicy.ingressFrom[1].ipBlock.cidr=192.168.34.0/32",
		"metrics.serviceMonitor.enabled=true",
		"metrics.allowUnauthenticated=true",
		"metrics.readerSubjects[0].kind=ServiceAccount",
		"metrics.readerSubjects[0].name=prometheus",
		"metrics.readerSubjects[0].namespace=monitoring",
		"audit.enabled=true",
		"rbac.hostedResources[0].apiGroup=reports.example.com",
		"rbac.hostedResources[0].resources={policyreports}",
		"rbac.apiServiceGroups={reports.example.com,*.example.org}",
		"adoption.customResourceDefinitions={policyreports.wgpolicyk8s.io}",
		"extraArgs={--etcd-compaction-interval=10m}",
		"extraEnv[0].name=ANNEX_CHART_TEST",
		"extraEnv[0].value=rendered",
	}
	minimalOptions = []string{
		"podDisruptionBudget.enabled=false",
		"rbac.restrictAPIServices=false",
		"uninstall.deleteHostedAPIServices=false",
	}
)

// Kinds whose CRDs the test cluster does not have: their server-side dry-run
// would only say "no matches for kind". They are checked by their content
// instead (checkCertManager, checkServiceMonitor).
var withoutCRDs = map[string]bool{
	"cert-manager.io/v1, Kind=Certificate":          true,
	"cert-manager.io/v1, Kind=Issuer":               true,
	"monitoring.coreos.com/v1, Kind=ServiceMonitor": true,
}

func TestLint(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	for name, sets := range storageModes {
		args := []string{"lint", "--strict", chartDir, "--set", "image.repository=" + testImage}
		for _, s := range append(slices.Clone(sets), allOptions...) {
			args = append(args, "--set", s)
		}
		if out, _, err := env.Helm(ctx, args...); err != nil {
			t.Errorf("helm lint --strict (%s): %v\n%s", name, err, out)
		}
	}
}

// TestTemplate renders every storage mode with every TLS source, with all
// options on and with all off, and has the kube-apiserver accept each object
// with a server-side dry-run.
func TestTemplate(t *testing.T) {
	const namespace = "annex-dryrun"
	// The Secret namespace of these renders, apart from the default one that
	// the installs create and keep: a dry-run creates no namespace, and a
	// Role needs its namespace to exist.
	const secretNamespace = "annex-dryrun-secrets"
	ctx := testContext(t, 2*time.Minute)
	for _, ns := range []string{namespace, secretNamespace} {
		if _, _, err := env.Kubectl(ctx, "create", "namespace", ns); err != nil {
			t.Fatal(err)
		}
	}
	// A PEM does not survive --set (commas and newlines); a values file it is.
	caValues := filepath.Join(t.TempDir(), "ca-values.yaml")
	caYAML, err := yaml.Marshal(map[string]any{"tls": map[string]any{"existingSecret": map[string]any{"caBundle": newCAPEM(t)}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caValues, caYAML, 0o600); err != nil {
		t.Fatal(err)
	}
	for mode, modeSets := range storageModes {
		for _, source := range tlsSources {
			for variant, options := range map[string][]string{"all": allOptions, "minimal": minimalOptions} {
				t.Run(fmt.Sprintf("%s/%s/%s", mode, source, variant), func(t *testing.T) {
					ctx := testContext(t, time.Minute)
					sets := append([]string{"image.repository=" + testImage, "tls.source=" + source,
						"rbac.storageSecretNamespaces={" + secretNamespace + "}"}, modeSets...)
					sets = append(sets, options...)
					if source == "existingSecret" {
						sets = append(sets, "tls.existingSecret.name=annex-serving")
					}
					var extra []string
					if source == "existingSecret" {
						extra = append(extra, "--values", caValues)
					}
					out, err := helmTemplate(ctx, "dry", namespace, sets, extra...)
					if err != nil {
						t.Fatal(err)
					}
					objs := decodeManifests(t, out)
					checkRendered(t, objs, namespace, mode, source, variant)
					checkStorageSecrets(t, objs, namespace, "dry-annex", []string{secretNamespace})

					var dryRun []*unstructured.Unstructured
					for _, o := range objs {
						if !withoutCRDs[o.GroupVersionKind().String()] {
							dryRun = append(dryRun, o)
						}
					}
					stdout, _, err := env.KubectlAs(ctx, env.KubeconfigFile, encode(t, dryRun), "apply", "--dry-run=server", "--server-side", "--field-manager=chart-test", "-f", "-")
					if err != nil {
						t.Fatalf("server-side dry-run: %v", err)
					}
					if got := strings.Count(stdout, "(server dry run)"); got != len(dryRun) {
						t.Errorf("the kube-apiserver accepted %d of %d objects:\n%s", got, len(dryRun), stdout)
					}
				})
			}
		}
	}
}

// checkRendered checks what a dry-run cannot: that the pieces fit together.
func checkRendered(t *testing.T, objs []*unstructured.Unstructured, namespace, mode, source, variant string) {
	t.Helper()
	const fullname = "dry-annex"
	var pod corev1.PodTemplateSpec
	if mode == "embedded" {
		var sts appsv1.StatefulSet
		fromUnstructured(t, find(t, objs, "StatefulSet", fullname), &sts)
		if *sts.Spec.Replicas != 1 {
			t.Errorf("embedded mode: StatefulSet replicas = %d, want 1", *sts.Spec.Replicas)
		}
		pod = sts.Spec.Template
	} else {
		var dep appsv1.Deployment
		fromUnstructured(t, find(t, objs, "Deployment", fullname), &dep)
		ru := dep.Spec.Strategy.RollingUpdate
		if ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
			t.Errorf("Deployment rolling update must keep every pod until its replacement is ready (maxUnavailable 0): %+v", ru)
		}
		pod = dep.Spec.Template
	}
	c := pod.Spec.Containers[0]
	args := map[string]string{}
	for _, a := range c.Args {
		k, v, _ := strings.Cut(a, "=")
		args[k] = v
	}
	if _, ok := args["--leader-elect"]; ok != (mode != "embedded") {
		t.Errorf("--leader-elect given = %v, want it exactly with a Deployment (mode %s)", ok, mode)
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem ||
		pod.Spec.SecurityContext == nil || pod.Spec.SecurityContext.RunAsNonRoot == nil || !*pod.Spec.SecurityContext.RunAsNonRoot {
		t.Errorf("annex must run as non-root on a read-only root filesystem: %+v %+v", pod.Spec.SecurityContext, c.SecurityContext)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness must probe /readyz: %+v", c.ReadinessProbe)
	}
	delay, _ := time.ParseDuration(args["--shutdown-delay-duration"])
	drain, _ := time.ParseDuration(args["--shutdown-watch-termination-grace-period"])
	if grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second; delay == 0 || grace < delay+drain {
		t.Errorf("terminationGracePeriodSeconds %s must cover --shutdown-delay-duration %s and the watch drain %s", grace, delay, drain)
	}
	// Each file annex is told to read lies in a volume that provides it.
	for _, flag := range []string{"--tls-cert-file", "--tls-private-key-file", "--apiservice-ca-bundle-file", "--etcd-cafile", "--postgres-dsn-file", "--audit-policy-file"} {
		if path, ok := args[flag]; ok && !mountedFile(pod, objs, path) {
			t.Errorf("%s=%s is not a file of any mounted volume", flag, path)
		}
	}

	apiService := find(t, objs, "APIService", "v1alpha1.annex.dev")
	if skip, _, _ := unstructured.NestedBool(apiService.Object, "spec", "insecureSkipTLSVerify"); skip {
		t.Error("the APIService must never skip TLS verification")
	}
	if apiService.GetLabels()["annex.dev/managed-by"] != "" {
		t.Error("annex.dev's APIService must not carry annex.dev/managed-by: annex's controller would treat it as a hosted group's")
	}
	caBundle, _, _ := unstructured.NestedString(apiService.Object, "spec", "caBundle")
	switch source {
	case "chart":
		checkGeneratedCertificate(t, find(t, objs, "Secret", fullname+"-tls"), caBundle, fullname+"."+namespace+".svc")
	case "existingSecret":
		if caBundle == "" {
			t.Error("an existing Secret's APIService must carry tls.existingSecret.caBundle")
		}
	case "certManager":
		checkCertManager(t, objs, apiService, namespace, fullname)
	}
	if variant == "all" {
		checkServiceMonitor(t, objs, fullname)
		checkNetworkPolicy(t, objs, pod, fullname)
	}
}

// checkStorageSecrets checks what StorageBackends may read: annex may get
// Secrets in secretNamespaces (which the chart creates, and keeps on
// uninstall) and nowhere else, its flags say the same and name its serving
// Secret, and the etcd client keys it writes go to a memory-backed runtime
// directory, not to the data volume.
func checkStorageSecrets(t *testing.T, objs []*unstructured.Unstructured, namespace, fullname string, secretNamespaces []string) {
	t.Helper()
	var granted []string
	for _, o := range objs {
		if o.GetKind() != "Role" && o.GetKind() != "ClusterRole" {
			continue
		}
		rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
		for _, r := range rules {
			resources, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
			if slices.Contains(resources, "secrets") || slices.Contains(resources, "*") {
				if o.GetKind() == "ClusterRole" {
					t.Errorf("ClusterRole %s grants Secrets: annex may read them in the Secret namespaces only", o.GetName())
				}
				verbs, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "verbs")
				if !slices.Equal(verbs, []string{"get"}) {
					t.Errorf("Role %s/%s grants %v on Secrets, want get only", o.GetNamespace(), o.GetName(), verbs)
				}
				granted = append(granted, o.GetNamespace())
			}
		}
	}
	slices.Sort(granted)
	if want := slices.Sorted(slices.Values(secretNamespaces)); !slices.Equal(granted, want) {
		t.Errorf("annex may get Secrets in %v, want exactly %v", granted, want)
	}
	for _, ns := range secretNamespaces {
		bound := slices.ContainsFunc(objs, func(o *unstructured.Unstructured) bool {
			return o.GetKind() == "RoleBinding" && o.GetNamespace() == ns && o.GetName() == fullname+":storage-secrets"
		})
		if !bound {
			t.Errorf("no RoleBinding %s:storage-secrets in %s", fullname, ns)
		}
		if ns == namespace {
			continue
		}
		if o := find(t, objs, "Namespace", ns); o.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("Namespace %s must be kept on uninstall (helm.sh/resource-policy: keep): it holds the user's Secrets", ns)
		}
	}

	var pod corev1.PodTemplateSpec
	for _, o := range objs {
		switch o.GetKind() {
		case "StatefulSet":
			var sts appsv1.StatefulSet
			fromUnstructured(t, o, &sts)
			pod = sts.Spec.Template
		case "Deployment":
			var dep appsv1.Deployment
			fromUnstructured(t, o, &dep)
			pod = dep.Spec.Template
		}
	}
	args := map[string]string{}
	for _, a := range pod.Spec.Containers[0].Args {
		k, v, _ := strings.Cut(a, "=")
		args[k] = v
	}
	if got, want := args["--storage-secret-namespaces"], strings.Join(secretNamespaces, ","); got != want {
		t.Errorf("--storage-secret-namespaces=%s, want %s", got, want)
	}
	// The serving Secret annex names is the one its certificate is mounted from.
	var tlsSecret string
	for _, v := range pod.Spec.Volumes {
		if v.Name == "tls" && v.Secret != nil {
			tlsSecret = v.Secret.SecretName
		}
	}
	if got, want := args["--serving-cert-secret"], namespace+"/"+tlsSecret; tlsSecret == "" || got != want {
		t.Errorf("--serving-cert-secret=%s, want %s (the Secret mounted as the serving certificate)", got, want)
	}
	runtimeDir, dataDir := args["--runtime-dir"], args["--data-dir"]
	if runtimeDir == "" || runtimeDir == dataDir || strings.HasPrefix(runtimeDir+"/", dataDir+"/") || strings.HasPrefix(dataDir+"/", runtimeDir+"/") {
		t.Errorf("--runtime-dir=%q must be given, apart from --data-dir=%q", runtimeDir, dataDir)
	}
	var memory bool
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		if m.MountPath != runtimeDir {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumMemory {
				memory = true
			}
		}
	}
	if !memory {
		t.Errorf("--runtime-dir=%s is not a memory-backed emptyDir of its own: the etcd client keys would reach a disk", runtimeDir)
	}
}

// mountedFile reports whether path is a key of a Secret or ConfigMap volume
// rendered by the chart, or of a Secret the values name.
func mountedFile(pod corev1.PodTemplateSpec, objs []*unstructured.Unstructured, path string) bool {
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		key, ok := strings.CutPrefix(path, m.MountPath+"/")
		if !ok {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			switch {
			case v.Secret != nil:
				for _, o := range objs {
					if o.GetKind() == "Secret" && o.GetName() == v.Secret.SecretName {
						_, found, _ := unstructured.NestedString(o.Object, "data", key)
						return found
					}
				}
				// A Secret of the user's that the volume projects key by key.
				for _, item := range v.Secret.Items {
					if item.Path == key {
						return true
					}
				}
				// A Secret of the user's or of cert-manager's: it must hold
				// the keys of a kubernetes.io/tls Secret with its CA.
				return len(v.Secret.Items) == 0 && (key == "tls.crt" || key == "tls.key" || key == "ca.crt")
			case v.ConfigMap != nil:
				for _, o := range objs {
					if o.GetKind() == "ConfigMap" && o.GetName() == v.ConfigMap.Name {
						_, found, _ := unstructured.NestedString(o.Object, "data", key)
						return found
					}
				}
			}
		}
	}
	return false
}

// checkGeneratedCertificate verifies that the chart's serving certificate is
// valid for the name the aggregator dials, under the CA the APIService holds.
func checkGeneratedCertificate(t *testing.T, secret *unstructured.Unstructured, caBundle, host string) {
	t.Helper()
	data, _, _ := unstructured.NestedStringMap(secret.Object, "data")
	if caBundle == "" || caBundle != data["ca.crt"] {
		t.Fatalf("the APIService's caBundle must be the Secret's ca.crt")
	}
	decode := func(b64 string) []byte {
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatalf("decoding: %v", err)
		}
		return raw
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(decode(caBundle)) {
		t.Fatal("caBundle holds no PEM certificate")
	}
	block, _ := pem.Decode(decode(data["tls.crt"]))
	if block == nil {
		t.Fatal("tls.crt holds no PEM block")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool}); err != nil {
		t.Errorf("the serving certificate does not verify for %s under the APIService's CA: %v", host, err)
	}
}

// checkCertManager checks the cert-manager objects, which the test cluster
// cannot dry-run: the serving Certificate covers the Service's name, writes
// the Secret the pod mounts, is issued by a rendered Issuer, and is the one
// whose CA is injected into the APIService.
func checkCertManager(t *testing.T, objs []*unstructured.Unstructured, apiService *unstructured.Unstructured, namespace, fullname string) {
	t.Helper()
	certificate := find(t, objs, "Certificate", fullname+"-serving")
	if got, want := apiService.GetAnnotations()["cert-manager.io/inject-ca-from"], namespace+"/"+certificate.GetName(); got != want {
		t.Errorf("APIService inject-ca-from = %q, want %q", got, want)
	}
	dnsNames, _, _ := unstructured.NestedStringSlice(certificate.Object, "spec", "dnsNames")
	if !slices.Contains(dnsNames, fullname+"."+namespace+".svc") {
		t.Errorf("Certificate dnsNames %v lack %s.%s.svc", dnsNames, fullname, namespace)
	}
	if secret, _, _ := unstructured.NestedString(certificate.Object, "spec", "secretName"); secret != fullname+"-tls" {
		t.Errorf("Certificate secretName = %q, want the mounted %s-tls", secret, fullname)
	}
	issuer, _, _ := unstructured.NestedString(certificate.Object, "spec", "issuerRef", "name")
	ca := find(t, objs, "Issuer", issuer)
	caSecret, _, _ := unstructured.NestedString(ca.Object, "spec", "ca", "secretName")
	root := find(t, objs, "Certificate", caSecret)
	if isCA, _, _ := unstructured.NestedBool(root.Object, "spec", "isCA"); !isCA {
		t.Errorf("Issuer %s must sign with a CA Certificate", issuer)
	}
	for _, o := range []*unstructured.Unstructured{certificate, ca, root} {
		if o.GetNamespace() != namespace || o.GetAPIVersion() != "cert-manager.io/v1" {
			t.Errorf("%s %s: namespace %q, apiVersion %q", o.GetKind(), o.GetName(), o.GetNamespace(), o.GetAPIVersion())
		}
	}
}

// checkServiceMonitor checks that the ServiceMonitor selects the Service and
// names its port.
func checkServiceMonitor(t *testing.T, objs []*unstructured.Unstructured, fullname string) {
	t.Helper()
	sm := find(t, objs, "ServiceMonitor", fullname)
	var svc corev1.Service
	fromUnstructured(t, find(t, objs, "Service", fullname), &svc)
	selector, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	for k, v := range selector {
		if svc.Labels[k] != v {
			t.Errorf("ServiceMonitor selector %s=%s does not match the Service's labels %v", k, v, svc.Labels)
		}
	}
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != svc.Spec.Ports[0].Name {
		t.Errorf("ServiceMonitor endpoints %v must scrape the Service's port %q", endpoints, svc.Spec.Ports[0].Name)
	}
}

// checkNetworkPolicy checks that the NetworkPolicy selects annex's pods and
// admits the peers given, as docs/operations.md shows them, on the serving
// port alone.
func checkNetworkPolicy(t *testing.T, objs []*unstructured.Unstructured, pod corev1.PodTemplateSpec, fullname string) {
	t.Helper()
	var np networkingv1.NetworkPolicy
	fromUnstructured(t, find(t, objs, "NetworkPolicy", fullname), &np)
	for k, v := range np.Spec.PodSelector.MatchLabels {
		if pod.Labels[k] != v {
			t.Errorf("NetworkPolicy selector %s=%s does not match annex's pods' labels %v", k, v, pod.Labels)
		}
	}
	if len(np.Spec.Ingress) != 1 {
		t.Fatalf("NetworkPolicy has %d ingress rules, want 1", len(np.Spec.Ingress))
	}
	rule := np.Spec.Ingress[0]
	var cidrs []string
	for _, peer := range rule.From {
		if peer.IPBlock != nil {
			cidrs = append(cidrs, peer.IPBlock.CIDR)
		}
	}
	if want := []string{"10.0.0.10/32", "192.168.34.0/32"}; !slices.Equal(cidrs, want) || len(rule.From) != len(want) {
		t.Errorf("NetworkPolicy admits %v, want exactly the ipBlocks %v", rule.From, want)
	}
	if len(rule.Ports) != 1 || rule.Ports[0].Port == nil || rule.Ports[0].Port.String() != pod.Spec.Containers[0].Ports[0].Name {
		t.Errorf("NetworkPolicy admits ports %v, want annex's serving port %q alone", rule.Ports, pod.Spec.Containers[0].Ports[0].Name)
	}
}

// A PostgreSQL connection string that allows plaintext is refused unless
// storage.postgres.insecure passes --storage-insecure; the chart never
// passes it otherwise.
func TestPostgresInsecure(t *testing.T) {
	ctx := testContext(t, time.Minute)
	for _, tc := range []struct {
		sets []string
		want bool
	}{
		{storageModes["postgres"], false},
		{append(slices.Clone(storageModes["postgres"]), "storage.postgres.insecure=true"), true},
		{append(slices.Clone(storageModes["etcd"]), "storage.postgres.insecure=true"), false},
		{[]string{"storage.postgres.insecure=true"}, false},
	} {
		out, err := helmTemplate(ctx, "annex", "annex-system", tc.sets)
		if err != nil {
			t.Fatalf("helm template %v: %v", tc.sets, err)
		}
		got := strings.Contains(out, "- --storage-insecure\n")
		if got != tc.want {
			t.Errorf("helm template %v: --storage-insecure given %v, want %v", tc.sets, got, tc.want)
		}
	}
}

// TestAdoptionRBAC checks what adoption.customResourceDefinitions grants
// annex's ServiceAccount: nothing without it; with it, the named CRDs, their
// objects, the freeze's policies, and the take-over of their groups' local
// APIServices in the chart's own APIService policy.
func TestAdoptionRBAC(t *testing.T) {
	ctx := testContext(t, time.Minute)
	rulesOf := func(sets []string) (string, string) {
		out, err := helmTemplate(ctx, "annex", "annex-system", sets)
		if err != nil {
			t.Fatalf("helm template %v: %v", sets, err)
		}
		objs := decodeManifests(t, out)
		rules, err := json.Marshal(find(t, objs, "ClusterRole", "annex").Object["rules"])
		if err != nil {
			t.Fatal(err)
		}
		policy, err := json.Marshal(find(t, objs, "ValidatingAdmissionPolicy", "annex-apiservices").Object["spec"])
		if err != nil {
			t.Fatal(err)
		}
		return string(rules), string(policy)
	}
	rules, policy := rulesOf(nil)
	freezePolicies := `"resources":["validatingadmissionpolicies","validatingadmissionpolicybindings"],"verbs":["create","delete"]`
	if strings.Contains(rules, `"resourceNames"`) || strings.Contains(rules, freezePolicies) || strings.Contains(policy, "oldObject.spec.group in") {
		t.Errorf("without adoption, the chart grants adoption's rights:\n%s\n%s", rules, policy)
	}
	rules, policy = rulesOf([]string{"adoption.customResourceDefinitions={policyreports.wgpolicyk8s.io,widgets.a.example.com}"})
	for _, want := range []string{
		`{"apiGroups":["apiextensions.k8s.io"],"resourceNames":["policyreports.wgpolicyk8s.io","widgets.a.example.com"],"resources":["customresourcedefinitions"],"verbs":["update","patch"]}`,
		`{"apiGroups":["wgpolicyk8s.io"],"resources":["policyreports","policyreports/status"],"verbs":["get","list","watch","create","update","patch","delete"]}`,
		`{"apiGroups":["a.example.com"],"resources":["widgets","widgets/status"],"verbs":["get","list","watch","create","update","patch","delete"]}`,
		`{"apiGroups":["admissionregistration.k8s.io"],"resources":["validatingadmissionpolicies","validatingadmissionpolicybindings"],"verbs":["create","delete"]}`,
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("with adoption, the ClusterRole lacks %s:\n%s", want, rules)
		}
	}
	if want := `oldObject.spec.group in [\"wgpolicyk8s.io\",\"a.example.com\"]`; !strings.Contains(policy, want) {
		t.Errorf("with adoption, the APIService policy does not let annex take over the groups' local APIServices (%s):\n%s", want, policy)
	}
	if want := `request.operation == 'UPDATE' \u0026\u0026 !has(object.spec.service) \u0026\u0026 object.spec.group in [\"wgpolicyk8s.io\",\"a.example.com\"]`; !strings.Contains(policy, want) {
		t.Errorf("with adoption, the APIService policy does not let annex give the groups' APIServices back to the cluster (%s):\n%s", want, policy)
	}
	if _, err := helmTemplate(ctx, "annex", "annex-system", []string{"adoption.customResourceDefinitions={widgets}"}); err == nil ||
		!strings.Contains(err.Error(), "customResourceDefinitions") {
		t.Errorf("a name without a group: %v, want the chart to refuse it", err)
	}
}

// TestRefusals checks that the chart refuses what it cannot serve, with a
// message that says why.
func TestRefusals(t *testing.T) {
	for name, tc := range map[string]struct {
		sets []string
		want string
	}{
		"postgres values are checked": {
			sets: []string{"image.repository=" + testImage, "storage.mode=postgres"},
			want: "/storage/postgres/dsnSecret/name",
		},
		"an empty image":       {sets: []string{"image.repository="}, want: "/image/repository"},
		"unknown mode":         {sets: []string{"image.repository=" + testImage, "storage.mode=sqlite"}, want: "/storage/mode"},
		"unknown TLS source":   {sets: []string{"image.repository=" + testImage, "tls.source=none"}, want: "/tls/source"},
		"unknown value":        {sets: []string{"image.repository=" + testImage, "replica=3"}, want: "additional properties 'replica' not allowed"},
		"etcd needs endpoints": {sets: []string{"image.repository=" + testImage, "storage.mode=etcd", "storage.etcd.tls.secretName=etcd"}, want: "/storage/etcd/endpoints"},
		"existing Secret needs its CA": {
			sets: []string{"image.repository=" + testImage, "tls.source=existingSecret", "tls.existingSecret.name=s", "tls.existingSecret.caBundle=not-a-pem"},
			want: "tls.existingSecret.caBundle must hold the PEM CA certificate",
		},
		"Secret namespaces are namespaces": {
			sets: []string{"image.repository=" + testImage, "rbac.storageSecretNamespaces={Not_A_Namespace}"},
			want: "/rbac/storageSecretNamespaces/0",
		},
		"a reserved group in rbac.apiServiceGroups": {
			sets: []string{"image.repository=" + testImage, "rbac.apiServiceGroups={reports.example.com,*.k8s.io}"},
			want: "rbac.apiServiceGroups: *.k8s.io is reserved",
		},
		"annex.dev in rbac.apiServiceGroups": {
			sets: []string{"image.repository=" + testImage, "rbac.apiServiceGroups={annex.dev}"},
			want: "rbac.apiServiceGroups: annex.dev is reserved",
		},
		"a group without a dot in rbac.apiServiceGroups": {
			sets: []string{"image.repository=" + testImage, "rbac.apiServiceGroups={apps}"},
			want: "/rbac/apiServiceGroups/0",
		},
		"grace period shorter than the drain": {
			sets: []string{"image.repository=" + testImage, "terminationGracePeriodSeconds=30"},
			want: "terminationGracePeriodSeconds (30) must be at least",
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := helmTemplate(testContext(t, time.Minute), "refused", "annex-system", tc.sets)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template: want an error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func fromUnstructured(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, into, true); err != nil {
		t.Fatalf("converting %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// newCAPEM returns a throw-away CA certificate in PEM form, the caBundle of
// an existing Secret.
func newCAPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := cert.NewSelfSignedCACert(cert.Config{CommonName: "existing-ca"}, key)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := cert.EncodeCertificates(ca)
	if err != nil {
		t.Fatal(err)
	}
	return string(pemBytes)
}

// TestPlainManifests has the kube-apiserver accept the manifests under
// config/ that are rendered from the chart (hack/verify-manifests.sh checks
// that they are current).
func TestPlainManifests(t *testing.T) {
	for _, file := range []string{"annex.yaml", "annex-etcd.yaml"} {
		t.Run(file, func(t *testing.T) {
			ctx := testContext(t, time.Minute)
			data, err := os.ReadFile(filepath.Join(chartDir, "..", "..", "config", file))
			if err != nil {
				t.Fatal(err)
			}
			objs := decodeManifests(t, string(data))
			var dryRun []*unstructured.Unstructured
			for _, o := range objs {
				if o.GetKind() == "Job" {
					t.Errorf("%s holds a Job (%s): Helm hooks must not be in plain manifests", file, o.GetName())
				}
				if !withoutCRDs[o.GroupVersionKind().String()] {
					dryRun = append(dryRun, o)
				}
			}
			stdout, _, err := env.KubectlAs(ctx, env.KubeconfigFile, encode(t, dryRun), "apply", "--dry-run=server", "--server-side", "--field-manager=chart-test", "-f", "-")
			if err != nil {
				t.Fatalf("server-side dry-run: %v", err)
			}
			if got := strings.Count(stdout, "(server dry run)"); got != len(dryRun) {
				t.Errorf("the kube-apiserver accepted %d of %d objects:\n%s", got, len(dryRun), stdout)
			}
		})
	}
}

// TestDefaults renders the chart with no values at all, as `helm install
// annex charts/annex` does: annex runs the published image of the chart's
// appVersion, and the uninstall hook runs the same image.
func TestDefaults(t *testing.T) {
	ctx := testContext(t, time.Minute)
	data, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(data, &chart); err != nil {
		t.Fatal(err)
	}
	out, err := helmTemplate(ctx, "annex", "annex-system", nil)
	if err != nil {
		t.Fatalf("helm template with no --set: %v", err)
	}
	objs := decodeManifests(t, out)
	var sts appsv1.StatefulSet
	fromUnstructured(t, find(t, objs, "StatefulSet", ""), &sts)
	want := "ghcr.io/annex-dev/annex-apiserver:" + chart.AppVersion
	if got := sts.Spec.Template.Spec.Containers[0].Image; got != want {
		t.Errorf("annex's image is %s, want %s", got, want)
	}
	// StorageBackends' Secrets live in a namespace of their own.
	checkStorageSecrets(t, objs, "annex-system", "annex", []string{"annex-storage-secrets"})
	// No selector finds the kube-apiserver on every cluster: the
	// NetworkPolicy is the operator's to turn on (docs/operations.md).
	for _, obj := range objs {
		if obj.GetKind() == "NetworkPolicy" {
			t.Errorf("the chart renders NetworkPolicy %s by default", obj.GetName())
		}
	}
	var job batchv1.Job
	fromUnstructured(t, find(t, objs, "Job", ""), &job)
	hook := job.Spec.Template.Spec.Containers[0]
	if hook.Image != want || !slices.Equal(hook.Command, []string{"/annex-apiserver"}) || len(hook.Args) == 0 || hook.Args[0] != "delete-hosted-apiservices" {
		t.Errorf("the uninstall hook runs %s %v %v, want %s /annex-apiserver delete-hosted-apiservices", hook.Image, hook.Command, hook.Args, want)
	}
}
