// Package certs creates the certificate authorities and certificates that
// annex issues itself: in standalone mode for its serving certificate and its
// admin, and for the mutual TLS between annex and its embedded etcd.
//
// Everything is written once into a directory and reused on the next start,
// so clients keep trusting the same CA across restarts.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// renewBefore is how long before expiry a leaf certificate is issued anew at start-up.
	renewBefore = 30 * 24 * time.Hour
)

// CA is a certificate authority whose key annex holds.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	// CertFile is the path of the CA certificate, for clients to trust.
	CertFile string
}

// Pair is the location of a certificate and its key.
type Pair struct {
	CertFile string
	KeyFile  string
}

// Spec says what a leaf certificate is for.
type Spec struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	Usages       []x509.ExtKeyUsage
}

// LoadOrCreateCA loads the CA named name from dir, creating it if it does not exist.
func LoadOrCreateCA(dir, name, commonName string) (*CA, error) {
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if exists(certFile) && exists(keyFile) {
		return loadCA(certFile, keyFile)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the key of CA %s: %w", name, err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating CA %s: %w", name, err)
	}
	if err := writePair(dir, certFile, keyFile, der, key); err != nil {
		return nil, err
	}
	return loadCA(certFile, keyFile)
}

func loadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	certs, err := certutil.ParseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", certFile, err)
	}
	key, err := keyutil.PrivateKeyFromFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", keyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s does not hold a signing key", keyFile)
	}
	return &CA{Cert: certs[0], Key: signer, CertPEM: certPEM, CertFile: certFile}, nil
}

// Ensure returns the certificate named name in dir, issuing it with this CA
// when it is missing, was issued by another CA, no longer matches spec's
// names, or expires within 30 days.
func (ca *CA) Ensure(dir, name string, spec Spec) (Pair, error) {
	pair := Pair{CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
	if ca.valid(pair, spec) {
		return pair, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pair, fmt.Errorf("generating the key of %s: %w", name, err)
	}
	serial, err := serialNumber()
	if err != nil {
		return pair, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: spec.Organization},
		DNSNames:     spec.DNSNames,
		IPAddresses:  spec.IPs,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  spec.Usages,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return pair, fmt.Errorf("issuing %s: %w", name, err)
	}
	return pair, writePair(dir, pair.CertFile, pair.KeyFile, der, key)
}

func (ca *CA) valid(pair Pair, spec Spec) bool {
	if !exists(pair.CertFile) || !exists(pair.KeyFile) {
		return false
	}
	certs, err := certutil.CertsFromFile(pair.CertFile)
	if err != nil {
		return false
	}
	cert := certs[0]
	if cert.CheckSignatureFrom(ca.Cert) != nil || time.Until(cert.NotAfter) < renewBefore {
		return false
	}
	if cert.Subject.CommonName != spec.CommonName || !sameStrings(cert.DNSNames, spec.DNSNames) || len(cert.IPAddresses) != len(spec.IPs) {
		return false
	}
	for i, ip := range spec.IPs {
		if !cert.IPAddresses[i].Equal(ip) {
			return false
		}
	}
	return true
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func writePair(dir, certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	// The key is written first so that a certificate on disk always has its key.
	if err := keyutil.WriteKey(keyFile, pemBlock("EC PRIVATE KEY", keyDER)); err != nil {
		return fmt.Errorf("writing %s: %w", keyFile, err)
	}
	if err := certutil.WriteCert(certFile, pemBlock(certutil.CertificateBlockType, der)); err != nil {
		return fmt.Errorf("writing %s: %w", certFile, err)
	}
	return nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(math.MaxInt64))
	if err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}
