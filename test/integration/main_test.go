//go:build integration

package integration

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/storage/names"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"annex.dev/annex/test/integration/framework"
)

// env is shared by every test in the binary: starting a kube-apiserver,
// etcd and annex takes several seconds.
var env *framework.Environment

func TestMain(m *testing.M) {
	os.Exit(framework.RunTests(m, func(ctx context.Context) (*framework.Environment, error) { return framework.Start(ctx) }, func(e *framework.Environment) { env = e }))
}

// testContext is bounded so that a hung request fails the test rather than
// the whole binary.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// adminClient is a dynamic client for the kube-apiserver as system:masters.
func adminClient(t *testing.T) dynamic.Interface {
	t.Helper()
	return dynamicFor(t, env.Config)
}

func dynamicFor(t *testing.T, cfg *rest.Config) dynamic.Interface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("building dynamic client: %v", err)
	}
	return dyn
}

// uniqueName returns prefix plus a random suffix: annex's resources are
// cluster-scoped, so tests must not collide on names.
func uniqueName(prefix string) string {
	return names.SimpleNameGenerator.GenerateName(prefix + "-")
}

// storageBackend builds a StorageBackend of the given type with the member
// that type requires.
func storageBackend(name, backendType string, labels map[string]string) *unstructured.Unstructured {
	spec := map[string]any{"type": backendType}
	switch backendType {
	case "Etcd":
		spec["etcd"] = map[string]any{"endpoints": []any{"https://127.0.0.1:2379"}}
	case "Postgres":
		spec["postgres"] = map[string]any{"dsnSecretRef": map[string]any{
			"namespace": framework.SecretNamespace, "name": "postgres", "key": "dsn",
		}}
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": framework.Group + "/" + framework.Version,
		"kind":       "StorageBackend",
		"metadata":   map[string]any{"name": name},
		"spec":       spec,
	}}
	obj.SetLabels(labels)
	return obj
}

// allowPlaintext sets insecure: true on the member of a StorageBackend
// built by storageBackend: the tests' PostgreSQL servers and the cluster's
// etcd serve plaintext on loopback.
func allowPlaintext(t *testing.T, obj *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	member := strings.ToLower(nestedString(obj, "spec", "type"))
	if err := unstructured.SetNestedField(obj.Object, true, "spec", member, "insecure"); err != nil {
		t.Fatal(err)
	}
	return obj
}

// create creates obj through the kube-apiserver and deletes it when the test
// ends.
func create(t *testing.T, dyn dynamic.Interface, gvr schema.GroupVersionResource, obj *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	ctx := testContext(t)
	got, err := dyn.Resource(gvr).Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating %s %q: %v", gvr.Resource, obj.GetName(), err)
	}
	t.Cleanup(func() { deleteIfExists(t, gvr, obj.GetName()) })
	return got
}

func deleteIfExists(t *testing.T, gvr schema.GroupVersionResource, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := dynamicFor(t, env.Config).Resource(gvr).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("cleaning up %s %q: %v", gvr.Resource, name, err)
	}
}

// deleteAndWait deletes name and waits until it is gone, finalizers and all.
func deleteAndWait(t *testing.T, gvr schema.GroupVersionResource, name string) {
	t.Helper()
	deleteIfExists(t, gvr, name)
	var lastErr error
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		_, lastErr = dynamicFor(t, env.Config).Resource(gvr).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(lastErr), nil
	})
	if err != nil {
		t.Errorf("cleaning up %s %q: still there after 90s (last error: %v)", gvr.Resource, name, lastErr)
	}
}

// expectAbsent fails unless name is neither gettable nor listed.
func expectAbsent(t *testing.T, gvr schema.GroupVersionResource, name string) {
	t.Helper()
	ctx := testContext(t)
	res := adminClient(t).Resource(gvr)
	if obj, err := res.Get(ctx, name, metav1.GetOptions{}); err == nil {
		t.Errorf("%s %q is stored (resourceVersion %s), want it absent", gvr.Resource, name, obj.GetResourceVersion())
	} else if !apierrors.IsNotFound(err) {
		t.Errorf("getting %s %q: want 404 NotFound, got %v", gvr.Resource, name, err)
	}
	list, err := res.List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatalf("listing %s: %v", gvr.Resource, err)
	}
	if len(list.Items) != 0 {
		t.Errorf("listing %s by metadata.name=%s returned %d items, want none", gvr.Resource, name, len(list.Items))
	}
}

// rawResponse is what a plain HTTP client sees.
type rawResponse struct {
	Code        int
	ContentType string
	Body        []byte
}

// doRaw sends a request to the kube-apiserver as admin and returns the raw
// response, for the cases client-go would hide (bad bodies, odd Accept
// headers).
func doRaw(t *testing.T, method, path string, header http.Header, body []byte) rawResponse {
	t.Helper()
	client, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatalf("building HTTP client: %v", err)
	}
	req, err := http.NewRequestWithContext(testContext(t), method, strings.TrimSuffix(env.Config.Host, "/")+path, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("building request: %v", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return rawResponse{Code: resp.StatusCode, ContentType: resp.Header.Get("Content-Type"), Body: data}
}

// causeFields returns the field of every cause in a Status error.
func causeFields(err error) []string {
	status, ok := err.(apierrors.APIStatus)
	if !ok || status.Status().Details == nil {
		return nil
	}
	var fields []string
	for _, c := range status.Status().Details.Causes {
		fields = append(fields, c.Field)
	}
	return fields
}

// expectCauses fails unless every wanted field path is named by some cause
// (a cause names a field if its path equals it or lies below it).
func expectCauses(t *testing.T, got []string, want ...string) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, g := range got {
			if g == w || strings.HasPrefix(g, w+".") || strings.HasPrefix(g, w+"[") {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no status cause names %s; causes name %q", w, got)
		}
	}
}
