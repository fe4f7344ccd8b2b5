// Command annex-apiserver is an aggregated Kubernetes API server that hosts
// custom resources outside the cluster's etcd.
package main

import (
	"os"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/component-base/cli"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"annex.dev/annex/pkg/cmd/server"
)

func main() {
	// controller-runtime logs through klog like the rest of the server.
	ctrl.SetLogger(klog.Background())
	ctx := genericapiserver.SetupSignalContext()
	os.Exit(cli.Run(server.NewCommand(ctx)))
}
