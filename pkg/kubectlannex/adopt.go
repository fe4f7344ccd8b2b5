package kubectlannex

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/util/templates"
	"k8s.io/kubectl/pkg/util/term"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

var crdsResource = apiextensionsv1.SchemeGroupVersion.WithResource("customresourcedefinitions")

var (
	adoptLong = templates.LongDesc(`
		Move a CustomResourceDefinition of the cluster, with its objects, into annex.

		annex copies every object as the cluster holds it (uid, creation time,
		generation, labels, annotations, finalizers, owner references, managed
		fields and status), then copies what changed meanwhile until little does.
		For a few seconds it has the cluster refuse writes to the type (a
		ValidatingAdmissionPolicy answers them with a message asking to retry),
		copies the last changes, points the type's APIServices at annex and sets
		the CRD's versions served: false. Clients, RBAC and the cluster's admission
		keep working unchanged.

		The objects stay in the cluster's etcd, as they were when annex took the type
		over. The command creates a HostedResource with the CRD's spec and
		spec.adoption, and follows it until the adoption ends: it exits 0 once annex
		serves the type, and non-zero with the reason if the adoption fails.
		Interrupting the command does not stop the adoption: run it again to follow
		it, or watch kubectl annex status.

		The cluster routes requests by API group, so annex adopts every CRD of a
		group together: adopt each of them; the adoption waits until all are named,
		then switches them at once.`)

	adoptExample = templates.Examples(`
		# Show what adopting the CRD would do, and the HostedResource it would create
		kubectl annex adopt policyreports.wgpolicyk8s.io --dry-run -o yaml

		# Adopt it into the StorageBackend named pg, without asking
		kubectl annex adopt policyreports.wgpolicyk8s.io --backend pg --yes`)
)

// AdoptOptions are the options of `kubectl annex adopt`.
type AdoptOptions struct {
	configFlags *genericclioptions.ConfigFlags
	printFlags  *genericclioptions.JSONYamlPrintFlags
	output      string
	backend     string
	cache       string
	dryRun      bool
	yes         bool
	progress    string
	timeout     time.Duration
	// interval is how often the adoption's progress is read.
	interval time.Duration
	genericiooptions.IOStreams
}

// NewCmdAdopt returns `kubectl annex adopt`.
func NewCmdAdopt(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &AdoptOptions{configFlags: configFlags, printFlags: genericclioptions.NewJSONYamlPrintFlags(),
		progress: progressAuto, timeout: time.Hour, interval: 500 * time.Millisecond, IOStreams: streams}
	cmd := &cobra.Command{
		Use:                   "adopt CRD_NAME [--backend NAME] [--dry-run] [--yes] [options]",
		DisableFlagsInUseLine: true,
		Short:                 "Move a CustomResourceDefinition of the cluster, with its objects, into annex",
		Long:                  adoptLong,
		Example:               adoptExample,
		Args:                  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context(), args[0])
		},
	}
	cmd.Flags().StringVar(&o.backend, "backend", "", "StorageBackend that will hold the objects (default: annex's command-line store).")
	cmd.Flags().StringVar(&o.cache, "cache", "", "What annex keeps in memory of the objects: Lean (the default), WatchCache or None.")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "Only show what would happen: the object count, the estimated time, and (with -o) the HostedResource, checked by the server.")
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "With --dry-run, print the HostedResource. One of: (yaml, json).")
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "Do not ask for confirmation.")
	cmd.Flags().StringVar(&o.progress, "progress", o.progress, "Show a progress bar on standard error: auto (when it is a terminal), always or never.")
	cmd.Flags().DurationVar(&o.timeout, "timeout", o.timeout, "How long to follow the adoption before giving up (the adoption goes on).")
	return cmd
}

// Validate checks the flags.
func (o *AdoptOptions) Validate() error {
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
	switch v1alpha1.StorageCache(o.cache) {
	case "", v1alpha1.StorageCacheLean, v1alpha1.StorageCacheWatchCache, v1alpha1.StorageCacheNone:
	default:
		return fmt.Errorf("invalid --cache %q: one of Lean, WatchCache, None", o.cache)
	}
	return nil
}

// copyRate is the rate of the copy measured on annex's reference machine
// (docs/benchmarks.md, "Adoption"), for --dry-run's estimate.
const copyRate = 300

