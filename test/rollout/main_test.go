//go:build integration

// Package rollout restarts annex replicas one at a time behind the cluster's
// aggregator while a client creates, lists and watches through the cluster,
// and checks that the client notices nothing: issue 6, "rolling restart
// without errors".
package rollout

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"annex.dev/annex/test/integration/framework"
)

// env is a kube-apiserver with the aggregation layer and no annex: the test
// runs its own replicas.
var env *framework.Environment

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	e, err := framework.StartControlPlane(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting the control plane: %v\n", err)
		return 1
	}
	env = e
	code := m.Run()
	if code != 0 {
		env.KeepDir = true
		fmt.Fprintf(os.Stderr, "files kept in %s (kube-apiserver log: %s)\n", env.Dir, env.APIServerLog)
	}
	if err := env.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the control plane: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
