// Command etcd is the etcd server of the test control plane, built from the
// Go module proxy because no prebuilt binary can be downloaded here.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
