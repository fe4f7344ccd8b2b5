package server

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/authorization/path"
	"k8s.io/apiserver/pkg/authorization/union"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/admission/backendchange"
	"annex.dev/annex/pkg/admission/dryrunsize"
	standaloneadmission "annex.dev/annex/pkg/admission/standalone"
	"annex.dev/annex/pkg/certs"
)

// adminGroup is the group standalone mode's admin belongs to; the
// authorizer lets it do anything, as the kube-apiserver does.
const adminGroup = "system:masters"

// completeStandalone turns off everything that needs a cluster: there is no
// cluster to delegate authentication, authorization, admission or flow
// control to. Clients authenticate with certificates of annex's own CA, and
// the max-in-flight limits bound concurrency instead of APF.
func (o *Options) completeStandalone() {
	ro := o.RecommendedOptions
	// Standalone mode serves one machine's user: listen on loopback unless
	// told otherwise, since anyone who reaches the port gets annex's own
	// authentication to face, not a cluster's.
	if o.flags == nil || !o.flags.Changed("bind-address") {
		ro.SecureServing.BindAddress = net.ParseIP("127.0.0.1")
	}
	ro.CoreAPI = nil
	ro.Admission = nil
	ro.Features.EnablePriorityAndFairness = false
	ro.Authentication.RemoteKubeConfigFileOptional = true
	ro.Authentication.SkipInClusterLookup = true
	// There is no cluster to send SubjectAccessReviews to: standalone mode
	// authorizes by itself (standaloneAuthorizer), so the delegated options,
	// which would only warn that they have no cluster, are not applied.
	o.standaloneAuthorization = ro.Authorization
	ro.Authorization = nil
	// No garbage collector runs without a cluster: a foreground deletion's
	// finalizer would never be removed.
	ro.Etcd.EnableGarbageCollection = false
}

// applyStandaloneAdmission runs NamespaceLifecycle against annex's own
// namespaces (objects cannot be created in a namespace that does not exist
// or is being deleted), then annex's own plugins that need no cluster.
// annexCodec is the storage codec of annex.dev.
func applyStandaloneAdmission(config *genericapiserver.RecommendedConfig, annexCodec runtime.Encoder) error {
	lifecycle, start, err := standaloneadmission.NewNamespaceLifecycle(config.LoopbackClientConfig)
	if err != nil {
		return err
	}
	backendChange, err := backendchange.New(config.LoopbackClientConfig)
	if err != nil {
		return err
	}
	dryRunSize, err := dryrunsize.New(config.LoopbackClientConfig, annexCodec)
	if err != nil {
		return err
	}
	config.AdmissionControl = admission.NewChainHandler(lifecycle, backendChange, dryRunSize)
	return config.AddPostStartHook("start-namespace-lifecycle-informers", func(ctx genericapiserver.PostStartHookContext) error {
		start(ctx.Context)
		return nil
	})
}

// standaloneAuthorizer allows everything to the admin group and the
// always-allowed paths (health checks) to everyone, and nothing else: what
// the delegated authorizer of authz allows when it has no cluster to ask.
func standaloneAuthorizer(authz *genericoptions.DelegatingAuthorizationOptions) (authorizer.Authorizer, error) {
	authorizers := []authorizer.Authorizer{authorizerfactory.NewPrivilegedGroups(authz.AlwaysAllowGroups...)}
	if len(authz.AlwaysAllowPaths) > 0 {
		paths, err := path.NewAuthorizer(authz.AlwaysAllowPaths)
		if err != nil {
			return nil, err
		}
		authorizers = append(authorizers, paths)
	}
	klog.InfoS("Standalone mode: no cluster to delegate authorization to; members of these groups may do anything, everyone else only the health paths",
		"groups", authz.AlwaysAllowGroups, "paths", authz.AlwaysAllowPaths)
	return union.New(authorizers...), nil
}

func (o *Options) pkiDir() string { return filepath.Join(o.DataDir, "pki") }

// standaloneIdentity is what standalone mode's admin kubeconfig is made of:
// annex's CA and the admin's client certificate.
type standaloneIdentity struct {
	ca    *certs.CA
	admin certs.Pair
}

// standaloneCertificates issues (or reuses) annex's CA, its serving
// certificate unless one was given, and the admin's client certificate.
func (o *Options) standaloneCertificates() (*standaloneIdentity, error) {
	ca, err := certs.LoadOrCreateCA(o.pkiDir(), "ca", "annex-ca")
	if err != nil {
		return nil, err
	}
	serving := &o.RecommendedOptions.SecureServing.ServerCert.CertKey
	if serving.CertFile == "" && serving.KeyFile == "" {
		hosts, ips := servingNames(o.RecommendedOptions.SecureServing.BindAddress)
		pair, err := ca.Ensure(o.pkiDir(), "serving", certs.Spec{
			CommonName: "annex-apiserver", DNSNames: hosts, IPs: ips,
			Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return nil, err
		}
		serving.CertFile, serving.KeyFile = pair.CertFile, pair.KeyFile
	}
	admin, err := ca.Ensure(o.pkiDir(), "admin", certs.Spec{
		CommonName: "annex-admin", Organization: []string{adminGroup},
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	if o.RecommendedOptions.Authentication.ClientCert.ClientCA == "" {
		o.RecommendedOptions.Authentication.ClientCert.ClientCA = ca.CertFile
	}
	return &standaloneIdentity{ca: ca, admin: admin}, nil
}

// servingNames are the names the serving certificate is valid for.
func servingNames(bind net.IP) ([]string, []net.IP) {
	hosts := []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "localhost" {
		hosts = append(hosts, h)
	}
	ips := []net.IP{net.ParseIP("127.0.0.1").To4(), net.IPv6loopback}
	if bind != nil && !bind.IsUnspecified() && !bind.IsLoopback() {
		ips = append(ips, bind)
	}
	return hosts, ips
}

// writeAdminKubeconfig writes a kubeconfig for the admin that reaches the
// server at addr and trusts annex's CA.
func writeAdminKubeconfig(path string, ca *certs.CA, admin certs.Pair, addr net.Addr) error {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	if _, err := strconv.Atoi(port); err != nil {
		return fmt.Errorf("serving address %s has no port", addr)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["annex"] = &clientcmdapi.Cluster{
		Server:                   "https://" + net.JoinHostPort(host, port),
		CertificateAuthorityData: ca.CertPEM,
	}
	certPEM, err := os.ReadFile(admin.CertFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(admin.KeyFile)
	if err != nil {
		return err
	}
	cfg.AuthInfos["annex-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["annex"] = &clientcmdapi.Context{Cluster: "annex", AuthInfo: "annex-admin"}
	cfg.CurrentContext = "annex"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeFileAtomically(path, data)
}

// writeFileAtomically replaces path with data through a temporary file in
// the same directory, so that a reader, such as a script that waits for the
// admin kubeconfig, never reads a file half written.
func writeFileAtomically(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
