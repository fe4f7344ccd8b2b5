package kubectlannex

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/util/templates"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

var (
	confirmLong = templates.LongDesc(`
		Confirm the adoption of a CustomResourceDefinition: delete the objects that
		the cluster's etcd still holds of the type, to reclaim their space.

		After an adoption the cluster's etcd keeps the type's objects as they were at
		the switch. Nothing reads them; they are what a release would update in
		place, so that the objects keep their uid. Once you keep the type in annex,
		this command has annex delete them: through a version of the CRD that the
		cluster serves for the time and only annex uses, in batches, finalizers or
		not, while annex goes on serving the type and accepting writes. annex's
		objects are not touched. The CRD itself stays, unserved.

		It cannot be undone. A release afterwards creates every object in the
		cluster anew, with a new uid and creation time.

		The command sets spec.adoption.deleteClusterCopies on the type's
		HostedResource and follows the deletion with a progress bar until the
		cluster holds none of the objects. Interrupting the command does not stop
		the deletion: run it again to follow it.`)

	confirmExample = templates.Examples(`
		# Show what would be deleted
		kubectl annex confirm policyreports.wgpolicyk8s.io --dry-run

		# Delete the cluster's copies without asking
		kubectl annex confirm policyreports.wgpolicyk8s.io --yes`)
)

// ConfirmOptions are the options of `kubectl annex confirm`.
type ConfirmOptions struct {
	configFlags *genericclioptions.ConfigFlags
	dryRun      bool
	yes         bool
	progress    string
	timeout     time.Duration
	// interval is how often the deletion's progress is read.
	interval time.Duration
	genericiooptions.IOStreams
}

// NewCmdConfirm returns `kubectl annex confirm`.
func NewCmdConfirm(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &ConfirmOptions{configFlags: configFlags, progress: progressAuto, timeout: time.Hour, interval: 500 * time.Millisecond, IOStreams: streams}
	cmd := &cobra.Command{
		Use:                   "confirm CRD_NAME [--dry-run] [--yes] [options]",
		DisableFlagsInUseLine: true,
		Short:                 "Confirm an adoption: delete the objects the cluster's etcd still holds of the type",
		Long:                  confirmLong,
		Example:               confirmExample,
		Args:                  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validateProgress(o.progress); err != nil {
				return err
			}
			return o.Run(cmd.Context(), args[0])
		},
	}
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "Only show what would be deleted, checked by the server.")
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "Do not ask for confirmation.")
	cmd.Flags().StringVar(&o.progress, "progress", o.progress, "Show a progress bar on standard error: auto (when it is a terminal), always or never.")
	cmd.Flags().DurationVar(&o.timeout, "timeout", o.timeout, "How long to follow the deletion before giving up (the deletion goes on).")
	return cmd
}

// deleteClusterCopiesPatch sets spec.adoption.deleteClusterCopies.
var deleteClusterCopiesPatch = []byte(`{"spec":{"adoption":{"deleteClusterCopies":true}}}`)

