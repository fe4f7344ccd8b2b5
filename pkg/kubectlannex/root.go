// Package kubectlannex holds the commands of the kubectl plugin
// kubectl-annex: `kubectl annex status`, `adopt`, `confirm`, `release`,
// `export` and `import`.
package kubectlannex

import (
	"context"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/util/templates"
)

var (
	rootLong = templates.LongDesc(`
		kubectl annex inspects annex, the aggregated API server that hosts custom
		resources outside the cluster's etcd, and moves the objects of its types in and
		out.

		Find more information at: https://github.com/annex-dev/annex/blob/main/docs/kubectl-annex.md`)

	rootExample = templates.Examples(`
		# Show the hosted types, their backends and object counts
		kubectl annex status

		# Move a CRD of the cluster, with its objects, into annex
		kubectl annex adopt policyreports.wgpolicyk8s.io

		# Keep it in annex: delete the copies of its objects left in the cluster's etcd
		kubectl annex confirm policyreports.wgpolicyk8s.io

		# Or give it back to the cluster, with the objects annex holds
		kubectl annex release policyreports.wgpolicyk8s.io

		# Back up a type's objects, and restore them
		kubectl annex export policyreports -A -f reports.yaml
		kubectl annex import -f reports.yaml`)
)

// Run runs `kubectl annex` with args, the arguments kubectl passes to the
// plugin.
func Run(ctx context.Context, streams genericiooptions.IOStreams, args []string) error {
	root := NewCommand(streams).Root()
	root.SetArgs(rootArgs(args))
	return root.ExecuteContext(ctx)
}

// rootArgs are the arguments of the plugin's root, a bare kubectl command:
// annex first, after cobra's completion request if there is one.
func rootArgs(args []string) []string {
	if len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) {
		return append([]string{args[0], "annex"}, args[1:]...)
	}
	return append([]string{"annex"}, args...)
}

// NewCommand returns `kubectl annex` with its commands. Run as a kubectl
// plugin, it takes kubectl's connection flags (--kubeconfig, --context,
// --namespace, ...) after the plugin's name. Its parent is a bare kubectl
// command, so that help and errors name every command as the user types
// it.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	configFlags := genericclioptions.NewConfigFlags(true)
	kubectl := &cobra.Command{
		Use:               "kubectl",
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	kubectl.SetIn(streams.In)
	kubectl.SetOut(streams.Out)
	kubectl.SetErr(streams.ErrOut)
	cmd := &cobra.Command{
		Use:           "annex",
		Short:         "Inspect annex and move the objects of the types it hosts",
		Long:          rootLong,
		Example:       rootExample,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		Run:           func(cmd *cobra.Command, _ []string) { _ = cmd.Help() },
	}
	kubectl.AddCommand(cmd)
	configFlags.AddFlags(cmd.PersistentFlags())

	cmd.AddCommand(
		NewCmdStatus(configFlags, streams),
		NewCmdAdopt(configFlags, streams),
		NewCmdRelease(configFlags, streams),
		NewCmdConfirm(configFlags, streams),
		NewCmdExport(configFlags, streams),
		NewCmdImport(configFlags, streams),
	)
	// kubectl's help templates, from the bare kubectl down, as kubectl's
	// own commands with subcommands (kubectl config) show them.
	templates.ActsAsRootCommand(kubectl, nil)
	cmd.AddCommand(newCmdOptions(streams.Out))
	return cmd
}

// newCmdOptions is `kubectl annex options`, which lists the flags every
// command takes, as `kubectl options` does for kubectl.
func newCmdOptions(out io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "options",
		Short: "Print the list of flags inherited by all commands",
		Long:  "Print the list of flags inherited by all commands",
		Example: templates.Examples(`
			# Print flags inherited by all commands
			kubectl annex options`),
		Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			_ = cmd.Usage()
		},
	}
	cmd.SetOut(out)
	cmd.SetErr(out)
	templates.UseOptionsTemplates(cmd)
	return cmd
}
