//go:build integration

package rollout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

const (
	// probePeriod is how often the load balancer checks each backend's /readyz.
	probePeriod = 200 * time.Millisecond
	// failureThreshold is how many probes in a row must fail before a
	// backend leaves rotation, as in the chart's readinessProbe.
	failureThreshold = 2
)

// loadBalancer stands in for annex's Service and kube-proxy: it forwards
// each new TCP connection to the next ready backend, round robin, and takes a
// backend out of rotation once its /readyz has failed failureThreshold times in
// a row, as the endpoints of a Service follow their pods' readiness. Like kube-proxy it never cuts a
// connection it has already forwarded: only the backend closes those.
type loadBalancer struct {
	t     *testing.T
	ln    net.Listener
	probe *http.Client
	// client opens a new connection through the load balancer for each
	// request, as the aggregator's availability checks do.
	client *http.Client

	mu       sync.Mutex
	backends []*backend
	next     int
	conns    map[net.Conn]struct{}
	// dropped counts connections closed at once because no backend was
	// ready or the chosen one refused them.
	dropped int
	// stop is closed when the test ends.
	stop chan struct{}
	wg   sync.WaitGroup
}

type backend struct {
	name, addr string
	ready      bool
	// failures counts the probes failed in a row.
	failures int
	// forwarded counts the connections sent to this backend.
	forwarded int
}

// startLoadBalancer listens on a free 127.0.0.1 port and probes backends
// with an HTTPS client trusting caPEM, until the test ends. serviceHost is the
// name clients verify the backends' certificate for.
func startLoadBalancer(t *testing.T, caPEM []byte, serviceHost string) *loadBalancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("the CA of annex's serving certificate holds no certificate")
	}
	lb := &loadBalancer{
		t:  t,
		ln: ln,
		// /readyz is always allowed, so the probe is anonymous, as the
		// kubelet's is. Each probe opens its own connection, as the kubelet's does.
		probe: &http.Client{
			Timeout:   time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true},
		},
		client: &http.Client{
			Timeout: 5 * time.Second,
			Transport: &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: serviceHost},
				DisableKeepAlives: true,
			},
		},
		conns: map[net.Conn]struct{}{},
		stop:  make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	lb.wg.Add(2)
	go lb.serve()
	go lb.probeLoop(ctx)
	t.Cleanup(func() {
		cancel()
		_ = ln.Close()
		lb.mu.Lock()
		close(lb.stop)
		for c := range lb.conns {
			_ = c.Close()
		}
		lb.mu.Unlock()
		lb.wg.Wait()
	})
	return lb
}

// Port is the port clients connect to.
func (lb *loadBalancer) Port() int { return lb.ln.Addr().(*net.TCPAddr).Port }

// add puts a backend behind the load balancer; it gets traffic once its
// /readyz passes.
func (lb *loadBalancer) add(name, addr string) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.backends = append(lb.backends, &backend{name: name, addr: addr})
}

// waitReady waits until the load balancer has taken the named backend into
// rotation.
func (lb *loadBalancer) waitReady(ctx context.Context, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		lb.mu.Lock()
		for _, b := range lb.backends {
			if b.name == name && b.ready {
				lb.mu.Unlock()
				return nil
			}
		}
		lb.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("backend %s did not become ready behind the load balancer within %s", name, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stats returns the connections forwarded to each backend and those dropped.
func (lb *loadBalancer) stats() (forwarded map[string]int, dropped int) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	forwarded = map[string]int{}
	for _, b := range lb.backends {
		forwarded[b.name] = b.forwarded
	}
	return forwarded, lb.dropped
}

// checkNewConnection sends GET /livez through the load balancer on a new
// connection and fails unless a backend answers 200.
func (lb *loadBalancer) checkNewConnection(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://127.0.0.1:"+strconv.Itoa(lb.Port())+"/livez", nil)
	if err != nil {
		return err
	}
	resp, err := lb.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /livez: %s", resp.Status)
	}
	return nil
}

// pick returns the next ready backend, or nil.
func (lb *loadBalancer) pick() *backend {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for range lb.backends {
		b := lb.backends[lb.next%len(lb.backends)]
		lb.next++
		if b.ready {
			b.forwarded++
			return b
		}
	}
	lb.dropped++
	return nil
}

func (lb *loadBalancer) serve() {
	defer lb.wg.Done()
	for {
		c, err := lb.ln.Accept()
		if err != nil {
			return // the listener is closed at the end of the test
		}
		b := lb.pick()
		if b == nil {
			_ = c.Close()
			continue
		}
		lb.wg.Add(1)
		go lb.forward(c, b)
	}
}

// forward copies bytes both ways until both sides are done, passing on
// half-closes, and drops the client when the backend refuses it.
func (lb *loadBalancer) forward(client net.Conn, b *backend) {
	defer lb.wg.Done()
	server, err := net.DialTimeout("tcp", b.addr, time.Second)
	if err != nil {
		lb.mu.Lock()
		lb.dropped++
		lb.mu.Unlock()
		_ = client.Close()
		return
	}
	if !lb.track(client, server) {
		return
	}
	defer lb.untrack(client, server)
	done := make(chan struct{})
	go func() {
		pipe(server, client)
		close(done)
	}()
	pipe(client, server)
	<-done
}

// pipe copies src to dst; at src's end of stream it half-closes dst, and on
// an error it closes both so that the other direction ends too.
func pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
			return
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

func (lb *loadBalancer) track(conns ...net.Conn) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	select {
	case <-lb.stop:
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	default:
	}
	for _, c := range conns {
		lb.conns[c] = struct{}{}
	}
	return true
}

func (lb *loadBalancer) untrack(conns ...net.Conn) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
		delete(lb.conns, c)
	}
}

func (lb *loadBalancer) probeLoop(ctx context.Context) {
	defer lb.wg.Done()
	ticker := time.NewTicker(probePeriod)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		lb.mu.Lock()
		backends := append([]*backend(nil), lb.backends...)
		lb.mu.Unlock()
		for _, b := range backends {
			ok := lb.probeOnce(ctx, b.addr)
			lb.mu.Lock()
			if ok {
				b.failures = 0
			} else {
				b.failures++
			}
			ready := ok || (b.ready && b.failures < failureThreshold)
			changed := b.ready != ready
			b.ready = ready
			lb.mu.Unlock()
			if changed {
				lb.t.Logf("%s load balancer: backend %s ready=%v", time.Now().Format("15:04:05.000"), b.name, ready)
			}
		}
	}
}

func (lb *loadBalancer) probeOnce(ctx context.Context, addr string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := lb.probe.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}