// Run deletes the cluster's copies of the type of crdName, or follows the
// deletion under way.
func (o *ConfirmOptions) Run(ctx context.Context, crdName string) error {
	c, hr, a, err := adoptionOf(ctx, o.configFlags, crdName)
	if err != nil {
		return err
	}
	name := hr.Name
	switch {
	case a.ClusterCopies != nil && a.ClusterCopies.CompletionTime != nil:
		if o.dryRun {
			fmt.Fprintf(o.Out, "The cluster's copies of CustomResourceDefinition %s are already deleted.\n", crdName)
			return nil
		}
		printClusterCopiesDeleted(o.Out, crdName, a.ClusterCopies)
		return nil
	case hr.Spec.Adoption.DeleteClusterCopies:
		if o.dryRun {
			fmt.Fprintf(o.Out, "The cluster's copies of CustomResourceDefinition %s are being deleted: %s\n", crdName, adoptionCell(a))
			return nil
		}
		fmt.Fprintf(o.ErrOut, "Following the deletion of the cluster's copies of %s under way.\n", crdName)
		return o.follow(ctx, c, name, crdName)
	case a.Phase != v1alpha1.AdoptionAdopted:
		return fmt.Errorf("the adoption of %s is %s, not Adopted: the cluster's copies are deleted only once annex serves the type", crdName, adoptionCell(a))
	}

	// The cluster no longer serves the type: its copies are the objects the
	// adoption copied, less those deleted before the switch.
	estimate := (time.Duration(a.Total) * time.Second / copyRate).Round(time.Second)
	summary := fmt.Sprintf("delete from the cluster's etcd the objects it still holds of CustomResourceDefinition %s "+
		"(about %d, as many as the adoption copied; about %s), finalizers or not; annex's objects stay, and it keeps serving the type. "+
		"This cannot be undone: a release afterwards creates every object anew, with a new uid",
		crdName, a.Total, max(estimate, time.Second))
	if o.dryRun {
		_, err := c.annex.AnnexV1alpha1().HostedResources().Patch(ctx, name, types.MergePatchType, deleteClusterCopiesPatch,
			metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return fmt.Errorf("annex would refuse it: %w", c.annexError(ctx, err))
		}
		fmt.Fprintf(o.Out, "Would %s.\n", summary)
		return nil
	}
	if err := askToContinue(o.In, o.ErrOut, o.yes, summary, "nothing deleted"); err != nil {
		return err
	}
	_, err = c.annex.AnnexV1alpha1().HostedResources().Patch(ctx, name, types.MergePatchType, deleteClusterCopiesPatch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("setting spec.adoption.deleteClusterCopies of HostedResource %s: %w", name, c.annexError(ctx, err))
	}
	return o.follow(ctx, c, name, crdName)
}

// reasonClusterCopiesNotDeleted is adoption.ReasonClusterCopiesNotDeleted
// (the controller's package is the server's).
const reasonClusterCopiesNotDeleted = "ClusterCopiesNotDeleted"

// follow shows the deletion's progress until it ends.
func (o *ConfirmOptions) follow(ctx context.Context, c *clients, name, crdName string) error {
	f := &follower{
		what:     "deletion",
		barLabel: "deleting",
		count: func(a *v1alpha1.AdoptionStatus) (done, total int64, counting bool) {
			cc := a.ClusterCopies
			if cc == nil {
				return 0, 0, false
			}
			return cc.Deleted, cc.Total, cc.CompletionTime == nil && a.Reason == ""
		},
		failed: func(a *v1alpha1.AdoptionStatus) bool { return a.Reason == reasonClusterCopiesNotDeleted },
		done: func(_ context.Context, a *v1alpha1.AdoptionStatus) (bool, error) {
			switch {
			case a.ClusterCopies != nil && a.ClusterCopies.CompletionTime != nil:
				printClusterCopiesDeleted(o.Out, crdName, a.ClusterCopies)
				return true, nil
			case a.Reason == reasonClusterCopiesNotDeleted:
				return true, fmt.Errorf("the cluster's copies of %s cannot be deleted (%s): %s; annex tries again every few seconds", crdName, a.Reason, a.Message)
			case a.Phase != v1alpha1.AdoptionAdopted:
				return true, fmt.Errorf("the adoption of %s is %s: the cluster's copies are no longer being deleted", crdName, adoptionCell(a))
			}
			return false, nil
		},
		out: o.ErrOut, progress: o.progress, timeout: o.timeout, interval: o.interval,
	}
	return f.follow(ctx, c, name)
}

// printClusterCopiesDeleted says what the deletion did.
func printClusterCopiesDeleted(out io.Writer, crdName string, cc *v1alpha1.ClusterCopiesStatus) {
	took := ""
	if cc.StartTime != nil && cc.CompletionTime != nil {
		took = " in " + cc.CompletionTime.Sub(cc.StartTime.Time).Round(time.Second).String()
	}
	fmt.Fprintf(out, "customresourcedefinition/%s confirmed: %d objects deleted from the cluster's etcd%s; annex serves the type\n", crdName, cc.Total, took)
}
