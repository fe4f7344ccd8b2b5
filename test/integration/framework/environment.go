//go:build integration

// Package framework starts the control plane the integration tests run
// against: a real kube-apiserver and etcd (through controller-runtime's
// envtest) with the aggregation layer configured, and the annex binary beside
// them, registered with the cluster through an APIService exactly as a Helm
// install would register it.
package framework

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"annex.dev/annex/pkg/certs"
	"annex.dev/annex/test/annexserver"
	"annex.dev/annex/test/ports"
	"annex.dev/annex/test/process"
)

const (
	// AssetsEnv names the directory holding kube-apiserver, etcd and kubectl.
	AssetsEnv = "KUBEBUILDER_ASSETS"
	// AnnexBinEnv names the annex-apiserver binary under test.
	AnnexBinEnv = annexserver.BinEnv

	// Namespace and ServiceName locate annex for the aggregator, as the Helm
	// chart does; the serving certificate carries ServiceName.Namespace.svc.
	Namespace   = "annex-system"
	ServiceName = "annex"
	// SecretNamespace is where StorageBackends' Secrets live: annex's
	// default --storage-secret-namespaces, apart from Namespace.
	SecretNamespace = "annex-storage-secrets"
	// Group and Version are what annex serves.
	Group   = "annex.dev"
	Version = "v1alpha1"

	frontProxyClientName = "front-proxy-client"
	registrationTimeout  = 60 * time.Second
	annexStopTimeout     = 15 * time.Second
)

var (
	// HostedResources and StorageBackends are annex's resources.
	HostedResources = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "hostedresources"}
	StorageBackends = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "storagebackends"}

	apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
)

// Environment is a running kube-apiserver with annex aggregated into it.
// Every client it hands out talks to the kube-apiserver, never to annex.
type Environment struct {
	// Config is an admin (system:masters) client configuration for the
	// kube-apiserver.
	Config *rest.Config
	// KubeconfigFile holds Config as a kubeconfig, for kubectl.
	KubeconfigFile string
	// Dir holds certificates, kubeconfigs, annex's data and the logs.
	Dir string
	// AnnexLog receives annex's stdout and stderr.
	AnnexLog string
	// APIServerLog receives the kube-apiserver's stdout and stderr.
	APIServerLog string
	// AnnexPort is the port annex serves on (127.0.0.1 only).
	AnnexPort int
	// KeepDir leaves Dir in place at Stop, for a post-mortem.
	KeepDir bool

	assets string
	env    *envtest.Environment
	// frontProxyCA signs the front-proxy client certificate annex trusts
	// request headers from.
	frontProxyCA *certs.CA
	annex        *annexserver.Server
	annexCA      []byte
	// replicas are the annex processes of StartReplicas, annex first; nil
	// for one.
	replicas []*annexserver.Server
	// proxy is the Service's emulated kube-proxy in front of replicas.
	proxy    *serviceProxy
	logFiles []*os.File
}

// Start brings up etcd, the kube-apiserver and annex, with annexArgs added to
// annex's flags, registers annex with the kube-apiserver and waits until
// annex's API answers through it. On error it stops whatever it started and
// the error carries annex's last log lines.
func Start(ctx context.Context, annexArgs ...string) (*Environment, error) {
	return start(ctx, 1, nil, annexArgs)
}

// StartWithAPIServerFlags is Start with further flags of the kube-apiserver,
// by name without the dashes.
func StartWithAPIServerFlags(ctx context.Context, apiServerFlags map[string]string, annexArgs ...string) (*Environment, error) {
	return start(ctx, 1, apiServerFlags, annexArgs)
}

