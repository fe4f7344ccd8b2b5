//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/test/integration/framework"
)

var (
	apiServicesGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	crdsGVR        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// hostedResource is a namespaced type with one served version, as a
// HostedResource in group group.
func hostedResource(t *testing.T, kind, plural, group string) *unstructured.Unstructured {
	t.Helper()
	return namespacedType(t, group, plural, "{kind: "+kind+", plural: "+plural+"}", "type: object\nproperties:\n  size: {type: integer, default: 3}\n", "")
}

// namespacedType is the HostedResource of a namespaced type in group group
// with one version, v1: names is its spec.names, spec the openAPIV3Schema
// of the objects' spec, and status, when not empty, that of their status,
// which is then a subresource. The schemas are YAML without indentation.
func namespacedType(t *testing.T, group, plural, names, spec, status string) *unstructured.Unstructured {
	t.Helper()
	manifest := "apiVersion: annex.dev/v1alpha1\nkind: HostedResource\nmetadata:\n  name: " + plural + "." + group + "\n" +
		"spec:\n  group: " + group + "\n  names: " + names + "\n  scope: Namespaced\n" +
		"  versions:\n  - name: v1\n    served: true\n    storage: true\n"
	if status != "" {
		manifest += "    subresources: {status: {}}\n"
	}
	manifest += "    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n" + indent(spec, "            ")
	if status != "" {
		manifest += "          status:\n" + indent(status, "            ")
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
		t.Fatal(err)
	}
	return obj
}

// indent puts prefix before each line of text, and ends it with a newline.
func indent(text, prefix string) string {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}

// waitForCondition waits until the HostedResource has the condition with the status.
func waitForCondition(t *testing.T, name, conditionType string, status metav1.ConditionStatus) metav1.Condition {
	t.Helper()
	var last metav1.Condition
	err := wait.PollUntilContextTimeout(testContext(t), 250*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		hr, err := adminClient(t).Resource(framework.HostedResources).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conditions, _, _ := unstructured.NestedSlice(hr.Object, "status", "conditions")
		for _, c := range conditions {
			m := c.(map[string]any)
			if m["type"] == conditionType {
				last = metav1.Condition{Type: conditionType, Status: metav1.ConditionStatus(m["status"].(string)), Reason: m["reason"].(string), Message: m["message"].(string)}
			}
		}
		return last.Status == status, nil
	})
	if err != nil {
		t.Fatalf("HostedResource %s: condition %s did not become %s; last: %+v", name, conditionType, status, last)
	}
	return last
}

