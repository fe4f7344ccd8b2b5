package secretpolicy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// issue returns a certificate for a new key, signed by parent (self-signed
// when nil), as PEM, with its key.
func issue(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  parent == nil,
		BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, key
}

func TestCheckAndValidate(t *testing.T) {
	p := Policy{Namespaces: []string{DefaultNamespace, "team-secrets"}, Serving: types.NamespacedName{Namespace: "team-secrets", Name: "annex-tls"}}
	for _, tc := range []struct {
		name                  string
		namespace, secretName string
		policy                Policy
		reason, field         string
		detail                string
	}{
		{name: "allowed", namespace: DefaultNamespace, secretName: "pg", policy: p},
		{name: "allowed, another namespace", namespace: "team-secrets", secretName: "etcd-client", policy: p},
		{name: "annex's namespace", namespace: "annex-system", secretName: "annex-tls", policy: p,
			reason: ReasonNamespaceNotAllowed, field: "spec.ref.namespace", detail: "only in the namespace(s) annex-storage-secrets, team-secrets"},
		{name: "kube-system", namespace: "kube-system", secretName: "bootstrap-token", policy: p,
			reason: ReasonNamespaceNotAllowed, field: "spec.ref.namespace", detail: "--storage-secret-namespaces"},
		{name: "the serving Secret", namespace: "team-secrets", secretName: "annex-tls", policy: p,
			reason: ReasonServingSecret, field: "spec.ref.name", detail: "annex's own serving certificate"},
		{name: "no namespace allowed", namespace: DefaultNamespace, secretName: "pg", policy: Policy{},
			reason: ReasonNamespaceNotAllowed, field: "spec.ref.namespace", detail: "--storage-secret-namespaces is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused := tc.policy.Check(tc.namespace, tc.secretName)
			errs := tc.policy.Validate(tc.namespace, tc.secretName, field.NewPath("spec", "ref"))
			if tc.reason == "" {
				if refused != nil || len(errs) > 0 {
					t.Errorf("refused: %v %v", refused, errs)
				}
				return
			}
			if refused == nil || refused.Reason != tc.reason || !strings.Contains(refused.Message, tc.detail) ||
				!strings.Contains(refused.Message, tc.namespace+"/"+tc.secretName) {
				t.Errorf("Check: %+v, want reason %s, the Secret's name and %q", refused, tc.reason, tc.detail)
			}
			if len(errs) != 1 || errs[0].Field != tc.field || errs[0].Type != field.ErrorTypeForbidden || !strings.Contains(errs[0].Detail, tc.detail) {
				t.Errorf("Validate: %v, want one Forbidden on %s saying %q", errs, tc.field, tc.detail)
			}
		})
	}
	// An empty reference is the StorageBackend's own validation's to refuse.
	if errs := (&Policy{}).Validate("", "", field.NewPath("spec")); len(errs) > 0 {
		t.Errorf("Validate of an empty reference: %v, want nothing", errs)
	}
}

func TestCheckSecretRefusesTheServingCertificate(t *testing.T) {
	caPEM, ca, caKey := issue(t, "ca", nil, nil)
	servingPEM, _, _ := issue(t, "annex.annex-system.svc", ca, caKey)
	// Another certificate of the same CA: the chain it comes with is
	// annex's, the leaf is not.
	clientPEM, _, _ := issue(t, "etcd-client", ca, caKey)
	p := Policy{Namespaces: []string{DefaultNamespace}, ServingCertificates: func() [][]byte { return [][]byte{append(append([]byte{}, servingPEM...), caPEM...)} }}

	secret := func(typ corev1.SecretType, data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{Type: typ, Data: data}
	}
	for _, tc := range []struct {
		name    string
		secret  *corev1.Secret
		refused bool
	}{
		{"annex's serving Secret", secret(corev1.SecretTypeTLS, map[string][]byte{"tls.crt": servingPEM, "tls.key": []byte("key"), "ca.crt": caPEM}), true},
		{"a copy of it, with its chain, of another type", secret(corev1.SecretTypeOpaque, map[string][]byte{"tls.crt": append(append([]byte{}, servingPEM...), caPEM...)}), true},
		{"a client certificate of the same CA", secret(corev1.SecretTypeTLS, map[string][]byte{"tls.crt": append(append([]byte{}, clientPEM...), caPEM...), "ca.crt": caPEM}), false},
		{"the CA alone", secret(corev1.SecretTypeOpaque, map[string][]byte{"ca.crt": caPEM}), false},
		{"a connection string", secret(corev1.SecretTypeOpaque, map[string][]byte{"dsn": []byte("postgres://u:p@db/x")}), false},
		{"not PEM", secret(corev1.SecretTypeTLS, map[string][]byte{"tls.crt": []byte("garbage")}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused := p.CheckSecret(DefaultNamespace, "s", tc.secret)
			if (refused != nil) != tc.refused {
				t.Fatalf("refused: %v, want refused %v", refused, tc.refused)
			}
			if refused != nil && (refused.Reason != ReasonServingSecret || !strings.Contains(refused.Message, DefaultNamespace+"/s") ||
				!strings.Contains(refused.Message, "serving certificate")) {
				t.Errorf("refusal %+v, want reason %s naming the Secret", refused, ReasonServingSecret)
			}
		})
	}
	if refused := (&Policy{}).CheckSecret(DefaultNamespace, "s", secret(corev1.SecretTypeTLS, map[string][]byte{"tls.crt": servingPEM})); refused != nil {
		t.Errorf("without serving certificates: %v, want nothing refused", refused)
	}
}
