//go:build integration

package framework

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"annex.dev/annex/test/process"
)

const (
	// controllerManagerStopTimeout bounds how long kube-controller-manager
	// may take to exit after SIGTERM.
	controllerManagerStopTimeout = 15 * time.Second
	// controllerManagerStartGrace is how long the process must stay up for
	// StartControllerManager to report it started: a bad flag or an
	// unreachable kube-apiserver ends it within this time.
	controllerManagerStartGrace = 2 * time.Second
)

// controllerManagerMu serializes StartControllerManager: two managers would
// run the same controllers twice, and a test that starts one expects to own
// the cluster's controllers for its length.
var controllerManagerMu sync.Mutex

// StartControllerManager starts the built kube-controller-manager against the
// kube-apiserver, running only the named controllers (for example
// "garbage-collector-controller", "namespace-controller"). It runs as a
// system:masters user, without leader election and without serving HTTPS, and
// logs to a file in Dir (returned by ControllerManagerLog while it runs and
// kept afterwards). stop terminates it; calling stop more than once is safe.
// Only one kube-controller-manager runs at a time: a second call blocks until
// the first is stopped or ctx ends.
func (e *Environment) StartControllerManager(ctx context.Context, controllers ...string) (stop func() error, log string, err error) {
	if len(controllers) == 0 {
		return nil, "", errors.New("name at least one controller: kube-controller-manager runs none by default here")
	}
	bin := filepath.Join(e.assets, "kube-controller-manager")
	if err := checkExecutable(bin); err != nil {
		return nil, "", err
	}
	if !lockWithContext(ctx, &controllerManagerMu) {
		return nil, "", fmt.Errorf("waiting for the previous kube-controller-manager to stop: %w", ctx.Err())
	}
	unlocked := false
	unlock := func() {
		if !unlocked {
			unlocked = true
			controllerManagerMu.Unlock()
		}
	}
	defer func() {
		if err != nil {
			unlock()
		}
	}()

	user, err := e.env.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, "", fmt.Errorf("provisioning kube-controller-manager's cluster user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, "", err
	}
	kubeconfigFile := filepath.Join(e.Dir, "kube-controller-manager.kubeconfig")
	if err := os.WriteFile(kubeconfigFile, kubeconfig, 0o600); err != nil {
		return nil, "", err
	}

	// Each start gets its own log so that a test's failure points at its own
	// run; the files stay in Dir for a post-mortem.
	logFile, err := os.CreateTemp(e.Dir, "kube-controller-manager-*.log")
	if err != nil {
		return nil, "", err
	}
	e.logFiles = append(e.logFiles, logFile)
	log = logFile.Name()

	args := []string{
		"--kubeconfig=" + kubeconfigFile,
		"--controllers=" + strings.Join(controllers, ","),
		// One manager, started and stopped by the test: nothing to elect.
		"--leader-elect=false",
		// Every controller acts as the admin user; there is no
		// serviceaccount-token controller to mint per-controller tokens.
		"--use-service-account-credentials=false",
		// No HTTPS endpoint: the test never scrapes it, and without one the
		// manager needs no authentication or authorization delegation.
		"--secure-port=0",
		"--v=2",
	}
	proc, err := process.Start(bin, args, nil, e.Dir, logFile)
	if err != nil {
		return nil, "", fmt.Errorf("starting %s: %w", bin, err)
	}

	select {
	case <-time.After(controllerManagerStartGrace):
	case <-ctx.Done():
	}
	if exited, exitErr := proc.Exited(); exited {
		return nil, "", fmt.Errorf("kube-controller-manager exited at start: %v%s", exitErr, process.FileTail(log, 40))
	}
	if ctx.Err() != nil {
		_ = proc.Stop(controllerManagerStopTimeout)
		return nil, "", ctx.Err()
	}

	var once sync.Once
	var stopErr error
	stop = func() error {
		once.Do(func() {
			defer unlock()
			if err := proc.Stop(controllerManagerStopTimeout); err != nil {
				stopErr = fmt.Errorf("stopping kube-controller-manager (log: %s): %w", log, err)
			}
		})
		return stopErr
	}
	return stop, log, nil
}

// lockWithContext takes mu unless ctx ends first.
func lockWithContext(ctx context.Context, mu *sync.Mutex) bool {
	for {
		if mu.TryLock() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}
