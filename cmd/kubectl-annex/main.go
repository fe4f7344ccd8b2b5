// Command kubectl-annex is the kubectl plugin of annex: installed on the
// PATH, it runs as `kubectl annex`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"annex.dev/annex/pkg/kubectlannex"
)

func main() {
	// An interrupt cancels the requests in flight; import still finishes
	// (or undoes) the object it is writing.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	err := kubectlannex.Run(ctx, streams, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}
