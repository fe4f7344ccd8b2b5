//go:build integration

// Package standalone tests annex with no cluster, as `make run` starts it:
// its own certificates, the embedded etcd, and kubectl through the admin
// kubeconfig it writes.
package standalone

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"annex.dev/annex/test/annexserver"
	"annex.dev/annex/test/integration/framework"
)

// annex is one standalone annex of a test, with the test's helpers.
type annex struct {
	*annexserver.Server
	t *testing.T
}

// start runs the annex binary in standalone mode on dir and waits until it is ready.
// With no --etcd-servers among extraArgs it keeps its data in an embedded etcd.
func start(t *testing.T, dir string, port int, extraArgs ...string) *annex {
	t.Helper()
	s := annexserver.StartT(t, &annexserver.Server{Dir: dir, Port: port, Args: extraArgs, ReadyTimeout: 60 * time.Second})
	return &annex{Server: s, t: t}
}

func (a *annex) restConfig() *rest.Config {
	a.t.Helper()
	return annexserver.AdminConfigT(a.t, a.Server)
}

// get sends a GET with the given valueless query parameters as the admin
// and returns the status code and body.
func (a *annex) get(ctx context.Context, path string, params ...string) (int, string) {
	cfg, err := a.AdminConfig()
	if err != nil {
		return 0, err.Error()
	}
	client, err := rest.UnversionedRESTClientFor(withCodec(cfg))
	if err != nil {
		return 0, err.Error()
	}
	req := client.Get().AbsPath(path)
	for _, p := range params {
		req = req.Param(p, "")
	}
	var code int
	body, _ := req.Do(ctx).StatusCode(&code).Raw()
	return code, string(body)
}

func withCodec(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &metav1.SchemeGroupVersion
	cfg.NegotiatedSerializer = metav1Codecs
	return cfg
}

// kubectl runs the built kubectl as the admin and fails the test if it fails.
func (a *annex) kubectl(args ...string) string {
	a.t.Helper()
	out, err := a.kubectlErr(args...)
	if err != nil {
		a.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// kubectlErr runs the built kubectl as the admin and returns its combined output.
func (a *annex) kubectlErr(args ...string) (string, error) {
	kubectl := filepath.Join(os.Getenv(framework.AssetsEnv), "kubectl")
	cmd := exec.Command(kubectl, append([]string{"--kubeconfig", a.Kubeconfig(), "--cache-dir", filepath.Join(a.Dir, "kubectl-cache")}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// klogError matches a line klog writes at error level.
var klogError = regexp.MustCompile(`^E[0-9]{4} `)

func TestStandalone(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port)
	ctx := context.Background()

	samples, err := filepath.Abs("../../../config/samples")
	if err != nil {
		t.Fatal(err)
	}
	if out := a.kubectl("apply", "-f", samples); !strings.Contains(out, "hostedresource.annex.dev/policyreports.reports.example.com created") {
		t.Errorf("kubectl apply of the samples said:\n%s", out)
	}
	if out := a.kubectl("get", "hostedresources"); !strings.Contains(out, "policyreports.reports.example.com") || !strings.Contains(out, "PolicyReport") {
		t.Errorf("kubectl get hostedresources:\n%s", out)
	}

	t.Run("health and metrics", func(t *testing.T) {
		code, body := a.get(ctx, "/readyz", "verbose")
		if code != http.StatusOK || !strings.Contains(body, "[+]etcd-readiness ok") {
			t.Errorf("/readyz: %d\n%s", code, body)
		}
		if code, body := a.get(ctx, "/livez"); code != http.StatusOK {
			t.Errorf("/livez: %d %s", code, body)
		}
		code, body = a.get(ctx, "/metrics")
		if code != http.StatusOK || !strings.Contains(body, "apiserver_request_total") {
			t.Errorf("/metrics: %d, %d bytes, no apiserver_request_total", code, len(body))
		}
	})

	t.Run("a client without the admin certificate is refused", func(t *testing.T) {
		cfg := a.restConfig()
		anonymous := rest.AnonymousClientConfig(cfg)
		client, err := rest.UnversionedRESTClientFor(withCodec(anonymous))
		if err != nil {
			t.Fatal(err)
		}
		err = client.Get().AbsPath("/apis/annex.dev/v1alpha1/storagebackends").Do(ctx).Error()
		if !apierrors.IsForbidden(err) && !apierrors.IsUnauthorized(err) {
			t.Errorf("anonymous list: got %v, want 401 or 403", err)
		}
	})

	firstCA := a.restConfig().CAData
	if err := a.Stop(); err != nil {
		t.Fatalf("annex did not stop cleanly on SIGTERM: %v", err)
	}
	t.Run("standalone mode does not warn about the cluster it does not need", func(t *testing.T) {
		if strings.Contains(a.Log(), "No authorization-kubeconfig provided") {
			t.Error("annex warned that it has no authorization kubeconfig")
		}
	})

	// Restart on the same data: the objects and the CA are still there, so
	// the kubeconfig users already have keeps working.
	b := start(t, dir, port)
	if !bytes.Equal(b.restConfig().CAData, firstCA) {
		t.Error("the CA changed across a restart; existing kubeconfigs would stop working")
	}
	if out := b.kubectl("get", "storagebackend", "embedded", "-o", "jsonpath={.spec.type}"); out != "Embedded" {
		t.Errorf("after a restart, storagebackend embedded has type %q, want Embedded", out)
	}
	if out := b.kubectl("get", "hostedresources", "-o", "name"); !strings.Contains(out, "policyreports.reports.example.com") {
		t.Errorf("after a restart, hostedresources: %q", out)
	}
}

// TestStandaloneStopsQuietly stops a running annex, as a user stops `make
// run`, and reads what it logged from SIGTERM on: no error. (A stop in the
// middle of a change, while annex's and apiextensions' own controllers are
// writing, may log their cancelled requests, as the kube-apiserver does.)
func TestStandaloneStopsQuietly(t *testing.T) {
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, t.TempDir(), port)
	// The controllers have synced and probed the default store once its
	// StorageBackend reports Ready.
	a.kubectl("apply", "-f", filepath.Join("..", "..", "..", "config", "samples", "storagebackend.yaml"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		out, err := a.kubectlErr("get", "storagebackend", "embedded", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return err == nil && out == "True", nil
	})
	if err != nil {
		t.Fatalf("storagebackend/embedded did not become Ready: %v", err)
	}
	running := len(a.Log())
	if err := a.Stop(); err != nil {
		t.Fatalf("annex did not stop cleanly on SIGTERM: %v", err)
	}
	stopping := a.Log()[running:]
	for _, line := range strings.Split(stopping, "\n") {
		if klogError.MatchString(line) || strings.Contains(line, `"level":"error"`) {
			t.Errorf("annex logged at SIGTERM: %s", line)
		}
	}
}
