// Package embedded runs etcd inside the annex process: the default storage,
// so that annex needs nothing but a directory to keep its data.
package embedded

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.etcd.io/etcd/server/v3/storage"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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
	// LogOutput receives etcd's log, as JSON lines; stderr when nil.
	LogOutput io.Writer
	// SpaceCheckInterval is how often the NOSPACE alarm is looked at, to
	// end it once objects are deleted (recoverSpace); zero means
	// DefaultSpaceCheckInterval.
	SpaceCheckInterval time.Duration
}

// Etcd is a running embedded etcd. It listens on 127.0.0.1 only and accepts
// clients that present a certificate issued by its own CA, which only annex holds.
type Etcd struct {
	etcd *embed.Etcd
	// closing is set once Close has begun; see quietClose.
	closing *atomic.Bool
	// stopRecovery stops recoverSpace, which closes recovered as it ends.
	stopRecovery context.CancelFunc
	recovered    chan struct{}
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

	// Both listeners bind port 0 and the kernel picks a free port as it binds:
	// choosing a free port first and binding it later races with every other
	// process on the machine. Clients learn the port from the listener. The
	// single member never dials its peer URL.
	listenURL := url.URL{Scheme: "https", Host: "127.0.0.1:0"}

	cfg := embed.NewConfig()
	cfg.Name = "annex"
	cfg.Dir = filepath.Join(opts.DataDir, "data")
	cfg.ListenClientUrls = []url.URL{listenURL}
	cfg.AdvertiseClientUrls = []url.URL{listenURL}
	cfg.ListenPeerUrls = []url.URL{listenURL}
	cfg.AdvertisePeerUrls = []url.URL{listenURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ListenMetricsUrls = nil
	// etcd's JSON gateway dials the listen address as configured, port 0;
	// annex speaks gRPC only.
	cfg.EnableGRPCGateway = false
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
	closing := new(atomic.Bool)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newLogger(cfg.LogLevel, opts.LogOutput, closing))
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
	clientURL := url.URL{Scheme: "https", Host: e.Clients[0].Addr().String()}
	logger.Info("Embedded etcd is ready", "dataDir", cfg.Dir, "clientURL", clientURL.String(), "took", time.Since(start).Round(time.Millisecond))
	quota := cfg.QuotaBackendBytes
	if quota == 0 {
		quota = storage.DefaultQuotaBytes
	}
	checkSpace(logger, cfg.Dir, e.Server.Backend().Size(), quota)
	every := opts.SpaceCheckInterval
	if every <= 0 {
		every = DefaultSpaceCheckInterval
	}
	recovery, stopRecovery := context.WithCancel(klog.NewContext(context.Background(), logger))
	etcd := &Etcd{
		etcd:         e,
		closing:      closing,
		stopRecovery: stopRecovery,
		recovered:    make(chan struct{}),
		ClientURL:    clientURL.String(),
		CAFile:       ca.CertFile,
		CertFile:     client.CertFile,
		KeyFile:      client.KeyFile,
	}
	go func() {
		defer close(etcd.recovered)
		etcd.recoverSpace(recovery, quota, every)
	}()
	return etcd, nil
}

// ClientTLS returns the TLS configuration of a client of this etcd.
func (e *Etcd) ClientTLS() (*tls.Config, error) {
	return transport.TLSInfo{CertFile: e.CertFile, KeyFile: e.KeyFile, TrustedCAFile: e.CAFile}.ClientConfig()
}

// NewClient returns a client of this etcd in annex's own process: its
// requests are calls into the server, with no connection, TLS or encoding
// between them (pkg/storage/inprocess). The caller closes it.
func (e *Etcd) NewClient() *clientv3.Client {
	return v3client.New(e.etcd.Server)
}

// Err reports a failure of the running etcd.
func (e *Etcd) Err() <-chan error { return e.etcd.Err() }

// Close stops etcd gracefully.
func (e *Etcd) Close() {
	e.stopRecovery()
	<-e.recovered
	e.closing.Store(true)
	e.etcd.Close()
}

// serveFailed is what etcd logs, at error level, when one of its listeners
// stops serving. Close stops every listener, so each logs it at every clean
// stop; only while etcd runs does it mean something failed.
const serveFailed = "setting up serving from embedded etcd failed"

// newLogger builds a logger like etcd's default one (JSON lines at level),
// writing to out (stderr when nil), that leaves out serveFailed once closing
// is set.
func newLogger(level string, out io.Writer, closing *atomic.Bool) *zap.Logger {
	var sink zapcore.WriteSyncer = zapcore.Lock(os.Stderr)
	if out != nil {
		sink = zapcore.Lock(zapcore.AddSync(out))
	}
	enc := zapcore.NewJSONEncoder(logutil.DefaultZapLoggerConfig.EncoderConfig)
	core := zapcore.NewCore(enc, sink, zap.NewAtomicLevelAt(logutil.ConvertToZapLevel(level)))
	return zap.New(quietClose{core, closing}, zap.AddCaller(), zap.ErrorOutput(sink))
}

// quietClose drops serveFailed entries once etcd is being closed.
type quietClose struct {
	zapcore.Core
	closing *atomic.Bool
}

func (q quietClose) With(fields []zapcore.Field) zapcore.Core {
	return quietClose{q.Core.With(fields), q.closing}
}

func (q quietClose) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if q.closing.Load() && strings.HasPrefix(ent.Message, serveFailed) {
		return ce
	}
	return q.Core.Check(ent, ce)
}
