//go:build integration

// Package rollout restarts annex replicas one at a time behind the cluster's
// aggregator while a client creates, lists and watches through the cluster,
// and checks that the client notices nothing: issue 6, "rolling restart
// without errors".
package rollout

import (
	"os"
	"testing"

	"annex.dev/annex/test/integration/framework"
)

// env is a kube-apiserver with the aggregation layer and no annex: the test
// runs its own replicas.
var env *framework.Environment

func TestMain(m *testing.M) {
	os.Exit(framework.RunTests(m, framework.StartControlPlane, func(e *framework.Environment) { env = e }))
}
