//go:build integration

package integration

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"annex.dev/annex/test/integration/framework"
)

// refused fails the test unless listing StorageBackends with cfg is
// refused as unauthenticated (401) or unauthorized (403).
func refused(t *testing.T, cfg *rest.Config) error {
	t.Helper()
	_, err := dynamicFor(t, cfg).Resource(framework.StorageBackends).List(testContext(t), metav1.ListOptions{})
	if err == nil {
		t.Fatal("listing storagebackends succeeded, want 401 or 403")
	}
	if !apierrors.IsUnauthorized(err) && !apierrors.IsForbidden(err) {
		t.Fatalf("listing storagebackends: want 401 or 403, got %v", err)
	}
	return err
}

// TestAuthenticationNegatives sends requests that claim an identity they
// may not, straight to annex and through the aggregator: annex never
// takes the claim.
func TestAuthenticationNegatives(t *testing.T) {
	t.Run("the aggregator's headers with its own certificate are believed", func(t *testing.T) {
		// The control: what the other cases forge works when genuine.
		cfg := env.AnnexFrontProxyConfig("front-proxy-admin", "system:masters")
		if _, err := dynamicFor(t, cfg).Resource(framework.StorageBackends).List(testContext(t), metav1.ListOptions{}); err != nil {
			t.Fatalf("listing storagebackends as system:masters through the front-proxy certificate: %v", err)
		}
	})
	t.Run("forged headers without a client certificate", func(t *testing.T) {
		cfg, err := env.AnnexForgedConfig("", false, "admin", "system:masters")
		if err != nil {
			t.Fatal(err)
		}
		refused(t, cfg)
	})
	t.Run("a front-proxy CA certificate with a name not allowed", func(t *testing.T) {
		cfg, err := env.AnnexForgedConfig("intruder", true, "admin", "system:masters")
		if err != nil {
			t.Fatal(err)
		}
		refused(t, cfg)
	})
	t.Run("the front-proxy client's name from another CA", func(t *testing.T) {
		cfg, err := env.AnnexForgedConfig("front-proxy-client", false, "admin", "system:masters")
		if err != nil {
			t.Fatal(err)
		}
		refused(t, cfg)
	})
	t.Run("anonymous", func(t *testing.T) {
		refused(t, env.AnnexAnonymousConfig())
	})
	t.Run("a user the cluster denies", func(t *testing.T) {
		err := refused(t, env.AnnexFrontProxyConfig(uniqueName("denied")))
		if !apierrors.IsForbidden(err) {
			t.Errorf("a user the cluster's RBAC does not allow: want 403, got %v", err)
		}
	})
	t.Run("forged headers through the aggregator", func(t *testing.T) {
		user := uniqueName("mallory")
		cfg, err := env.NewUser(user)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return roundTripper(func(req *http.Request) (*http.Response, error) {
				req = req.Clone(req.Context())
				req.Header.Set("X-Remote-User", "admin")
				req.Header.Set("X-Remote-Group", "system:masters")
				return rt.RoundTrip(req)
			})
		})
		err = refused(t, cfg)
		if !strings.Contains(err.Error(), user) {
			t.Errorf("the refusal is not about the user who sent the request, %s: %v", user, err)
		}
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestTransportNegatives checks what annex's listener refuses: TLS below
// 1.2, redirects from API paths, and a protocol upgrade on a resource path.
func TestTransportNegatives(t *testing.T) {
	admin := env.AnnexFrontProxyConfig("front-proxy-admin", "system:masters")
	host, err := url.Parse(admin.Host)
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig, err := rest.TLSConfigFor(admin)
	if err != nil {
		t.Fatal(err)
	}

	for _, version := range []uint16{tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			cfg := tlsConfig.Clone()
			cfg.MinVersion, cfg.MaxVersion = version, version
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", host.Host, cfg)
			if err == nil {
				conn.Close()
			}
			switch {
			case version < tls.VersionTLS12 && err == nil:
				t.Errorf("annex accepted a %s handshake", tls.VersionName(version))
			case version >= tls.VersionTLS12 && err != nil:
				// The control: the same handshake at 1.2 works.
				t.Errorf("a %s handshake failed: %v", tls.VersionName(version), err)
			}
		})
	}

	t.Run("no redirect from an API path", func(t *testing.T) {
		client, err := rest.HTTPClientFor(admin)
		if err != nil {
			t.Fatal(err)
		}
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		for _, path := range []string{
			"/", "/api", "/api/", "/api/v1", "/api/v1/", "/apis", "/apis/",
			"/apis/annex.dev", "/apis/annex.dev/", "/apis/annex.dev/v1alpha1", "/apis/annex.dev/v1alpha1/",
			"/apis/annex.dev/v1alpha1/storagebackends/", "/apis/annex.dev/v1alpha1//storagebackends",
			"/apis/apiextensions.k8s.io", "/apis/no.such.group/v1/things", "/apis/no.such.group/v1/things/",
			"/openapi/v2", "/openapi/v3", "/openapi/v3/", "/version", "/version/",
		} {
			req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, admin.Host+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			resp.Body.Close()
			if resp.StatusCode >= 300 && resp.StatusCode < 400 {
				t.Errorf("GET %s answered %d to %s", path, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
	})

	t.Run("an upgrade on a resource path", func(t *testing.T) {
		// Anonymous, over HTTP/1.1: refused, with nothing switched, and the
		// connection serves the next request as anonymous too.
		cfg := &tls.Config{RootCAs: tlsConfig.RootCAs, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", host.Host, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		reader := bufio.NewReader(conn)
		for i, extra := range []string{"Connection: Upgrade\r\nUpgrade: websocket\r\n", ""} {
			fmt.Fprintf(conn, "GET /apis/annex.dev/v1alpha1/storagebackends HTTP/1.1\r\nHost: %s\r\n%s\r\n", host.Host, extra)
			resp, err := http.ReadResponse(reader, nil)
			if err != nil {
				if i > 0 {
					// annex closed the connection after the first answer.
					return
				}
				t.Fatalf("reading the answer to request %d: %v", i+1, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
				t.Errorf("request %d on the connection (upgrade %v) answered %s, want 401 or 403", i+1, extra != "", resp.Status)
			}
		}
	})
}