// start starts the environment with replicas annex processes (see
// StartReplicas).
func start(ctx context.Context, replicas int, apiServerFlags map[string]string, annexArgs []string) (_ *Environment, retErr error) {
	assets := os.Getenv(AssetsEnv)
	if assets == "" {
		return nil, fmt.Errorf("%s is not set: point it at the directory printed by hack/tools/install.sh", AssetsEnv)
	}
	annexBin := os.Getenv(AnnexBinEnv)
	if annexBin == "" {
		return nil, fmt.Errorf("%s is not set: build annex with `go build -o /tmp/annex-apiserver ./cmd/annex-apiserver` and set %s=/tmp/annex-apiserver", AnnexBinEnv, AnnexBinEnv)
	}
	for _, bin := range []string{filepath.Join(assets, "kube-apiserver"), filepath.Join(assets, "etcd"), filepath.Join(assets, "kubectl"), annexBin} {
		if err := checkExecutable(bin); err != nil {
			return nil, err
		}
	}

	dir, err := os.MkdirTemp("", "annex-integration-")
	if err != nil {
		return nil, err
	}
	e := &Environment{Dir: dir, assets: assets}
	defer func() {
		if retErr != nil {
			retErr = fmt.Errorf("%w%s", retErr, e.annexLogTail(60))
			e.KeepDir = true
			if err := e.Stop(); err != nil {
				retErr = fmt.Errorf("%w (and stopping: %v)", retErr, err)
			}
			retErr = fmt.Errorf("%w\n(files kept in %s)", retErr, dir)
		}
	}()

	if err := e.startCluster(apiServerFlags); err != nil {
		return nil, err
	}
	if replicas > 1 {
		if e.proxy, err = startServiceProxy(); err != nil {
			return nil, err
		}
	}
	if err := e.startAnnex(annexBin, annexArgs); err != nil {
		return nil, err
	}
	if err := e.launchReplicas(replicas); err != nil {
		return nil, err
	}
	if err := e.register(ctx); err != nil {
		return nil, err
	}
	if err := e.waitForAnnex(ctx); err != nil {
		return nil, err
	}
	if err := e.waitForReplicas(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// startCluster starts etcd and a kube-apiserver whose aggregator can proxy to
// annex: it trusts a front-proxy CA for request headers and presents the
// front-proxy client certificate to annex. apiServerFlags are further flags
// of the kube-apiserver.
func (e *Environment) startCluster(apiServerFlags map[string]string) error {
	frontProxyCA, err := newCA(e.Dir, "front-proxy-ca")
	if err != nil {
		return err
	}
	e.frontProxyCA = frontProxyCA
	frontProxyCAFile := frontProxyCA.CertFile
	client, err := issue(frontProxyCA, e.Dir, frontProxyClientName, frontProxyClientName)
	if err != nil {
		return err
	}
	clientCert, clientKey := client.CertFile, client.KeyFile

	e.APIServerLog = filepath.Join(e.Dir, "kube-apiserver.log")
	apiServerOut, err := e.createLog(e.APIServerLog)
	if err != nil {
		return err
	}
	etcdOut, err := e.createLog(filepath.Join(e.Dir, "etcd.log"))
	if err != nil {
		return err
	}

	e.env = &envtest.Environment{
		BinaryAssetsDirectory:    e.assets,
		ControlPlaneStartTimeout: 90 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	// envtest would pick its ports by listening on port 0 and closing the
	// listener, a window in which any connection on the machine can take the
	// port; reserved ports cannot be taken.
	free, err := ports.FreeN(3)
	if err != nil {
		return err
	}
	etcd := &envtest.Etcd{Out: etcdOut, Err: etcdOut,
		URL: &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(free[0]))}}
	etcd.Configure().Set("listen-peer-urls", "http://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(free[1])))
	e.env.ControlPlane.Etcd = etcd
	apiServer := e.env.ControlPlane.GetAPIServer()
	apiServer.Out, apiServer.Err = apiServerOut, apiServerOut
	apiServer.SecurePort = free[2]
	apiServer.SecureServing.ListenAddr.Address = "127.0.0.1"
	apiServer.Configure().
		// envtest defaults to RBAC as well; say so explicitly because the
		// authorization tests depend on users without roles being denied.
		Set("authorization-mode", "RBAC").
		Set("requestheader-client-ca-file", frontProxyCAFile).
		Set("requestheader-allowed-names", frontProxyClientName).
		Set("requestheader-username-headers", "X-Remote-User").
		Set("requestheader-group-headers", "X-Remote-Group").
		Set("requestheader-extra-headers-prefix", "X-Remote-Extra-").
		Set("proxy-client-cert-file", clientCert).
		Set("proxy-client-key-file", clientKey)
	for name, value := range apiServerFlags {
		apiServer.Configure().Set(name, value)
	}

	cfg, err := e.env.Start()
	if err != nil {
		return fmt.Errorf("starting kube-apiserver and etcd (log: %s): %w", e.APIServerLog, err)
	}
	e.Config = cfg
	e.KubeconfigFile = filepath.Join(e.Dir, "admin.kubeconfig")
	return os.WriteFile(e.KubeconfigFile, e.env.KubeConfig, 0o600)
}

// startAnnex starts the annex binary in aggregated mode, with extraArgs
// added to its flags, and a serving certificate the aggregator accepts for
// annex.annex-system.svc. It does not wait: annex is ready only once it is
// registered.
func (e *Environment) startAnnex(bin string, extraArgs []string) error {
	ca, err := newCA(e.Dir, "annex-ca")
	if err != nil {
		return err
	}
	serving, err := issue(ca, e.Dir, "annex-serving", "annex", ServiceName+"."+Namespace+".svc", "localhost", "127.0.0.1")
	if err != nil {
		return err
	}
	e.annexCA = ca.CertPEM

	// annex gets its own system:masters identity so its requests are easy to
	// tell apart from the tests' in the kube-apiserver's logs.
	user, err := e.env.AddUser(envtest.User{Name: "annex-apiserver", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("provisioning annex's cluster user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfigFile := filepath.Join(e.Dir, "annex.kubeconfig")
	if err := os.WriteFile(kubeconfigFile, kubeconfig, 0o600); err != nil {
		return err
	}

	if e.AnnexPort, err = FreePort(); err != nil {
		return err
	}
	args := []string{
		"--tls-cert-file=" + serving.CertFile,
		"--tls-private-key-file=" + serving.KeyFile,
		"--kubeconfig=" + kubeconfigFile,
		"--authentication-kubeconfig=" + kubeconfigFile,
		"--authorization-kubeconfig=" + kubeconfigFile,
		"--runtime-dir=" + e.AnnexRuntimeDir(),
		// Hosted groups are registered through the same Service as annex.dev.
		"--apiservice-namespace=" + Namespace,
		"--apiservice-service-name=" + ServiceName,
		"--apiservice-service-port=" + strconv.Itoa(e.serviceport()),
		"--apiservice-ca-bundle-file=" + ca.CertFile,
	}
	e.AnnexLog = filepath.Join(e.Dir, "annex.log")
	probe, err := e.AnnexAdminConfig("readiness-probe")
	if err != nil {
		return err
	}
	e.annex = &annexserver.Server{
		Bin:         bin,
		Mode:        annexserver.Aggregated,
		Dir:         e.Dir,
		DataDir:     e.AnnexDataDir(),
		Port:        e.AnnexPort,
		Args:        append(args, extraArgs...),
		LogFile:     e.AnnexLog,
		Probe:       probe,
		StopTimeout: annexStopTimeout,
	}
	return e.annex.Launch()
}

// register creates what the Helm chart creates for the aggregator: a
// namespace, an ExternalName Service resolving to localhost, and the
// APIService trusting annex's CA.
func (e *Environment) register(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return err
	}
	for _, name := range []string{Namespace, SecretNamespace} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", name, err)
		}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: ServiceName, Namespace: Namespace},
		Spec: corev1.ServiceSpec{
			Type:         corev1.ServiceTypeExternalName,
			ExternalName: "localhost",
			Ports:        []corev1.ServicePort{{Name: "https", Port: int32(e.serviceport())}},
		},
	}
	if _, err := cs.CoreV1().Services(Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating service %s/%s: %w", Namespace, ServiceName, err)
	}

	dyn, err := dynamic.NewForConfig(e.Config)
	if err != nil {
		return err
	}
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": Version + "." + Group},
		"spec": map[string]any{
			"group":   Group,
			"version": Version,
			"service": map[string]any{
				"namespace": Namespace,
				"name":      ServiceName,
				"port":      int64(e.serviceport()),
			},
			// []byte fields are base64 strings in JSON.
			"caBundle":             base64.StdEncoding.EncodeToString(e.annexCA),
			"groupPriorityMinimum": int64(1000),
			"versionPriority":      int64(15),
		},
	}}
	if _, err := dyn.Resource(apiServices).Create(ctx, apiService, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating APIService %s.%s: %w", Version, Group, err)
	}
	return nil
}

