package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"annex.dev/annex/test/annexserver"
)

// replica is one annex process in standalone mode: its own certificates,
// admin kubeconfig and data directory; its store is the embedded etcd
// unless storeArgs name another.
type replica struct {
	*annexserver.Server
	name string
	// target reaches the replica as its admin, for the hosted group.
	target *target
}

// startReplica starts annex with its data in dir and its log in logDir, and
// waits up to 2 minutes until /readyz answers 200.
func startReplica(ctx context.Context, bin, name, dir, logDir string, storeArgs []string) (*replica, error) {
	return startReplicaWithin(ctx, bin, name, dir, logDir, storeArgs, nil, 2*time.Minute)
}

// startReplicaWithin is startReplica with env as annex's environment (the
// driver's when nil), waiting up to timeout for /readyz.
func startReplicaWithin(ctx context.Context, bin, name, dir, logDir string, storeArgs, env []string, timeout time.Duration) (*replica, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	r := &replica{name: name, Server: &annexserver.Server{
		Name: name, Bin: bin, Dir: dir, LogFile: filepath.Join(logDir, name+".log"), Args: storeArgs, Env: env, ReadyTimeout: timeout,
	}}
	if err := r.Start(ctx); err != nil {
		return nil, fmt.Errorf("%s did not become ready (log %s): %w", name, r.LogFile, err)
	}
	cfg, err := r.AdminConfig()
	if err != nil {
		_ = r.stop()
		return nil, err
	}
	srv, dyn, err := newServer(name, cfg)
	if err != nil {
		_ = r.stop()
		return nil, err
	}
	r.target = &target{Name: name, Server: srv, Dyn: dyn, group: hostedGroup}
	return r, nil
}

// stop stops the replica; a replica that exited on its own is an error.
func (r *replica) stop() error {
	if err := r.Stop(); err != nil {
		return fmt.Errorf("stopping %s (log %s): %w", r.name, r.LogFile, err)
	}
	return nil
}

// waitServed waits until the replica serves shape s in namespace ns.
func (r *replica) waitServed(ctx context.Context, s shape, ns string) error {
	gvr := r.target.gvr(s)
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		_, lastErr = r.target.Dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{Limit: 1})
		return lastErr == nil, nil
	})
	if err != nil {
		return fmt.Errorf("%s does not serve %s: %w; last error: %v", r.name, gvr, err, lastErr)
	}
	return nil
}

// metrics reads the named metrics of annex's command-line store (labelled
// storage_backend="default", or unlabelled) from the replica's /metrics.
func (r *replica) metrics(ctx context.Context, names ...string) (map[string]float64, error) {
	body, err := r.target.Server.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	return parseStoreMetrics(body, names...), nil
}

// parseStoreMetrics is parseMetrics for the metrics of annex's
// command-line store, which carry storage_backend="default" (or no label).
func parseStoreMetrics(body []byte, names ...string) map[string]float64 {
	out := parseLabelledMetrics(body, map[string]string{"storage_backend": "default"}, names...)
	for name, v := range parseMetrics(body, names...) {
		if math.IsNaN(out[name]) {
			out[name] = v
		}
	}
	return out
}
