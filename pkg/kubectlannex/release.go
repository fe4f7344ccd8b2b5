package kubectlannex

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/util/templates"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

var (
	releaseLong = templates.LongDesc(`
		Give a CustomResourceDefinition that annex adopted back to the cluster, with
		the objects annex holds.

		annex writes its objects back into the cluster's etcd, through a version of
		the CRD that only it writes to, while it still serves the type: clients keep
		reading and writing annex's objects meanwhile. Then annex refuses writes to
		the type's group for a few seconds (a ValidatingAdmissionPolicy answers them
		with a message asking to retry) while it writes back what changed since.
		Objects that changed while
		annex served the type are updated and keep their uid; those deleted are
		deleted; those created are created, and the cluster gives them a new uid and
		creation time, which no client can set: the command lists them. Then annex
		serves the CRD's versions again, gives the APIServices back to the cluster,
		and accepts writes again.

		The command sets spec.adoption.release on the type's HostedResource and
		follows the release until it ends: it exits 0 once the cluster serves the
		type again, then deletes the HostedResource, which deletes annex's copies
		of the objects. It exits non-zero with the reason if the release fails (annex
		then undoes it and keeps serving the type). Interrupting the command does not
		stop the release: run it again to follow it.

		The cluster routes requests by API group, so annex releases every adopted CRD
		of a group together: release each of them.`)

	releaseExample = templates.Examples(`
		# Show what releasing the CRD would do, and how many objects will get a new uid
		kubectl annex release policyreports.wgpolicyk8s.io --dry-run

		# Release it without asking
		kubectl annex release policyreports.wgpolicyk8s.io --yes`)
)

// ReleaseOptions are the options of `kubectl annex release`.
type ReleaseOptions struct {
	configFlags *genericclioptions.ConfigFlags
	printFlags  *genericclioptions.JSONYamlPrintFlags
	output      string
	dryRun      bool
	yes         bool
	progress    string
	timeout     time.Duration
	// interval is how often the release's progress is read.
	interval time.Duration
	genericiooptions.IOStreams
}

// NewCmdRelease returns `kubectl annex release`.
func NewCmdRelease(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &ReleaseOptions{configFlags: configFlags, printFlags: genericclioptions.NewJSONYamlPrintFlags(),
		progress: progressAuto, timeout: time.Hour, interval: 500 * time.Millisecond, IOStreams: streams}
	cmd := &cobra.Command{
		Use:                   "release CRD_NAME [--dry-run] [--yes] [options]",
		DisableFlagsInUseLine: true,
		Short:                 "Give an adopted CustomResourceDefinition, with annex's objects, back to the cluster",
		Long:                  releaseLong,
		Example:               releaseExample,
		Args:                  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context(), args[0])
		},
	}
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "Only show what would happen: the object count, how many would get a new uid, the estimated time, and (with -o) the HostedResource, checked by the server.")
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "With --dry-run, print the HostedResource. One of: (yaml, json).")
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "Do not ask for confirmation.")
	cmd.Flags().StringVar(&o.progress, "progress", o.progress, "Show a progress bar on standard error: auto (when it is a terminal), always or never.")
	cmd.Flags().DurationVar(&o.timeout, "timeout", o.timeout, "How long to follow the release before giving up (the release goes on).")
	return cmd
}

// Validate checks the flags.
func (o *ReleaseOptions) Validate() error {
	if err := validateProgress(o.progress); err != nil {
		return err
	}
	switch o.output {
	case "", "yaml", "json":
	default:
		return fmt.Errorf("invalid --output %q: one of yaml, json", o.output)
	}
	if o.output != "" && !o.dryRun {
		return fmt.Errorf("--output prints the HostedResource of --dry-run; add --dry-run")
	}
	return nil
}

