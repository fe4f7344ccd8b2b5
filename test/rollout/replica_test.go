//go:build integration

package rollout

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"annex.dev/annex/test/annexserver"
	"annex.dev/annex/test/integration/framework"
)

// stopTimeout bounds a replica's graceful shutdown: the shutdown delay, the
// watch termination grace period and a margin.
const stopTimeout = 30 * time.Second

// replica is one annex process, restartable with the same arguments, as a
// pod of the chart's Deployment is.
type replica struct {
	*annexserver.Server
	name string
	// shutdownDelay is --shutdown-delay-duration of the running process.
	shutdownDelay time.Duration
	// common are the flags every replica shares.
	common []string
}

// newReplica prepares (but does not start) a replica serving on a free port
// of 127.0.0.1 with the shared flags; /readyz is asked trusting caPEM.
func newReplica(t *testing.T, name, dir string, common []string, caPEM []byte) *replica {
	t.Helper()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, common: common, Server: &annexserver.Server{
		Name:        name,
		Mode:        annexserver.Aggregated,
		Dir:         filepath.Join(dir, name),
		DataDir:     filepath.Join(dir, name),
		Port:        port,
		LogFile:     filepath.Join(dir, "annex-"+name+".log"),
		Probe:       &rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}},
		StopTimeout: stopTimeout,
	}}
	if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	annexserver.Cleanup(t, r.Server)
	return r
}

// start runs the replica with shutdownDelay as --shutdown-delay-duration.
func (r *replica) start(shutdownDelay time.Duration) error {
	r.shutdownDelay = shutdownDelay
	r.Args = append([]string{"--shutdown-delay-duration=" + shutdownDelay.String()}, r.common...)
	return r.Launch()
}

// stop sends SIGTERM and waits until the process has exited, as the kubelet
// does within the pod's grace period.
func (r *replica) stop() (time.Duration, error) {
	start := time.Now()
	err := r.Stop()
	return time.Since(start), err
}

// waitReady waits until the replica's own /readyz answers 200.
func (r *replica) waitReady(ctx context.Context, timeout time.Duration) error {
	if err := r.WaitReady(ctx, timeout); err != nil {
		return fmt.Errorf("%w%s", err, r.LogTail(30))
	}
	return nil
}

// addr is where the replica serves.
func (r *replica) addr() string { return r.Addr() }
