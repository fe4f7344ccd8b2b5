package server

import (
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/rest"

	"annex.dev/annex/pkg/certs"
)

// delegate is the webhook kubeconfig's resolver, here one with no
// entries: every webhook gets an empty config from it.
type delegate struct{}

func (delegate) ClientConfigFor(string) (*rest.Config, error) { return &rest.Config{}, nil }
func (delegate) ClientConfigForService(string, string, int) (*rest.Config, error) {
	return &rest.Config{}, nil
}

// A conversion webhook served at kubernetes.default.svc is the cluster's
// kube-apiserver, not annex: it must not get annex's loopback credentials.
func TestWebhooksNeverGetAnnexsCredentials(t *testing.T) {
	resolver := webhookAuthentication()(delegate{})
	byHost, err := resolver.ClientConfigFor("kubernetes.default.svc:443")
	if err != nil {
		t.Fatal(err)
	}
	byService, err := resolver.ClientConfigForService("kubernetes", "default", 443)
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]*rest.Config{"kubernetes.default.svc:443": byHost, "service default/kubernetes:443": byService} {
		if cfg == nil {
			t.Errorf("%s: no config, want one without credentials", name)
			continue
		}
		if cfg.BearerToken != "" || cfg.BearerTokenFile != "" || len(cfg.CertData) > 0 || cfg.CertFile != "" || cfg.Username != "" || cfg.Host != "" {
			t.Errorf("%s: a webhook there gets credentials or annex's own address: %+v", name, cfg)
		}
	}
}

// The Secret annex's serving certificate comes from is refused to
// StorageBackends by its content, whatever its name: the policy knows the
// certificates annex serves with, the main one and those by name (SNI).
func TestSecretPolicyKnowsTheServingCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.LoadOrCreateCA(dir, "ca", "test CA")
	if err != nil {
		t.Fatal(err)
	}
	var serving dynamiccertificates.CertKeyContentProvider
	var sni dynamiccertificates.SNICertKeyContentProvider
	pem := map[string][]byte{}
	for _, name := range []string{"serving", "sni", "client"} {
		pair, err := ca.Ensure(dir, name, certs.Spec{CommonName: name, DNSNames: []string{name + ".example.com"}})
		if err != nil {
			t.Fatal(err)
		}
		switch name {
		case "serving":
			serving, err = dynamiccertificates.NewDynamicServingContentFromFiles(name, pair.CertFile, pair.KeyFile)
		case "sni":
			sni, err = dynamiccertificates.NewDynamicSNIContentFromFiles(name, pair.CertFile, pair.KeyFile, "sni.example.com")
		}
		if err != nil {
			t.Fatal(err)
		}
		if pem[name], err = os.ReadFile(pair.CertFile); err != nil {
			t.Fatal(err)
		}
	}
	policy, err := NewOptions().secretPolicy(&genericapiserver.SecureServingInfo{
		Cert:     serving,
		SNICerts: []dynamiccertificates.SNICertKeyContentProvider{sni},
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, refused := range map[string]bool{"serving": true, "sni": true, "client": false} {
		secret := &corev1.Secret{Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: pem[name]}}
		if got := policy.CheckSecret("annex-storage-secrets", name, secret); (got != nil) != refused {
			t.Errorf("a Secret holding the %s certificate: refusal %v, want refused %v", name, got, refused)
		}
	}
}
