//go:build integration

package framework

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// StartControlPlane brings up etcd and a kube-apiserver with the aggregation
// layer configured, as Start does, but no annex: for tests that install annex
// themselves (the Helm chart's tests). Stop tears it down.
func StartControlPlane(ctx context.Context) (_ *Environment, retErr error) {
	assets := os.Getenv(AssetsEnv)
	if assets == "" {
		return nil, fmt.Errorf("%s is not set: point it at the directory printed by hack/tools/install.sh", AssetsEnv)
	}
	for _, bin := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if err := checkExecutable(filepath.Join(assets, bin)); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "annex-controlplane-")
	if err != nil {
		return nil, err
	}
	e := &Environment{Dir: dir, assets: assets}
	defer func() {
		if retErr != nil {
			e.KeepDir = true
			if err := e.Stop(); err != nil {
				retErr = fmt.Errorf("%w (and stopping: %v)", retErr, err)
			}
			retErr = fmt.Errorf("%w\n(files kept in %s)", retErr, dir)
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := e.startCluster(nil); err != nil {
		return nil, err
	}
	return e, nil
}

// Tool returns the path of a binary of the test control plane (kubectl,
// helm, ...), failing when it is missing.
func (e *Environment) Tool(name string) (string, error) {
	path := filepath.Join(e.assets, name)
	if err := checkExecutable(path); err != nil {
		return "", err
	}
	return path, nil
}

// KubectlAs runs the test kubectl with the given kubeconfig (for example one
// holding a ServiceAccount's token) and stdin, and returns its output.
func (e *Environment) KubectlAs(ctx context.Context, kubeconfig string, stdin io.Reader, args ...string) (stdout, stderr string, err error) {
	all := append([]string{"--kubeconfig=" + kubeconfig, "--cache-dir=" + filepath.Join(e.Dir, "kubectl-cache")}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(e.assets, "kubectl"), all...)
	cmd.Stdin = stdin
	var outBuf, errBuf strings.Builder
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	if err := cmd.Run(); err != nil {
		return outBuf.String(), errBuf.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, errBuf.String())
	}
	return outBuf.String(), errBuf.String(), nil
}

// Helm runs the test helm as the admin user against the kube-apiserver, with
// its cache, configuration and data kept in Dir (never the user's own).
func (e *Environment) Helm(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	helm, err := e.Tool("helm")
	if err != nil {
		return "", "", err
	}
	cmd := exec.CommandContext(ctx, helm, args...)
	home := filepath.Join(e.Dir, "helm")
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+e.KubeconfigFile,
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var outBuf, errBuf strings.Builder
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	if err := cmd.Run(); err != nil {
		return outBuf.String(), errBuf.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, errBuf.String())
	}
	return outBuf.String(), errBuf.String(), nil
}