// Run releases the CRD crdName, or follows a release of it under way.
func (o *ReleaseOptions) Run(ctx context.Context, crdName string) error {
	c, hr, a, err := adoptionOf(ctx, o.configFlags, crdName)
	if err != nil {
		return err
	}
	name := hr.Name
	switch {
	case a.Phase == v1alpha1.AdoptionReleased:
		if o.dryRun {
			fmt.Fprintf(o.Out, "CustomResourceDefinition %s is already released; HostedResource %s is left to delete.\n", crdName, name)
			return nil
		}
		return o.released(ctx, c, name, a)
	case a.Phase == v1alpha1.AdoptionRollingBack:
		if o.dryRun {
			fmt.Fprintf(o.Out, "CustomResourceDefinition %s is being released: %s\n", crdName, adoptionCell(a))
			return nil
		}
		fmt.Fprintf(o.ErrOut, "Following the release of %s under way.\n", crdName)
		return o.follow(ctx, c, name)
	case a.Phase != v1alpha1.AdoptionAdopted:
		return fmt.Errorf("the adoption of %s is %s, not Adopted: only a type annex serves can be given back", crdName, adoptionCell(a))
	}

	objects, created, err := o.countObjects(ctx, c, hr)
	if err != nil {
		return err
	}
	estimate := (time.Duration(objects) * time.Second / copyRate).Round(time.Second)
	summary := fmt.Sprintf("give CustomResourceDefinition %s back to the cluster with annex's %d objects; %d were created while annex served the type "+
		"and will get a new uid and creation time; about %s to write them back, writes accepted, then writes to the type are refused for a few seconds",
		crdName, objects, created, max(estimate, time.Second))

	if o.dryRun {
		patched, err := c.annex.AnnexV1alpha1().HostedResources().Patch(ctx, name, types.MergePatchType, releasePatch(true),
			metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return fmt.Errorf("annex would refuse the release: %w", c.annexError(ctx, err))
		}
		if o.output != "" {
			patched.SetGroupVersionKind(v1alpha1.SchemeGroupVersion.WithKind("HostedResource"))
			printer, err := o.printFlags.ToPrinter(o.output)
			if err != nil {
				return err
			}
			fmt.Fprintf(o.ErrOut, "Would %s.\n", summary)
			return printer.PrintObj(patched, o.Out)
		}
		fmt.Fprintf(o.Out, "Would %s.\n", summary)
		return nil
	}
	if err := askToContinue(o.In, o.ErrOut, o.yes, summary, "not released"); err != nil {
		return err
	}
	if hr.Spec.Adoption.Release && a.Reason == reasonReleaseFailed {
		// A release that failed is tried again once it is no longer asked for.
		fmt.Fprintf(o.ErrOut, "The last release failed: %s\nTrying again.\n", a.Message)
		if err := o.setRelease(ctx, c, name, false); err != nil {
			return err
		}
		if err := wait.PollUntilContextTimeout(ctx, o.interval, time.Minute, true, func(ctx context.Context) (bool, error) {
			hr, err := c.annex.AnnexV1alpha1().HostedResources().Get(ctx, name, metav1.GetOptions{})
			return err == nil && (hr.Status.Adoption == nil || hr.Status.Adoption.Reason != reasonReleaseFailed), nil
		}); err != nil {
			return fmt.Errorf("annex did not forget the failed release of %s: %w", crdName, err)
		}
	}
	if err := o.setRelease(ctx, c, name, true); err != nil {
		return err
	}
	return o.follow(ctx, c, name)
}

// reasonReleaseFailed is adoption.ReasonReleaseFailed (the controller's
// package is the server's).
const reasonReleaseFailed = "ReleaseFailed"

func releasePatch(release bool) []byte {
	return fmt.Appendf(nil, `{"spec":{"adoption":{"release":%t}}}`, release)
}

func (o *ReleaseOptions) setRelease(ctx context.Context, c *clients, name string, release bool) error {
	_, err := c.annex.AnnexV1alpha1().HostedResources().Patch(ctx, name, types.MergePatchType, releasePatch(release), metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("setting spec.adoption.release of HostedResource %s to %t: %w", name, release, c.annexError(ctx, err))
	}
	return nil
}

// adoptionOf connects to annex and finds the HostedResource that adopted
// crdName, and its status.adoption (empty when it has none yet).
func adoptionOf(ctx context.Context, configFlags *genericclioptions.ConfigFlags, crdName string) (*clients, *v1alpha1.HostedResource, *v1alpha1.AdoptionStatus, error) {
	c, err := newClients(configFlags)
	if err != nil {
		return nil, nil, nil, err
	}
	hr, err := adoptingHostedResourceOf(ctx, c, crdName)
	if err != nil {
		return nil, nil, nil, err
	}
	a := hr.Status.Adoption
	if a == nil {
		a = &v1alpha1.AdoptionStatus{}
	}
	return c, hr, a, nil
}

// adoptingHostedResourceOf finds the HostedResource that adopted crdName:
// the one of the same name (kubectl annex adopt names it so), or another
// whose spec.adoption names it.
func adoptingHostedResourceOf(ctx context.Context, c *clients, crdName string) (*v1alpha1.HostedResource, error) {
	hr, err := c.annex.AnnexV1alpha1().HostedResources().Get(ctx, crdName, metav1.GetOptions{})
	if err == nil && hr.Spec.Adoption != nil && hr.Spec.Adoption.CustomResourceDefinition == crdName {
		return hr, nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, c.annexError(ctx, err)
	}
	hrs, err := c.hostedResources(ctx)
	if err != nil {
		return nil, err
	}
	for i := range hrs {
		if a := hrs[i].Spec.Adoption; a != nil && a.CustomResourceDefinition == crdName {
			return &hrs[i], nil
		}
	}
	return nil, fmt.Errorf("no HostedResource adopts CustomResourceDefinition %s (kubectl annex status lists the adoptions)", crdName)
}