// waitForAnnex waits until the APIService is Available and a list of
// hostedresources succeeds through the kube-apiserver.
func (e *Environment) waitForAnnex(ctx context.Context) error {
	dyn, err := dynamic.NewForConfig(e.Config)
	if err != nil {
		return err
	}
	var available string // the last Available condition seen, for the error
	var lastErr error
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, registrationTimeout, true, func(ctx context.Context) (bool, error) {
		if err := e.annex.Running(); err != nil {
			return false, fmt.Errorf("annex exited before it became available: %v", err)
		}
		svc, err := dyn.Resource(apiServices).Get(ctx, Version+"."+Group, metav1.GetOptions{})
		if err != nil {
			lastErr = err
			return false, nil
		}
		available = "no Available condition yet"
		conditions, _, _ := unstructured.NestedSlice(svc.Object, "status", "conditions")
		ready := false
		for _, c := range conditions {
			c, _ := c.(map[string]any)
			if c["type"] == "Available" {
				available = fmt.Sprintf("Available=%v reason=%v message=%v", c["status"], c["reason"], c["message"])
				ready = c["status"] == "True"
			}
		}
		if !ready {
			return false, nil
		}
		if _, err := dyn.Resource(HostedResources).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
			lastErr = fmt.Errorf("listing hostedresources through the kube-apiserver: %w", err)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("annex did not become available through the kube-apiserver within %s: %w; APIService %s.%s: %s; last error: %v",
			registrationTimeout, err, Version, Group, available, lastErr)
	}
	return nil
}