// Run adopts the CRD crdName, or follows an adoption of it already under way.
func (o *AdoptOptions) Run(ctx context.Context, crdName string) error {
	c, err := newClients(o.configFlags)
	if err != nil {
		return err
	}
	hrs := c.annex.AnnexV1alpha1().HostedResources()
	existing, err := hrs.Get(ctx, crdName, metav1.GetOptions{})
	switch {
	case err == nil && existing.Spec.Adoption != nil:
		if err := givenBack(existing.Name, existing.Status.Adoption); err != nil {
			return err
		}
		if o.dryRun {
			fmt.Fprintf(o.Out, "HostedResource %s already adopts CustomResourceDefinition %s: %s\n", crdName, crdName, adoptionCell(existing.Status.Adoption))
			return nil
		}
		fmt.Fprintf(o.ErrOut, "Following the adoption of %s under way.\n", crdName)
		return o.follow(ctx, c, crdName)
	case err == nil:
		return fmt.Errorf("annex already hosts a type named %s, which adopts no CRD", crdName)
	case !apierrors.IsNotFound(err):
		return c.annexError(ctx, err)
	}

	crd, err := readCRD(ctx, c, crdName)
	if err != nil {
		return err
	}
	hr, err := adoptingHostedResource(crd, o.backend, v1alpha1.StorageCache(o.cache))
	if err != nil {
		return err
	}
	count, err := countObjectsOf(ctx, c, crd)
	if err != nil {
		return err
	}
	estimate := (time.Duration(count) * time.Second / copyRate).Round(time.Second)
	summary := fmt.Sprintf("adopt CustomResourceDefinition %s (%d objects) into annex, on backend %s; about %s to copy at %d objects/s, then writes to the type are refused for a few seconds",
		crdName, count, orDefault(o.backend), max(estimate, time.Second), copyRate)

	if o.dryRun {
		created, err := hrs.Create(ctx, hr, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return fmt.Errorf("annex would refuse the adoption: %w", c.annexError(ctx, err))
		}
		if o.output != "" {
			created.SetGroupVersionKind(v1alpha1.SchemeGroupVersion.WithKind("HostedResource"))
			printer, err := o.printFlags.ToPrinter(o.output)
			if err != nil {
				return err
			}
			fmt.Fprintf(o.ErrOut, "Would %s.\n", summary)
			return printer.PrintObj(created, o.Out)
		}
		fmt.Fprintf(o.Out, "Would %s.\n", summary)
		return nil
	}
	if err := askToContinue(o.In, o.ErrOut, o.yes, summary, "not adopted"); err != nil {
		return err
	}
	if _, err := hrs.Create(ctx, hr, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("starting the adoption: %w", c.annexError(ctx, err))
	}
	return o.follow(ctx, c, crdName)
}

// givenBack is an error when the type of HostedResource name is being
// released or was released: there is no adoption left to follow.
func givenBack(name string, a *v1alpha1.AdoptionStatus) error {
	switch {
	case a == nil:
		return nil
	case a.Phase == v1alpha1.AdoptionRollingBack:
		return fmt.Errorf("CustomResourceDefinition %s is being given back to the cluster: `kubectl annex release %s` follows the release", name, name)
	case a.Phase == v1alpha1.AdoptionReleased:
		return fmt.Errorf("CustomResourceDefinition %s was given back to the cluster: `kubectl annex release %s` deletes HostedResource %s, and the CRD can then be adopted again", name, name, name)
	}
	return nil
}

func orDefault(backend string) string {
	if backend == "" {
		return "default"
	}
	return backend
}

// readCRD reads the cluster's CRD name.
func readCRD(ctx context.Context, c *clients, name string) (*apiextensionsv1.CustomResourceDefinition, error) {
	u, err := c.dynamic.Resource(crdsResource).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("the cluster has no CustomResourceDefinition %s (kubectl get crds lists them)", name)
	}
	if err != nil {
		return nil, err
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, crd); err != nil {
		return nil, fmt.Errorf("reading CustomResourceDefinition %s: %w", name, err)
	}
	if ann := crd.Annotations[v1alpha1.AdoptedByAnnotation]; ann != "" {
		return nil, fmt.Errorf("CustomResourceDefinition %s is already adopted, by annex install %s", name, ann)
	}
	return crd, nil
}

