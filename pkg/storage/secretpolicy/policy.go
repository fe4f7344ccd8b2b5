// Package secretpolicy says which Secrets a StorageBackend may name.
//
// Whoever may write a StorageBackend makes annex read the Secrets it names,
// with annex's own permissions. So a StorageBackend may name only Secrets in
// the namespaces annex is given for them (--storage-secret-namespaces, by
// default one namespace of their own), and never the Secret of annex's own
// serving certificate (--serving-cert-secret, or any Secret whose tls.crt is
// a certificate annex serves with).
//
// annex checks a StorageBackend's references when it is written (a 422 on
// the field), and again where Secrets are read, in pkg/storage/backend: the
// reference before the read, so that annex never asks the cluster for a
// Secret it may not use, and the Secret's content after it. A backend
// refused there is reported in its status and never opened.
package secretpolicy

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// DefaultNamespace is the namespace whose Secrets StorageBackends may name
// unless annex is told otherwise: one of their own, apart from annex's
// namespace and its serving key.
const DefaultNamespace = "annex-storage-secrets"

// Reasons of a StorageBackend's Ready condition when a Secret it names is refused.
const (
	// ReasonNamespaceNotAllowed: the Secret is in a namespace that annex
	// does not read StorageBackend Secrets from.
	ReasonNamespaceNotAllowed = "SecretNamespaceNotAllowed"
	// ReasonServingSecret: the Secret is the one annex's serving
	// certificate comes from.
	ReasonServingSecret = "ServingSecretNotAllowed"
)

// Policy says which Secrets StorageBackends may name. The zero Policy
// allows none.
type Policy struct {
	// Namespaces are the namespaces whose Secrets StorageBackends may name.
	Namespaces []string
	// Serving is the Secret that annex's serving certificate and key come
	// from, when annex is told (--serving-cert-secret); zero otherwise.
	Serving types.NamespacedName
	// ServingCertificates returns the PEM certificates annex serves with
	// now; a Secret whose tls.crt is one of them is refused wherever it is.
	// nil when annex serves with none it knows of.
	ServingCertificates func() [][]byte
}

// Refusal says why a Secret may not be used.
type Refusal struct {
	// Reason is the reason of the StorageBackend's Ready condition.
	Reason string
	// Message says what is refused and what to do instead.
	Message string
}

func (r *Refusal) Error() string { return r.Message }

// Check refuses a reference to the Secret namespace/name that a
// StorageBackend may not make, before the Secret is read.
func (p *Policy) Check(namespace, name string) *Refusal {
	if r := p.refuse(namespace, name); r != nil {
		return &Refusal{Reason: r.reason, Message: fmt.Sprintf("Secret %s/%s: %s", namespace, name, r.detail)}
	}
	return nil
}

// CheckSecret refuses the Secret namespace/name, once read, when it holds
// annex's serving certificate: its tls.crt starts with a certificate for the
// public key of a certificate annex serves with. That is the case of the
// kubernetes.io/tls Secret annex's certificate is mounted from, wherever it
// is and whatever its name, and of any copy of it.
func (p *Policy) CheckSecret(namespace, name string, secret *corev1.Secret) *Refusal {
	if p.ServingCertificates == nil {
		return nil
	}
	key := leafPublicKey(secret.Data[corev1.TLSCertKey])
	if key == nil {
		return nil
	}
	for _, serving := range p.ServingCertificates() {
		if bytes.Equal(key, leafPublicKey(serving)) {
			return &Refusal{Reason: ReasonServingSecret, Message: fmt.Sprintf("Secret %s/%s holds annex's own serving certificate (type %s); "+
				"a StorageBackend may never name it: give the backend a client certificate of its own", namespace, name, secretType(secret))}
		}
	}
	return nil
}

func secretType(secret *corev1.Secret) corev1.SecretType {
	if secret.Type == "" {
		return corev1.SecretTypeOpaque
	}
	return secret.Type
}

// leafPublicKey returns the public key (DER SubjectPublicKeyInfo) of the
// first certificate of a PEM bundle, or nil. Only the first counts: the
// others are the chain, which other certificates share.
func leafPublicKey(bundle []byte) []byte {
	for len(bundle) > 0 {
		var block *pem.Block
		block, bundle = pem.Decode(bundle)
		if block == nil {
			return nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil
		}
		return cert.RawSubjectPublicKeyInfo
	}
	return nil
}

// Validate returns the errors of a StorageBackend's reference to the Secret
// namespace/name at fldPath (which has the children namespace and name):
// what annex refuses when the StorageBackend is written, with a 422. An
// empty namespace or name is left to the StorageBackend's own validation.
func (p *Policy) Validate(namespace, name string, fldPath *field.Path) field.ErrorList {
	if namespace == "" || name == "" {
		return nil
	}
	if r := p.refuse(namespace, name); r != nil {
		return field.ErrorList{field.Forbidden(fldPath.Child(r.field), r.detail)}
	}
	return nil
}

// refusal is why a reference is refused, and the field of the reference
// (namespace or name) that is.
type refusal struct {
	reason, field, detail string
}

func (p *Policy) refuse(namespace, name string) *refusal {
	if !slices.Contains(p.Namespaces, namespace) {
		if len(p.Namespaces) == 0 {
			return &refusal{ReasonNamespaceNotAllowed, "namespace",
				"annex reads no Secrets for StorageBackends (--storage-secret-namespaces is empty)"}
		}
		return &refusal{ReasonNamespaceNotAllowed, "namespace", fmt.Sprintf(
			"annex reads the Secrets of StorageBackends only in the namespace(s) %s (--storage-secret-namespaces); put the Secret there",
			strings.Join(p.Namespaces, ", "))}
	}
	if p.Serving.Name != "" && namespace == p.Serving.Namespace && name == p.Serving.Name {
		return &refusal{ReasonServingSecret, "name",
			"this is the Secret of annex's own serving certificate (--serving-cert-secret); a StorageBackend may never name it"}
	}
	return nil
}
