//go:build integration

package framework

import (
	"crypto/x509"
	"net"

	"annex.dev/annex/pkg/certs"
)

// The tests' certificate authorities and certificates are issued by
// pkg/certs, as annex issues its own: one issuer for the whole project.

// newCA creates the CA name in dir (dir/name.crt and dir/name.key), or
// loads it when it exists.
func newCA(dir, name string) (*certs.CA, error) {
	return certs.LoadOrCreateCA(dir, name, name)
}

// issue issues dir/name.crt and dir/name.key from ca for commonName: a
// serving certificate for hosts (DNS names or IP addresses) when there are
// any, else a client certificate.
func issue(ca *certs.CA, dir, name, commonName string, hosts ...string) (certs.Pair, error) {
	spec := certs.Spec{CommonName: commonName, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if len(hosts) > 0 {
		spec.Usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				spec.IPs = append(spec.IPs, ip)
			} else {
				spec.DNSNames = append(spec.DNSNames, h)
			}
		}
	}
	return ca.Ensure(dir, name, spec)
}