// countObjects counts the objects that annex serves of the type, and those
// created after the switch: the release creates them in the cluster, which
// gives them a new uid and creation time. An object is taken as created
// after the switch from its creationTimestamp, to the second.
func (o *ReleaseOptions) countObjects(ctx context.Context, c *clients, hr *v1alpha1.HostedResource) (objects, created int64, err error) {
	version := ""
	for _, v := range hr.Spec.Versions {
		if v.Storage {
			version = v.Name
		}
	}
	gvr := schema.GroupVersionResource{Group: hr.Spec.Group, Version: version, Resource: hr.Spec.Names.Plural}
	var switched time.Time
	if a := hr.Status.Adoption; a != nil && a.SwitchedTime != nil {
		switched = a.SwitchedTime.Truncate(time.Second)
	}
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := c.dynamic.Resource(gvr).List(ctx, opts)
		if err != nil {
			return 0, 0, fmt.Errorf("counting the objects of %s: %w", hr.Name, err)
		}
		for _, item := range list.Items {
			objects++
			if ts := item.GetCreationTimestamp(); !switched.IsZero() && !ts.Time.Before(switched) {
				created++
			}
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			return objects, created, nil
		}
	}
}

// follow shows the release's progress until it ends.
func (o *ReleaseOptions) follow(ctx context.Context, c *clients, name string) error {
	f := &follower{
		what:     "release",
		barPhase: v1alpha1.AdoptionRollingBack,
		barLabel: "writing back",
		failed:   func(a *v1alpha1.AdoptionStatus) bool { return a.Reason == reasonReleaseFailed },
		done: func(ctx context.Context, a *v1alpha1.AdoptionStatus) (bool, error) {
			switch {
			case a.Phase == v1alpha1.AdoptionReleased:
				return true, o.released(ctx, c, name, a)
			case a.Phase == v1alpha1.AdoptionAdopted && a.Reason == reasonReleaseFailed:
				return true, fmt.Errorf("the release of %s failed (%s): %s", name, a.Reason, a.Message)
			}
			return false, nil
		},
		out: o.ErrOut, progress: o.progress, timeout: o.timeout, interval: o.interval,
	}
	return f.follow(ctx, c, name)
}

// released reports a release that ended, then deletes the HostedResource:
// annex deletes its copies of the objects and forgets the type.
func (o *ReleaseOptions) released(ctx context.Context, c *clients, name string, a *v1alpha1.AdoptionStatus) error {
	printReleased(o.Out, name, a)
	hrs := c.annex.AnnexV1alpha1().HostedResources()
	if err := hrs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("the type is released, but deleting HostedResource %s failed: %w", name, c.annexError(ctx, err))
	}
	err := wait.PollUntilContextTimeout(ctx, o.interval, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := hrs.Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		fmt.Fprintf(o.ErrOut, "HostedResource %s is still being deleted (annex deletes its copies of the objects); kubectl annex status shows it\n", name)
		return nil
	}
	fmt.Fprintf(o.ErrOut, "HostedResource %s deleted: annex no longer holds the type.\n", name)
	return nil
}

// printReleased says what a release did, and names the objects that the
// cluster gave a new uid.
func printReleased(out io.Writer, name string, a *v1alpha1.AdoptionStatus) {
	freeze := "unknown"
	if a.Freeze != nil {
		freeze = a.Freeze.Duration.String()
	}
	took := ""
	if a.ReleaseStartTime != nil && a.ReleasedTime != nil {
		took = " in " + a.ReleasedTime.Sub(a.ReleaseStartTime.Time).Round(time.Second).String()
	}
	fmt.Fprintf(out, "customresourcedefinition/%s released%s: %d objects written back, writes refused for %s\n", name, took, a.Total, freeze)
	if a.Recreated == 0 {
		return
	}
	fmt.Fprintf(out, "%d objects were created in the cluster with a new uid and creation time (created while annex served the type, or deleted and created again):\n", a.Recreated)
	for _, obj := range a.RecreatedObjects {
		fmt.Fprintf(out, "  %s\n", obj)
	}
	if more := a.Recreated - int64(len(a.RecreatedObjects)); more > 0 {
		fmt.Fprintf(out, "  ... and %d more\n", more)
	}
}
