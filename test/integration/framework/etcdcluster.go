//go:build integration

package framework

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"annex.dev/annex/pkg/certs"
	"annex.dev/annex/test/ports"
	"annex.dev/annex/test/process"
)

const (
	// etcdStartTimeout bounds how long a cluster (or a restarted member)
	// may take to serve.
	etcdStartTimeout = 60 * time.Second
	// etcdStopTimeout is how long a member gets to exit after SIGTERM.
	etcdStopTimeout = 10 * time.Second
)

// EtcdCluster is a real etcd cluster of separate processes (the etcd of
// KUBEBUILDER_ASSETS) on 127.0.0.1, as annex meets an external etcd in
// production: every member serves clients over TLS and accepts only clients
// that present a certificate issued by the cluster's CA, and the members talk
// to each other over mutual TLS too. Each member keeps its data in a
// directory of its own, so a test can stop or kill it and start it again
// with its data.
type EtcdCluster struct {
	// Members are the cluster's members, in the order of --initial-cluster.
	Members []*EtcdMember
	// CAFile verifies the members' certificates; CertFile and KeyFile are a
	// client certificate they accept: annex's --etcd-cafile, --etcd-certfile
	// and --etcd-keyfile.
	CAFile, CertFile, KeyFile string
	// Dir holds the certificates, and each member's data and log.
	Dir string
}

// EtcdMember is one etcd process of an EtcdCluster.
type EtcdMember struct {
	// Name is the member's --name.
	Name string
	// ClientURL and PeerURL are where the member listens (https, 127.0.0.1).
	ClientURL, PeerURL string
	// DataDir is the member's --data-dir; it survives Stop, Kill and Restart.
	DataDir string
	// LogPath receives the member's output, across restarts.
	LogPath string

	bin  string
	args []string
	dir  string

	mu   sync.Mutex
	proc *process.Process
	log  *os.File
}

// StartEtcdCluster starts an etcd cluster of size members and waits until it
// has a leader and serves a linearizable read. Everything it starts is stopped,
// and its files removed, when the test ends; if the test failed, the last lines
// of each member's log are logged first.
func StartEtcdCluster(t testing.TB, size int) *EtcdCluster {
	t.Helper()
	if size < 1 {
		t.Fatalf("an etcd cluster needs at least one member, not %d", size)
	}
	bin := filepath.Join(os.Getenv(AssetsEnv), "etcd")
	if err := checkExecutable(bin); err != nil {
		t.Fatalf("%v (set %s to the directory printed by hack/tools/install.sh)", err, AssetsEnv)
	}
	// TempDir first: its removal then runs after the members have stopped.
	c := &EtcdCluster{Dir: t.TempDir()}
	t.Cleanup(func() { c.cleanup(t) })

	if err := c.writeCertificates(size); err != nil {
		t.Fatal(err)
	}
	free, err := ports.FreeN(2 * size)
	if err != nil {
		t.Fatal(err)
	}
	var initial []string
	for i := range size {
		m := &EtcdMember{
			Name:      "member" + strconv.Itoa(i),
			ClientURL: "https://127.0.0.1:" + strconv.Itoa(free[2*i]),
			PeerURL:   "https://127.0.0.1:" + strconv.Itoa(free[2*i+1]),
			bin:       bin,
			dir:       c.Dir,
		}
		m.DataDir = filepath.Join(c.Dir, m.Name)
		m.LogPath = filepath.Join(c.Dir, m.Name+".log")
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	pki := filepath.Join(c.Dir, "pki")
	for _, m := range c.Members {
		serving := filepath.Join(pki, m.Name)
		m.args = []string{
			"--name=" + m.Name,
			"--data-dir=" + m.DataDir,
			"--listen-client-urls=" + m.ClientURL, "--advertise-client-urls=" + m.ClientURL,
			"--listen-peer-urls=" + m.PeerURL, "--initial-advertise-peer-urls=" + m.PeerURL,
			"--initial-cluster=" + strings.Join(initial, ","),
			"--initial-cluster-state=new", "--initial-cluster-token=annex-test",
			// Clients: TLS, and a certificate from the cluster's CA required.
			"--cert-file=" + serving + ".crt", "--key-file=" + serving + ".key",
			"--client-cert-auth", "--trusted-ca-file=" + c.CAFile,
			// Peers: mutual TLS with the same CA.
			"--peer-cert-file=" + serving + ".crt", "--peer-key-file=" + serving + ".key",
			"--peer-client-cert-auth", "--peer-trusted-ca-file=" + c.CAFile,
			// As a kube-apiserver's etcd is configured (kubeadm): progress
			// notifications let the watch cache advance on idle resources,
			// and the apiserver compacts on its own schedule.
			"--watch-progress-notify-interval=5s",
			"--auto-compaction-retention=0",
			"--log-level=info",
		}
	}
	for _, m := range c.Members {
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdStartTimeout)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatalf("the etcd cluster did not become healthy: %v%s", err, c.logTails(20))
	}
	return c
}

