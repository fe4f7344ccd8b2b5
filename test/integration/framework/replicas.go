//go:build integration

package framework

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"annex.dev/annex/test/annexserver"
)

// StartReplicas is Start with n annex replicas behind the APIService, as a
// Deployment of n runs them behind a Service. The cluster's kube-proxy,
// which a cluster's aggregator reaches a Service's pods through (its
// default: no --enable-aggregator-routing), is emulated in the test
// process: the Service resolves to a TCP proxy on 127.0.0.1 (an
// EndpointSlice may not hold a loopback address, so the aggregator cannot
// route to the replicas itself), which sends each new connection to a
// replica whose endpoint is ready, at random, and leaves established
// connections alone, as kube-proxy does. The replicas share everything but
// their port, data directory, runtime directory and log, so they need a
// shared store (annexArgs: --postgres-dsn-file or --etcd-servers). The
// environment's annex is the first replica.
func StartReplicas(ctx context.Context, n int, annexArgs ...string) (*Environment, error) {
	if n < 2 {
		return nil, fmt.Errorf("StartReplicas needs at least 2 replicas, not %d: Start runs one", n)
	}
	return start(ctx, n, nil, annexArgs)
}

// serviceport is the port of annex's Service: the proxy's, in front of
// replicas.
func (e *Environment) serviceport() int {
	if e.proxy != nil {
		return e.proxy.port()
	}
	return e.AnnexPort
}

// launchReplicas launches the replicas after the first (the environment's
// annex, launched already), each with its own port, data directory,
// runtime directory and log, and puts them all behind the proxy.
func (e *Environment) launchReplicas(n int) error {
	if n < 2 {
		return nil
	}
	e.replicas = []*annexserver.Server{e.annex}
	e.proxy.add(e.annex.Addr())
	for i := 1; i < n; i++ {
		runtimeDir := filepath.Join(e.Dir, fmt.Sprintf("annex-run-%d", i))
		args := make([]string, 0, len(e.annex.Args))
		for _, a := range e.annex.Args {
			if strings.HasPrefix(a, "--runtime-dir=") {
				a = "--runtime-dir=" + runtimeDir
			}
			args = append(args, a)
		}
		r := &annexserver.Server{
			Name:        fmt.Sprintf("annex-%d", i),
			Bin:         e.annex.Bin,
			Mode:        annexserver.Aggregated,
			Dir:         e.Dir,
			DataDir:     filepath.Join(e.Dir, fmt.Sprintf("annex-data-%d", i)),
			Args:        args,
			LogFile:     filepath.Join(e.Dir, fmt.Sprintf("annex-%d.log", i)),
			Probe:       e.annex.Probe,
			StopTimeout: annexStopTimeout,
		}
		if err := r.Launch(); err != nil {
			return err
		}
		e.replicas = append(e.replicas, r)
		e.proxy.add(r.Addr())
	}
	return nil
}

// waitForReplicas waits until every replica reports ready.
func (e *Environment) waitForReplicas(ctx context.Context) error {
	for i, r := range e.replicas {
		if err := r.WaitReady(ctx, registrationTimeout); err != nil {
			return fmt.Errorf("replica %d: %w%s", i, err, r.LogTail(60))
		}
	}
	return nil
}

// serviceProxy is the emulated kube-proxy in front of the replicas.
type serviceProxy struct {
	ln net.Listener
	mu sync.Mutex
	// backends are the replicas, in the order they were added.
	backends []proxyBackend
	// conns are the connections open, closed at stop.
	conns map[net.Conn]struct{}
	done  sync.WaitGroup
}

// proxyBackend is a replica's address, and whether new connections may
// go to it.
type proxyBackend struct {
	addr  string
	ready bool
}

// startServiceProxy listens on a reserved port of 127.0.0.1 for
// connections to the replicas, added as they start.
func startServiceProxy() (*serviceProxy, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	p := &serviceProxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.done.Go(p.serve)
	return p, nil
}

// add puts a replica behind the proxy, ready.
func (p *serviceProxy) add(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backends = append(p.backends, proxyBackend{addr: addr, ready: true})
}

func (p *serviceProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *serviceProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.done.Go(func() { p.forward(c) })
	}
}

// forward copies c to and from a ready replica chosen at random; with none
// ready, it closes c, as a Service without ready endpoints refuses.
func (p *serviceProxy) forward(c net.Conn) {
	p.mu.Lock()
	var ready []string
	for _, b := range p.backends {
		if b.ready {
			ready = append(ready, b.addr)
		}
	}
	p.mu.Unlock()
	if len(ready) == 0 {
		_ = c.Close()
		return
	}
	b, err := net.Dial("tcp", ready[rand.IntN(len(ready))])
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, b) {
		return
	}
	defer p.untrack(c, b)
	var copying sync.WaitGroup
	copying.Go(func() {
		_, _ = io.Copy(b, c)
		_ = b.(*net.TCPConn).CloseWrite()
	})
	_, _ = io.Copy(c, b)
	_ = c.(*net.TCPConn).CloseWrite()
	copying.Wait()
}

// track notes a connection pair, or closes it when the proxy has stopped.
func (p *serviceProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *serviceProxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

func (p *serviceProxy) setReady(i int, ready bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backends[i].ready = ready
}

// stop closes the listener and every connection, and waits for the
// proxy's goroutines.
func (p *serviceProxy) stop() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.done.Wait()
}

// Replicas is how many annex replicas run behind the APIService.
func (e *Environment) Replicas() int { return max(1, len(e.replicas)) }

// setReplicaReady marks the endpoint of replica i ready or not, as the
// cluster does for a pod that is ready, or being deleted: new connections
// to the Service go to the ready replicas only.
func (e *Environment) setReplicaReady(i int, ready bool) error {
	if i < 0 || i >= len(e.replicas) {
		return fmt.Errorf("no replica %d: %d run", i, len(e.replicas))
	}
	e.proxy.setReady(i, ready)
	return nil
}

// RollReplica restarts replica i as a rollout restarts a pod: its endpoint
// is marked terminating (not ready) and it gets SIGTERM at the same time,
// as when the pod is deleted; once it has exited it starts again on the
// same flags, and its endpoint is marked ready once its /readyz answers
// 200. It returns how long the new process took to be ready.
func (e *Environment) RollReplica(ctx context.Context, i int, timeout time.Duration) (time.Duration, error) {
	if i < 0 || i >= len(e.replicas) {
		return 0, fmt.Errorf("no replica %d: %d run", i, len(e.replicas))
	}
	r := e.replicas[i]
	if err := e.setReplicaReady(i, false); err != nil {
		return 0, err
	}
	if err := r.Stop(); err != nil {
		return 0, fmt.Errorf("stopping replica %d: %w", i, err)
	}
	r.ReadyTimeout = timeout
	if err := r.Start(ctx); err != nil {
		return 0, fmt.Errorf("starting replica %d again: %w", i, err)
	}
	if err := e.setReplicaReady(i, true); err != nil {
		return 0, err
	}
	return r.ReadyIn(), nil
}