// TestHostedTypeThroughTheCluster declares a type on annex and uses it
// through the cluster's kube-apiserver, as any client of the cluster would.
func TestHostedTypeThroughTheCluster(t *testing.T) {
	ctx := testContext(t)
	admin := adminClient(t)
	group := "hosted.example.net"
	hr := create(t, admin, framework.HostedResources, hostedResource(t, "Gadget", "gadgets", group))

	waitForCondition(t, hr.GetName(), "Established", metav1.ConditionTrue)
	c := waitForCondition(t, hr.GetName(), "APIServiceAvailable", metav1.ConditionTrue)
	if c.Reason != "Registered" {
		t.Errorf("APIServiceAvailable reason = %q, want Registered", c.Reason)
	}
	apiService, err := admin.Resource(apiServicesGVR).Get(ctx, "v1."+group, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the APIService of the hosted group/version: %v", err)
	}
	if caBundle, _, _ := unstructured.NestedString(apiService.Object, "spec", "caBundle"); caBundle == "" {
		t.Error("the APIService has no caBundle")
	}
	if skip, _, _ := unstructured.NestedBool(apiService.Object, "spec", "insecureSkipTLSVerify"); skip {
		t.Error("the APIService skips TLS verification")
	}

	// The hosted type answers through the cluster, in a namespace of the cluster.
	ns := uniqueName("hosted")
	nsObj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
	create(t, admin, schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, nsObj)
	gadgets := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "gadgets"}
	var created *unstructured.Unstructured
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		created, err = admin.Resource(gadgets).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": group + "/v1", "kind": "Gadget", "metadata": map[string]any{"name": "g1"}, "spec": map[string]any{},
		}}, metav1.CreateOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("creating a Gadget through the cluster: %v", err)
	}
	if size, _, _ := unstructured.NestedInt64(created.Object, "spec", "size"); size != 3 {
		t.Errorf("the schema default was not applied through the cluster: spec.size = %d", size)
	}
	if out, stderr, err := env.Kubectl(ctx, "get", "gadgets", "-n", ns); err != nil || !strings.Contains(out, "g1") {
		t.Errorf("kubectl get gadgets through the cluster: %v\n%s%s", err, out, stderr)
	}

	t.Run("the cluster's etcd holds nothing of the hosted type", func(t *testing.T) {
		client, err := clientv3.New(clientv3.Config{Endpoints: []string{env.EtcdURL()}, DialTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		resp, err := client.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			t.Fatal("the cluster's etcd holds no keys at all; is this the right etcd?")
		}
		for _, kv := range resp.Kvs {
			key := string(kv.Key)
			if strings.HasPrefix(key, "/registry/apiregistration.k8s.io/apiservices/") {
				continue // the registration itself is the cluster's to hold
			}
			if strings.Contains(key, group) || strings.Contains(key, "gadgets") || strings.Contains(key, "/annex.dev/") {
				t.Errorf("the cluster's etcd holds %s", key)
			}
		}
	})

	t.Run("a HostedResource whose kind clashes is not accepted", func(t *testing.T) {
		clash := hostedResource(t, "Gadget", "gizmos", group)
		create(t, admin, framework.HostedResources, clash)
		c := waitForCondition(t, clash.GetName(), "NamesAccepted", metav1.ConditionFalse)
		if !strings.HasSuffix(c.Reason, "Conflict") || !strings.Contains(c.Message, "Gadget") {
			t.Errorf("NamesAccepted = %+v, want a ...Conflict reason naming the kind", c)
		}
		if _, err := admin.Resource(schema.GroupVersionResource{Group: group, Version: "v1", Resource: "gizmos"}).Namespace(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("listing gizmos through the cluster: got %v, want 404: the clashing type must not be served", err)
		}
		if _, err := admin.Resource(gadgets).Namespace(ns).Get(ctx, "g1", metav1.GetOptions{}); err != nil {
			t.Errorf("the first type stopped serving: %v", err)
		}
	})

	t.Run("a group the cluster serves with a CRD is refused", func(t *testing.T) {
		clusterGroup := "owned.example.net"
		crd := hostedResource(t, "Thing", "things", clusterGroup)
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		unstructured.RemoveNestedField(crd.Object, "spec", "storage")
		create(t, admin, crdsGVR, crd)

		clash := hostedResource(t, "Widget", "widgets", clusterGroup)
		_, err := admin.Resource(framework.HostedResources).Create(ctx, clash, metav1.CreateOptions{})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "CustomResourceDefinition things."+clusterGroup) {
			t.Fatalf("creating a HostedResource in a group the cluster serves: got %v, want 422 naming the cluster's CRD", err)
		}
		expectCauses(t, causeFields(err), "spec.group")
		expectAbsent(t, framework.HostedResources, clash.GetName())
		if apiService, err := admin.Resource(apiServicesGVR).Get(ctx, "v1."+clusterGroup, metav1.GetOptions{}); err == nil {
			if svc, found, _ := unstructured.NestedMap(apiService.Object, "spec", "service"); found && svc != nil {
				t.Errorf("the cluster's APIService v1.%s now points at a service: %v", clusterGroup, svc)
			}
		}
	})

	// Deleting the declaration removes the type and its APIService.
	if err := admin.Resource(framework.HostedResources).Delete(ctx, hr.GetName(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := admin.Resource(apiServicesGVR).Get(ctx, "v1."+group, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Errorf("APIService v1.%s is still registered after its HostedResource was deleted", group)
	}
}

// TestHostedGroupOfAnotherInstall checks, through the cluster, that annex's
// managed-by label alone does not make an APIService annex's own: one that
// carries this install's value but points at another Service (another
// install, or anyone who may label APIServices) makes its group the
// cluster's, and a HostedResource of that group is refused.
func TestHostedGroupOfAnotherInstall(t *testing.T) {
	admin := adminClient(t)
	ctx := testContext(t)
	group := uniqueName("other-install") + ".example.net"
	// The framework's install runs with the default value of the label.
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{
			"name":   "v1." + group,
			"labels": map[string]any{v1alpha1.ManagedByLabel: v1alpha1.DefaultManagedByValue},
		},
		"spec": map[string]any{
			"group": group, "version": "v1", "groupPriorityMinimum": int64(1000), "versionPriority": int64(100),
			"service": map[string]any{"namespace": "another-annex", "name": framework.ServiceName},
		},
	}}
	create(t, admin, apiServicesGVR, apiService)

	hr := hostedResource(t, "Widget", "widgets", group)
	_, err := admin.Resource(framework.HostedResources).Create(ctx, hr, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "APIService v1."+group) {
		t.Fatalf("creating a HostedResource in the group of another install's APIService: got %v, want 422 naming the APIService", err)
	}
	expectCauses(t, causeFields(err), "spec.group")
	expectAbsent(t, framework.HostedResources, hr.GetName())
	got, err := admin.Resource(apiServicesGVR).Get(ctx, "v1."+group, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns, _, _ := unstructured.NestedString(got.Object, "spec", "service", "namespace"); ns != "another-annex" {
		t.Errorf("the other install's APIService now points at namespace %q", ns)
	}
}
