//go:build integration

package rollout

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"annex.dev/annex/test/integration/framework"
)

// TestLeaseLost cuts a replica running with --leader-elect off the
// kube-apiserver for longer than its controllers' lease: the controllers
// stop, annex keeps serving direct requests (authorized from its cache), and
// the controllers run again once the cluster answers.
func TestLeaseLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	const namespace, service = "annex-lease-test", "annex-lease"
	dir := t.TempDir()
	etcdURL := framework.StartEtcd(t, dir)
	cert, err := framework.WriteServingCertificate(dir, "annex-serving", service+"."+namespace+".svc", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// The APIServices this replica registers point at a Service that does
	// not exist; the other tests of the package register their own.
	t.Cleanup(func() { deleteAPIServicesOf(t, service) })

	// Every connection annex makes to the cluster goes through the proxy.
	apiserver, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, apiserver.Host)
	kubeconfig := kubeconfigVia(t, dir, proxy.addr())
	args := []string{
		"--mode=aggregated",
		"--bind-address=127.0.0.1",
		"--tls-cert-file=" + cert.CertFile,
		"--tls-private-key-file=" + cert.KeyFile,
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		// Long enough to answer from the cache while the cluster is away.
		"--authorization-webhook-cache-authorized-ttl=5m",
		"--etcd-servers=" + etcdURL,
		"--leader-elect",
		"--apiservice-namespace=" + namespace,
		"--apiservice-service-name=" + service,
		"--apiservice-ca-bundle-file=" + cert.CAFile,
	}
	r := newReplica(t, "lease", dir, args, cert.CAPEM)
	if err := r.start(0); err != nil {
		t.Fatal(err)
	}
	if err := r.waitReady(ctx, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitLeading(ctx, cs, namespace, time.Time{}); err != nil {
		t.Fatal(err)
	}
	annex, err := dynamic.NewForConfig(env.FrontProxyConfig("https://"+r.addr(), cert.CAPEM, "lease-admin", "system:masters"))
	if err != nil {
		t.Fatal(err)
	}
	list := func() error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := annex.Resource(framework.HostedResources).List(ctx, metav1.ListOptions{})
		return err
	}
	if err := list(); err != nil {
		t.Fatalf("a direct request before the cluster goes away: %v", err)
	}

	proxy.setBlocked(true)
	t.Log("the cluster does not answer annex")
	var failures []string
	for blocked := time.Now(); time.Since(blocked) < 25*time.Second; time.Sleep(time.Second) {
		if err := r.Running(); err != nil {
			t.Fatalf("annex exited while the cluster did not answer: %v%s", err, r.LogTail(30))
		}
		if err := list(); err != nil {
			failures = append(failures, err.Error())
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d direct requests failed while the cluster did not answer, want none; the first: %s", len(failures), failures[0])
	}
	if !strings.Contains(r.Log(), "The controllers stopped") {
		t.Errorf("annex's log does not say the controllers stopped when the lease was lost%s", r.LogTail(30))
	}

	proxy.setBlocked(false)
	back := time.Now()
	t.Log("the cluster answers annex again")
	if err := waitLeading(ctx, cs, namespace, back); err != nil {
		t.Fatal(err)
	}
	t.Logf("annex leads again %s after the cluster came back", time.Since(back).Round(100*time.Millisecond))
	// The controllers work: a new type is established.
	hr := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(`apiVersion: annex.dev/v1alpha1
kind: HostedResource
metadata: {name: leases.lease.example.net}
spec:
  group: lease.example.net
  names: {kind: Lease, plural: leases}
  scope: Namespaced
  versions:
  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}
`), &hr.Object); err != nil {
		t.Fatal(err)
	}
	if _, err := annex.Resource(framework.HostedResources).Create(ctx, hr, metav1.CreateOptions{}); err != nil {
		t.Fatalf("declaring a type after the cluster came back: %v", err)
	}
	var conditions []any
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := annex.Resource(framework.HostedResources).Get(ctx, hr.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conditions, _, _ = unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conditions {
			if c, ok := c.(map[string]any); ok && c["type"] == "Established" && c["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the controllers did not establish a new type after the cluster came back: conditions %v%s", conditions, r.LogTail(30))
	}
}

// waitLeading waits until the controllers' Lease in namespace is held and
// was renewed after since.
func waitLeading(ctx context.Context, cs kubernetes.Interface, namespace string, since time.Time) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		lease, err := cs.CoordinationV1().Leases(namespace).Get(ctx, "annex-controllers", metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if lease.Spec.HolderIdentity == nil || lease.Spec.RenewTime == nil {
			last = "no holder"
			return false, nil
		}
		last = *lease.Spec.HolderIdentity + " renewed at " + lease.Spec.RenewTime.String()
		return lease.Spec.RenewTime.After(since), nil
	})
	if err != nil {
		return fmt.Errorf("annex's controllers did not take their Lease: %w; last seen: %s", err, last)
	}
	return nil
}

// kubeconfigVia writes a copy of the cluster's kubeconfig that reaches the
// kube-apiserver at addr.
func kubeconfigVia(t *testing.T, dir, addr string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(env.KubeconfigFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, cluster := range cfg.Clusters {
		cluster.Server = "https://" + addr
	}
	path := dir + "/kubeconfig-via-proxy"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// deleteAPIServicesOf deletes the APIServices that point at service.
func deleteAPIServicesOf(t *testing.T, service string) {
	dyn := dynamicClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := dyn.Resource(apiServiceGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Errorf("listing APIServices: %v", err)
		return
	}
	for _, svc := range list.Items {
		if name, _, _ := unstructured.NestedString(svc.Object, "spec", "service", "name"); name != service {
			continue
		}
		if err := dyn.Resource(apiServiceGVR).Delete(ctx, svc.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting APIService %s: %v", svc.GetName(), err)
		}
	}
}

// proxy forwards TCP connections to a target. Blocked, it stands for a
// control plane that has stopped answering: open connections are cut, and
// new ones are accepted but never answered.
type proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	blocked bool
	conns   map[net.Conn]struct{}
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() {
		ln.Close()
		p.cut()
	})
	go p.serve()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[conn] = struct{}{}
		blocked := p.blocked
		p.mu.Unlock()
		if !blocked {
			go p.forward(conn)
		}
	}
}

func (p *proxy) forward(conn net.Conn) {
	upstream, err := net.Dial("tcp", p.target)
	if err != nil {
		conn.Close()
		return
	}
	p.mu.Lock()
	p.conns[upstream] = struct{}{}
	p.mu.Unlock()
	go func() {
		_, _ = io.Copy(upstream, conn)
		upstream.Close()
	}()
	_, _ = io.Copy(conn, upstream)
	conn.Close()
}

// setBlocked blocks or unblocks the proxy; either way the connections open
// until then are cut, so that clients connect anew.
func (p *proxy) setBlocked(blocked bool) {
	p.mu.Lock()
	p.blocked = blocked
	p.mu.Unlock()
	p.cut()
}

func (p *proxy) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for conn := range conns {
		conn.Close()
	}
}
