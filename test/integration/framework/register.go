//go:build integration

package framework

import (
	"context"
	"fmt"
)

// ServingCertificate is a throw-away CA and a serving certificate it signed,
// written to files as annex's flags want them.
type ServingCertificate struct {
	// CAFile holds the CA; CAPEM is its content, for a caBundle.
	CAFile string
	CAPEM  []byte
	// CertFile and KeyFile are for --tls-cert-file and --tls-private-key-file.
	CertFile, KeyFile string
}

// WriteServingCertificate issues a serving certificate for hosts (DNS names
// or IP addresses) from a new CA and writes dir/name.crt, dir/name.key and
// dir/name-ca.crt. Replicas that share it are interchangeable to clients.
func WriteServingCertificate(dir, name string, hosts ...string) (*ServingCertificate, error) {
	ca, err := newCA(dir, name+"-ca")
	if err != nil {
		return nil, err
	}
	pair, err := issue(ca, dir, name, name, hosts...)
	if err != nil {
		return nil, err
	}
	return &ServingCertificate{CAFile: ca.CertFile, CAPEM: ca.CertPEM, CertFile: pair.CertFile, KeyFile: pair.KeyFile}, nil
}

// RegisterAnnex registers annex with the cluster exactly as Start does (the
// namespace, an ExternalName Service to localhost on port, the APIService of
// annex.dev trusting caPEM), for tests that run annex themselves on a control
// plane from StartControlPlane. It does not wait for the APIService.
func (e *Environment) RegisterAnnex(ctx context.Context, port int, caPEM []byte) error {
	if e.annex != nil {
		return fmt.Errorf("this environment already runs and registers its own annex")
	}
	e.AnnexPort, e.annexCA = port, caPEM
	return e.register(ctx)
}