// EtcdURL is the client URL of the cluster's etcd, for tests that check
// what the cluster stores.
func (e *Environment) EtcdURL() string { return e.env.ControlPlane.Etcd.URL.String() }

// NewUser provisions a user with no groups beyond system:authenticated (and
// so, until a test binds it to a role, no permissions) and returns a client
// configuration for it against the kube-apiserver.
func (e *Environment) NewUser(name string) (*rest.Config, error) {
	user, err := e.env.AddUser(envtest.User{Name: name}, &rest.Config{QPS: 100, Burst: 200})
	if err != nil {
		return nil, fmt.Errorf("provisioning user %q: %w", name, err)
	}
	return user.Config(), nil
}

// Kubectl runs the test kubectl as the admin user against the
// kube-apiserver and returns its stdout and stderr.
func (e *Environment) Kubectl(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	all := append([]string{
		"--kubeconfig=" + e.KubeconfigFile,
		// A private cache so discovery never comes from an earlier run.
		"--cache-dir=" + filepath.Join(e.Dir, "kubectl-cache"),
	}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(e.assets, "kubectl"), all...)
	var outBuf, errBuf strings.Builder
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, errBuf.String())
	}
	return outBuf.String(), errBuf.String(), err
}

// DumpLogs writes the last lines of annex's log to w, and where the full
// logs are.
func (e *Environment) DumpLogs(w io.Writer) {
	if e.AnnexLog == "" {
		fmt.Fprintf(w, "(kube-apiserver log: %s)\n", e.APIServerLog)
		return
	}
	fmt.Fprintf(w, "%s\n(full logs: %s and %s)\n", e.annexLogTail(100), e.AnnexLog, e.APIServerLog)
}

// Stop terminates annex, then the kube-apiserver and etcd, and removes Dir
// unless KeepDir is set.
func (e *Environment) Stop() error {
	var errs []error
	if e.annex != nil {
		if err := e.annex.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range e.replicas[min(1, len(e.replicas)):] {
		if err := r.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.proxy != nil {
		e.proxy.stop()
	}
	if e.env != nil {
		if err := e.env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping kube-apiserver and etcd: %w", err))
		}
	}
	for _, f := range e.logFiles {
		_ = f.Close()
	}
	if !e.KeepDir {
		if err := os.RemoveAll(e.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Environment) createLog(path string) (*os.File, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	e.logFiles = append(e.logFiles, f)
	return f, nil
}

// annexLogTail returns the last n lines of annex's log, formatted to be
// appended to an error, or "" when there is no log.
func (e *Environment) annexLogTail(n int) string {
	if e.AnnexLog == "" {
		return ""
	}
	return process.FileTail(e.AnnexLog, n)
}

// FreePort returns a port of 127.0.0.1 for a server that this test process
// starts, reserved so that no other test and no connection on the machine
// takes it before the server binds it (see package ports).
func FreePort() (int, error) { return ports.Free() }

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("test binary missing: %w", err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("test binary %s is not an executable file", path)
	}
	return nil
}

// RunTests is a test package's TestMain body: it starts an environment with
// start, hands it to the package with set, runs the tests and stops the
// environment. When a test failed, it keeps the environment's files and
// prints the end of its logs. It returns the exit code for os.Exit.
func RunTests(m *testing.M, start func(context.Context) (*Environment, error), set func(*Environment)) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	e, err := start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting the test environment: %v\n", err)
		return 1
	}
	set(e)
	code := m.Run()
	if code != 0 {
		e.KeepDir = true
		e.DumpLogs(os.Stderr)
		fmt.Fprintf(os.Stderr, "files kept in %s\n", e.Dir)
	}
	if err := e.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the test environment: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