// adoptingHostedResource is the HostedResource that adopts crd: its spec, on
// backend, with cache.
func adoptingHostedResource(crd *apiextensionsv1.CustomResourceDefinition, backend string, cache v1alpha1.StorageCache) (*v1alpha1.HostedResource, error) {
	if crd.Spec.PreserveUnknownFields {
		return nil, fmt.Errorf("CustomResourceDefinition %s has spec.preserveUnknownFields: true, which annex does not serve; "+
			"set it to false (with x-kubernetes-preserve-unknown-fields in the schema where needed) first", crd.Name)
	}
	return &v1alpha1.HostedResource{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "HostedResource"},
		ObjectMeta: metav1.ObjectMeta{Name: crd.Name},
		Spec: v1alpha1.HostedResourceSpec{
			Group:      crd.Spec.Group,
			Names:      crd.Spec.Names,
			Scope:      crd.Spec.Scope,
			Versions:   crd.Spec.Versions,
			Conversion: crd.Spec.Conversion,
			Storage:    v1alpha1.HostedResourceStorage{Backend: backend, Cache: cache},
			Adoption:   &v1alpha1.Adoption{CustomResourceDefinition: crd.Name},
		},
	}, nil
}

// countObjectsOf counts the CRD's objects in the cluster, from the
// remaining count of a list of one.
func countObjectsOf(ctx context.Context, c *clients, crd *apiextensionsv1.CustomResourceDefinition) (int64, error) {
	version := ""
	for _, v := range crd.Spec.Versions {
		if v.Served && (version == "" || v.Storage) {
			version = v.Name
		}
	}
	if version == "" {
		return 0, fmt.Errorf("CustomResourceDefinition %s serves no version", crd.Name)
	}
	gvr := schema.GroupVersionResource{Group: crd.Spec.Group, Version: version, Resource: crd.Spec.Names.Plural}
	list, err := c.dynamic.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return 0, fmt.Errorf("counting the objects of %s: %w", crd.Name, err)
	}
	n := int64(len(list.Items))
	if rest := list.GetRemainingItemCount(); rest != nil {
		n += *rest
	}
	return n, nil
}

// askToContinue asks whether to do what summary says, unless yes (--yes)
// was given, and returns an error saying what was not done, refused, when
// the answer is no.
func askToContinue(in io.Reader, out io.Writer, yes bool, summary, refused string) error {
	if yes {
		return nil
	}
	ok, err := confirm(in, out, "This will "+summary+". Continue?")
	if err != nil {
		return err
	}
	if !ok {
		return errors.New(refused)
	}
	return nil
}

// confirm asks question on out and reads the answer from in, which must be
// a terminal: a script says --yes.
func confirm(in io.Reader, out io.Writer, question string) (bool, error) {
	if !(term.TTY{In: in}).IsTerminalIn() {
		return false, errors.New("standard input is not a terminal: pass --yes to adopt without confirming")
	}
	fmt.Fprintf(out, "%s [y/N]: ", question)
	answer, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	answer = strings.ToLower(strings.TrimSpace(answer))
	return answer == "y" || answer == "yes", nil
}

// follow shows the adoption's progress until it ends.
func (o *AdoptOptions) follow(ctx context.Context, c *clients, name string) error {
	f := &follower{
		what:           "adoption",
		barPhase:       v1alpha1.AdoptionCopying,
		barLabel:       "copying",
		showFirstPhase: true,
		failed:         func(a *v1alpha1.AdoptionStatus) bool { return a.Phase == v1alpha1.AdoptionFailed },
		done: func(_ context.Context, a *v1alpha1.AdoptionStatus) (bool, error) {
			switch a.Phase {
			case v1alpha1.AdoptionAdopted:
				freeze := "unknown"
				if a.Freeze != nil {
					freeze = a.Freeze.Duration.String()
				}
				took := ""
				if a.StartTime != nil && a.AdoptedTime != nil {
					took = " in " + a.AdoptedTime.Sub(a.StartTime.Time).Round(time.Second).String()
				}
				fmt.Fprintf(o.Out, "customresourcedefinition/%s adopted%s: %d objects copied, writes refused for %s\n", name, took, a.Copied, freeze)
				return true, nil
			case v1alpha1.AdoptionFailed:
				return true, fmt.Errorf("the adoption of %s failed (%s): %s", name, a.Reason, a.Message)
			}
			if err := givenBack(name, a); err != nil {
				return true, err
			}
			return false, nil
		},
		out: o.ErrOut, progress: o.progress, timeout: o.timeout, interval: o.interval,
	}
	return f.follow(ctx, c, name)
}
