// Package embedded runs etcd inside the annex process: the default storage,
// so that annex needs nothing but a directory to keep its data.
package embedded

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/certs"
)

// Options configure the embedded etcd.
type Options struct {
	// DataDir holds etcd's data and the certificates of its client and peer TLS.
	DataDir string
	// QuotaBackendBytes is the size at which etcd stops accepting writes.
	QuotaBackendBytes int64
	// LogLevel is etcd's own log level (debug, info, warn, error).
	LogLevel string
}

// Etcd is a running embedded etcd. It listens on 127.0.0.1 only and accepts
// clients that present a certificate issued by its own CA, which only annex holds.
type Etcd struct {
	etcd *embed.Etcd
	// ClientURL is where the client listener is.
	ClientURL string
	// CAFile, CertFile and KeyFile are what a client needs to connect.
	CAFile, CertFile, KeyFile string
}

// Start starts etcd and waits until it serves, or until ctx is done.
func Start(ctx context.Context, opts Options) (*Etcd, error) {
	logger := klog.FromContext(ctx).WithName("embedded-etcd")
	pki := filepath.Join(opts.DataDir, "pki")
	ca, err := certs.LoadOrCreateCA(pki, "ca", "annex-embedded-etcd-ca")
	if err != nil {
		return nil, err
	}
	loopback := []net.IP{net.ParseIP("127.0.0.1")}
	server, err := ca.Ensure(pki, "server", certs.Spec{
		CommonName: "annex-embedded-etcd", DNSNames: []string{"localhost"}, IPs: loopback,
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	client, err := ca.Ensure(pki, "client", certs.Spec{
		CommonName: "annex-apiserver", Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}

	clientURL, err := freeLoopbackURL()
	if err != nil {
		return nil, err
	}
	peerURL, err := freeLoopbackURL()
	if err != nil {
		return nil, err
	}

	cfg := embed.NewConfig()
	cfg.Name = "annex"
	cfg.Dir = filepath.Join(opts.DataDir, "data")
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ListenMetricsUrls = nil
	cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = server.CertFile, server.KeyFile
	cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = ca.CertFile, true
	cfg.PeerTLSInfo = cfg.ClientTLSInfo
	if opts.QuotaBackendBytes > 0 {
		cfg.QuotaBackendBytes = opts.QuotaBackendBytes
	}
	cfg.LogLevel = opts.LogLevel
	if cfg.LogLevel == "" {
		cfg.LogLevel = "error"
	}
	// Periodic progress notifications let the watch cache advance its
	// resourceVersion on idle resources (bookmarks, consistent reads), as the
	// kube-apiserver's etcd is configured.
	cfg.WatchProgressNotifyInterval = 5 * time.Second
	// The apiserver's storage layer compacts on its own schedule
	// (--etcd-compaction-interval), as it does for the cluster's etcd.
	cfg.AutoCompactionRetention = "0"

	start := time.Now()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting embedded etcd in %s: %w", cfg.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed while starting: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	logger.Info("Embedded etcd is ready", "dataDir", cfg.Dir, "clientURL", clientURL.String(), "took", time.Since(start).Round(time.Millisecond))
	return &Etcd{
		etcd:      e,
		ClientURL: clientURL.String(),
		CAFile:    ca.CertFile,
		CertFile:  client.CertFile,
		KeyFile:   client.KeyFile,
	}, nil
}

// ClientTLS returns the TLS configuration of a client of this etcd.
func (e *Etcd) ClientTLS() (*tls.Config, error) {
	return transport.TLSInfo{CertFile: e.CertFile, KeyFile: e.KeyFile, TrustedCAFile: e.CAFile}.ClientConfig()
}

// Err reports a failure of the running etcd.
func (e *Etcd) Err() <-chan error { return e.etcd.Err() }

// Close stops etcd gracefully.
func (e *Etcd) Close() { e.etcd.Close() }

// freeLoopbackURL finds a free port on 127.0.0.1. The port is released before
// etcd binds it; another process could take it in between, in which case
// etcd fails to start with a clear "address already in use".
func freeLoopbackURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("finding a free loopback port for embedded etcd: %w", err)
	}
	defer l.Close()
	return &url.URL{Scheme: "https", Host: l.Addr().String()}, nil
}