// ClientURLs returns every member's client URL, for --etcd-servers.
func (c *EtcdCluster) ClientURLs() []string {
	urls := make([]string, len(c.Members))
	for i, m := range c.Members {
		urls[i] = m.ClientURL
	}
	return urls
}

// ClientTLS is the TLS configuration of a client of the cluster: it trusts
// the cluster's CA and presents the client certificate.
func (c *EtcdCluster) ClientTLS() (*tls.Config, error) {
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", c.CAFile)
	}
	pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// Client returns an etcd client of every member, closed when the test ends.
func (c *EtcdCluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	tlsConfig, err := c.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   c.ClientURLs(),
		TLS:         tlsConfig,
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// etcdStatus is the part of etcd's maintenance Status the helper reads. The
// helper asks each member through etcd's JSON gateway (the v3 API over HTTPS
// on the client port), on a new connection each time, so that a question to
// a member just restarted never waits out gRPC's reconnection backoff.
type etcdStatus struct {
	Header struct {
		MemberID uint64 `json:"member_id,string"`
	} `json:"header"`
	Leader           uint64 `json:"leader,string"`
	RaftIndex        uint64 `json:"raftIndex,string"`
	RaftAppliedIndex uint64 `json:"raftAppliedIndex,string"`
}

// call posts a v3 API request as JSON to the member and decodes the answer.
func (c *EtcdCluster) call(ctx context.Context, m *EtcdMember, path string, in, out any) error {
	tlsConfig, err := c.ClientTLS()
	if err != nil {
		return err
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.ClientURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	// A new connection each time: a member killed and started again must
	// not be asked over a connection to its previous process.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, bytes.TrimSpace(data))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

func (c *EtcdCluster) status(ctx context.Context, m *EtcdMember) (*etcdStatus, error) {
	var st etcdStatus
	if err := c.call(ctx, m, "/v3/maintenance/status", struct{}{}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Leader returns the member that the running members agree leads the
// cluster, asking each with the maintenance API's Status.
func (c *EtcdCluster) Leader(ctx context.Context) (*EtcdMember, error) {
	byID := map[uint64]*EtcdMember{}
	var leaders []uint64
	var errs []error
	for _, m := range c.Members {
		if !m.Running() {
			continue
		}
		st, err := c.status(ctx, m)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
			continue
		}
		byID[st.Header.MemberID] = m
		leaders = append(leaders, st.Leader)
	}
	if len(leaders) == 0 {
		return nil, fmt.Errorf("no member answered Status: %w", errors.Join(errs...))
	}
	for _, l := range leaders[1:] {
		if l != leaders[0] {
			return nil, fmt.Errorf("the members disagree on the leader: %x", leaders)
		}
	}
	leader, ok := byID[leaders[0]]
	if !ok {
		return nil, fmt.Errorf("the leader %x is not among the members that answered", leaders[0])
	}
	return leader, nil
}

// WaitHealthy waits until every running member answers Status, they agree on
// a leader, every running member has applied what that leader had committed,
// and a linearizable read succeeds: until the cluster serves reads and
// writes, and a read from any running member sees what was written before.
func (c *EtcdCluster) WaitHealthy(ctx context.Context) error {
	var last error
	for {
		last = c.healthy(ctx)
		if last == nil {
			return nil
		}
		for _, m := range c.Members {
			m.mu.Lock()
			proc := m.proc
			m.mu.Unlock()
			if proc == nil {
				continue
			}
			if exited, err := proc.Exited(); exited {
				return fmt.Errorf("etcd %s exited: %v", m.Name, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last: %v", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *EtcdCluster) healthy(ctx context.Context) error {
	leader, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	st, err := c.status(ctx, leader)
	if err != nil {
		return err
	}
	for _, m := range c.Members {
		if !m.Running() || m == leader {
			continue
		}
		ms, err := c.status(ctx, m)
		if err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
		if ms.RaftAppliedIndex < st.RaftIndex {
			return fmt.Errorf("%s has applied raft index %d of the leader's %d", m.Name, ms.RaftAppliedIndex, st.RaftIndex)
		}
	}
	// A linearizable read (the default) needs the leader and a quorum.
	return c.call(ctx, leader, "/v3/kv/range", map[string]string{"key": "aGVhbHRo"}, nil) // "health"
}

// Running says whether the member's process is running.
func (m *EtcdMember) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return false
	}
	exited, _ := m.proc.Exited()
	return !exited
}

// Kill ends the member with SIGKILL, as a crash or an OOM kill would, and
// waits until its process is gone.
func (m *EtcdMember) Kill() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return fmt.Errorf("etcd %s is not running", m.Name)
	}
	m.note("SIGKILL")
	err := m.proc.Kill()
	m.proc = nil
	return err
}

// Stop ends the member with SIGTERM (SIGKILL after a timeout), as an orderly
// shutdown would.
func (m *EtcdMember) Stop() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return fmt.Errorf("etcd %s is not running", m.Name)
	}
	m.note("SIGTERM")
	err := m.proc.Stop(etcdStopTimeout)
	m.proc = nil
	if err != nil {
		return fmt.Errorf("stopping etcd %s: %w", m.Name, err)
	}
	return nil
}

// Restart starts a stopped or killed member again, on the same addresses
// and data. It does not wait: use the cluster's WaitHealthy.
func (m *EtcdMember) Restart() error {
	m.mu.Lock()
	running := m.proc != nil
	m.mu.Unlock()
	if running {
		return fmt.Errorf("etcd %s is running", m.Name)
	}
	return m.start()
}

func (m *EtcdMember) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.log == nil {
		log, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		m.log = log
	}
	m.note("starting " + m.bin + " " + strings.Join(m.args, " "))
	proc, err := process.Start(m.bin, m.args, nil, m.dir, m.log)
	if err != nil {
		return fmt.Errorf("starting etcd %s: %w", m.Name, err)
	}
	m.proc = proc
	return nil
}

// note marks an event of the test in the member's log.
func (m *EtcdMember) note(what string) {
	if m.log != nil {
		fmt.Fprintf(m.log, "=== %s test: %s\n", time.Now().Format(time.RFC3339Nano), what)
	}
}

func (m *EtcdMember) logTail(n int) string { return process.FileTail(m.LogPath, n) }

func (c *EtcdCluster) logTails(n int) string {
	var b strings.Builder
	for _, m := range c.Members {
		b.WriteString(m.logTail(n))
	}
	return b.String()
}

// cleanup stops every running member; on failure it logs their last lines.
func (c *EtcdCluster) cleanup(t testing.TB) {
	for _, m := range c.Members {
		if m.Running() {
			if err := m.Stop(); err != nil {
				t.Errorf("%v", err)
			}
		} else {
			// A member the test killed, or one that died: reap it.
			m.mu.Lock()
			if m.proc != nil {
				_ = m.proc.Kill()
				m.proc = nil
			}
			m.mu.Unlock()
		}
		if m.log != nil {
			_ = m.log.Close()
		}
	}
	if t.Failed() {
		t.Logf("etcd cluster in %s:%s", c.Dir, c.logTails(30))
	}
}

// writeCertificates issues the cluster's CA, a certificate per member that
// serves clients and peers and authenticates it to its peers, and a client
// certificate.
func (c *EtcdCluster) writeCertificates(size int) error {
	pki := filepath.Join(c.Dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	ca, err := newCA(pki, "ca")
	if err != nil {
		return err
	}
	c.CAFile = ca.CertFile
	for i := range size {
		// A member dials its peers, and its own client listener for its
		// HTTP gateway, with this certificate: it is a client's too.
		name := "member" + strconv.Itoa(i)
		if _, err := ca.Ensure(pki, name, certs.Spec{
			CommonName: name,
			Usages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			DNSNames:   []string{"localhost"},
			IPs:        []net.IP{net.ParseIP("127.0.0.1")},
		}); err != nil {
			return err
		}
	}
	client, err := issue(ca, pki, "client", "annex-apiserver")
	if err != nil {
		return err
	}
	c.CertFile, c.KeyFile = client.CertFile, client.KeyFile
	return nil
}
