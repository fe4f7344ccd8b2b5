package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"annex.dev/annex/test/integration/framework"
)

// The CRDs of A and the HostedResources of B and C live in different groups:
// annex refuses a group the cluster already serves.
const (
	crdGroup    = "crd.bench.example.com"
	hostedGroup = "hosted.bench.example.com"
)

// configMapTarget names the typed reference.
const configMapTarget = "ConfigMap"

// A server is an API server the driver reads metrics and profiles from.
type server struct {
	Name string
	Host string
	HTTP *http.Client
	// config is the client configuration of HTTP (nil for the cluster's
	// etcd).
	config *rest.Config
}

// ownConnection returns a dynamic client of the server on a connection of
// its own, as a separate controller has. client-go shares one transport,
// hence one HTTP/2 connection, between clients of equal configurations; a
// configuration with a proxy function is never shared.
func (s *server) ownConnection() (dynamic.Interface, error) {
	if s.config == nil {
		return nil, fmt.Errorf("%s has no client configuration", s.Name)
	}
	cfg := rest.CopyConfig(s.config)
	cfg.Proxy = http.ProxyURL(nil)
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return dynamic.NewForConfigAndClient(cfg, hc)
}

// get fetches path from the server and returns the body.
func (s *server) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Host+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s%s: %s: %.200s", s.Host, path, resp.Status, body)
	}
	return body, nil
}

// A target is one way to reach the type under test: A, B, C, or the
// ConfigMap reference.
type target struct {
	// Name is A, B, C or ConfigMap.
	Name string
	// Server is where the target's requests go (the kube-apiserver for A, C
	// and ConfigMap, annex for B).
	Server *server
	Dyn    dynamic.Interface
	// group is the group of the target's custom resource types.
	group string
}

// gvr is the resource that holds shape s for this target.
func (t *target) gvr(s shape) schema.GroupVersionResource {
	if s.Kind == shapeConfigMap.Kind {
		return schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	}
	return schema.GroupVersionResource{Group: t.group, Version: "v1", Resource: s.Plural}
}

// listPath is the URL path of a namespaced list of shape s.
func (t *target) listPath(s shape, ns string) string {
	gvr := t.gvr(s)
	if gvr.Group == "" {
		return "/api/v1/namespaces/" + ns + "/" + gvr.Resource
	}
	return "/apis/" + gvr.Group + "/" + gvr.Version + "/namespaces/" + ns + "/" + gvr.Resource
}

// newServer makes a server (and an HTTP client shared with the target's
// dynamic client) from cfg. Client-side rate limiting is off: the driver
// controls concurrency itself.
func newServer(name string, cfg *rest.Config) (*server, dynamic.Interface, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	cfg.Timeout = 0
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, nil, err
	}
	dyn, err := dynamic.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, nil, err
	}
	// envtest's host ends with a slash; the paths the driver appends start
	// with one.
	return &server{Name: name, Host: strings.TrimSuffix(cfg.Host, "/"), HTTP: hc, config: cfg}, dyn, nil
}

// bench holds the running environment and the targets.
type bench struct {
	env *framework.Environment
	kas *server // the kube-apiserver
	// annex is annex, reached straight with a system:masters client
	// certificate issued by the cluster's client CA.
	annex *server
	etcd  *server // the cluster's etcd (plain HTTP on loopback)

	A, B, C, CM *target
	adminDyn    dynamic.Interface
	crdClient   apiextensionsclient.Interface
	// hostedCache is spec.storage.cache of the HostedResources; empty for
	// annex's default.
	hostedCache string
}

// versions are the versions of the control plane's servers.
func (b *bench) versions(ctx context.Context) map[string]string {
	return map[string]string{
		"kube-apiserver": b.kas.version(ctx),
		"etcd (cluster)": b.etcd.version(ctx),
		"annex":          b.annex.version(ctx),
	}
}

func newBench(env *framework.Environment) (*bench, error) {
	kas, kasDyn, err := newServer("kube-apiserver", env.Config)
	if err != nil {
		return nil, err
	}
	annexCfg, err := env.AnnexAdminConfig("bench-direct")
	if err != nil {
		return nil, err
	}
	annex, annexDyn, err := newServer("annex", annexCfg)
	if err != nil {
		return nil, err
	}
	crdClient, err := apiextensionsclient.NewForConfig(env.Config)
	if err != nil {
		return nil, err
	}
	return &bench{
		env:       env,
		kas:       kas,
		annex:     annex,
		etcd:      &server{Name: "etcd", Host: env.EtcdURL(), HTTP: &http.Client{Timeout: 30 * time.Second}},
		A:         &target{Name: "A", Server: kas, Dyn: kasDyn, group: crdGroup},
		B:         &target{Name: "B", Server: annex, Dyn: annexDyn, group: hostedGroup},
		C:         &target{Name: "C", Server: kas, Dyn: kasDyn, group: hostedGroup},
		CM:        &target{Name: configMapTarget, Server: kas, Dyn: kasDyn},
		adminDyn:  kasDyn,
		crdClient: crdClient,
	}, nil
}

var namespacesGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// createNamespaces creates the cluster's namespaces; annex takes its
// namespaces from the cluster in aggregated mode, so B's objects need them
// too.
func (b *bench) createNamespaces(ctx context.Context, names ...string) error {
	for _, n := range names {
		ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": n}}}
		if _, err := b.adminDyn.Resource(namespacesGVR).Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", n, err)
		}
	}
	return nil
}

// installTypes creates the CRDs of A and the HostedResources of B and C for
// every shape, and waits until each is served on every path: A's through the
// kube-apiserver, the hosted ones straight on annex and through the
// aggregator.
func (b *bench) installTypes(ctx context.Context, probeNamespace string) error {
	for _, s := range crShapes {
		crd := &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: s.Plural + "." + crdGroup},
			Spec:       s.crdSpec(crdGroup),
		}
		if _, err := b.crdClient.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating CRD %s: %w", crd.Name, err)
		}
		spec, err := toMap(s.crdSpec(hostedGroup))
		if err != nil {
			return err
		}
		if b.hostedCache != "" {
			spec["storage"] = map[string]any{"backend": "default", "cache": b.hostedCache}
		}
		hr := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": framework.Group + "/" + framework.Version,
			"kind":       "HostedResource",
			"metadata":   map[string]any{"name": s.Plural + "." + hostedGroup},
			"spec":       spec,
		}}
		if _, err := b.adminDyn.Resource(framework.HostedResources).Create(ctx, hr, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating HostedResource %s: %w", hr.GetName(), err)
		}
	}
	// The aggregator and annex's discovery pick new types up
	// asynchronously; a list on each path says when a type is served.
	for _, t := range []*target{b.A, b.B, b.C} {
		for _, s := range crShapes {
			gvr := t.gvr(s)
			var lastErr error
			err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
				_, lastErr = t.Dyn.Resource(gvr).Namespace(probeNamespace).List(ctx, metav1.ListOptions{Limit: 1})
				return lastErr == nil, nil
			})
			if err != nil {
				return fmt.Errorf("%s is not served for %s: %w; last error: %v", gvr, t.Name, err, lastErr)
			}
		}
	}
	return nil
}

func toMap(v any) (map[string]any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(data, &m)
}
