//go:build integration

package framework

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AnnexAdminConfig provisions a system:masters user named name with a client
// certificate issued by the cluster's client CA, and returns a configuration
// that sends its requests straight to annex, bypassing the aggregator. annex
// trusts the cluster's client CA (from the extension-apiserver-authentication
// ConfigMap) and asks the cluster to authorize, so the user has the same
// rights on annex as through the cluster.
func (e *Environment) AnnexAdminConfig(name string) (*rest.Config, error) {
	return e.AnnexUserConfig(name, "system:masters")
}

// AnnexUserConfig is AnnexAdminConfig for a user in the given groups only:
// what the cluster's RBAC grants that user, it may try on annex directly.
func (e *Environment) AnnexUserConfig(name string, groups ...string) (*rest.Config, error) {
	user, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, fmt.Errorf("provisioning user %q: %w", name, err)
	}
	cfg := rest.CopyConfig(user.Config())
	cfg.Host = e.annexURL()
	cfg.CAData = append([]byte(nil), e.annexCA...)
	cfg.CAFile = ""
	return cfg, nil
}

// AnnexFrontProxyConfig returns a configuration that sends requests straight
// to annex as the cluster's aggregator does: with the front-proxy client
// certificate, asserting the user and groups in request headers. annex
// trusts these headers as it trusts the aggregator.
func (e *Environment) AnnexFrontProxyConfig(name string, groups ...string) *rest.Config {
	return e.FrontProxyConfig(e.annexURL(), e.annexCA, name, groups...)
}

// FrontProxyConfig is AnnexFrontProxyConfig for an annex other than the
// environment's own, at host, serving with a certificate of caPEM.
func (e *Environment) FrontProxyConfig(host string, caPEM []byte, name string, groups ...string) *rest.Config {
	cfg := &rest.Config{
		Host: host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   append([]byte(nil), caPEM...),
			CertFile: filepath.Join(e.Dir, frontProxyClientName+".crt"),
			KeyFile:  filepath.Join(e.Dir, frontProxyClientName+".key"),
		},
	}
	return withRemoteUser(cfg, name, groups...)
}

// AnnexAnonymousConfig returns a configuration that sends requests straight
// to annex with no credentials at all.
func (e *Environment) AnnexAnonymousConfig() *rest.Config {
	return &rest.Config{Host: e.annexURL(), TLSClientConfig: rest.TLSClientConfig{CAData: append([]byte(nil), e.annexCA...)}}
}

// AnnexForgedConfig returns a configuration that sends requests straight
// to annex asserting name and groups in the aggregator's request headers,
// with a client certificate named commonName: signed by the front-proxy CA
// when byFrontProxyCA, else by a CA of its own that nobody trusts; or with
// no certificate when commonName is empty.
func (e *Environment) AnnexForgedConfig(commonName string, byFrontProxyCA bool, name string, groups ...string) (*rest.Config, error) {
	cfg := e.AnnexAnonymousConfig()
	if commonName != "" {
		ca := e.frontProxyCA
		file := "forged-front-proxy-" + commonName
		if !byFrontProxyCA {
			var err error
			if ca, err = newCA(e.Dir, "untrusted-ca"); err != nil {
				return nil, err
			}
			file = "untrusted-" + commonName
		}
		pair, err := issue(ca, e.Dir, file, commonName)
		if err != nil {
			return nil, err
		}
		cfg.CertFile, cfg.KeyFile = pair.CertFile, pair.KeyFile
	}
	return withRemoteUser(cfg, name, groups...), nil
}

// withRemoteUser makes cfg assert name and groups in the request headers
// the aggregator sets.
func withRemoteUser(cfg *rest.Config, name string, groups ...string) *rest.Config {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			req = req.Clone(req.Context())
			req.Header.Set("X-Remote-User", name)
			for _, g := range groups {
				req.Header.Add("X-Remote-Group", g)
			}
			return rt.RoundTrip(req)
		})
	})
	return cfg
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func (e *Environment) annexURL() string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(e.AnnexPort))
}

// AnnexURL is the https URL of annex, for a test's own HTTP client (one of
// the configurations above gives it its credentials).
func (e *Environment) AnnexURL() string { return e.annexURL() }

// AnnexPid is the process id of annex, for its figures under /proc; 0
// when the environment has not started annex (StartControlPlane).
func (e *Environment) AnnexPid() int {
	if e.annex == nil || e.annex.Process() == nil {
		return 0
	}
	return e.annex.Process().Pid()
}

// AnnexDataDir is where annex keeps its embedded etcd's data.
func (e *Environment) AnnexDataDir() string { return filepath.Join(e.Dir, "annex-data") }

// AnnexRuntimeDir is annex's --runtime-dir, where it writes the client keys
// of StorageBackends' etcd clusters.
func (e *Environment) AnnexRuntimeDir() string { return filepath.Join(e.Dir, "annex-run") }

// AnnexServingPair returns the PEM certificate and key annex serves with.
func (e *Environment) AnnexServingPair() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(filepath.Join(e.Dir, "annex-serving.crt")); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = os.ReadFile(filepath.Join(e.Dir, "annex-serving.key")); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// AnnexMetrics reads annex's /metrics, as an admin, and parses it.
func (e *Environment) AnnexMetrics(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	cfg, err := e.AnnexAdminConfig("metrics-reader")
	if err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.AnnexURL()+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("annex's /metrics answered %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing annex's /metrics: %w", err)
	}
	return families, nil
}
