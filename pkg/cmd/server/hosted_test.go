package server

import (
	"testing"

	"k8s.io/client-go/rest"
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
