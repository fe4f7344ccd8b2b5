package kubectlannex

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/util/templates"
)

// defaultChunkSize is the page size of export's list, kubectl's own.
const defaultChunkSize = 500

var (
	exportLong = templates.LongDesc(`
		Export the objects of a type that annex hosts, for a backup or to move them to
		another backend.

		TYPE is the type's resource name, singular name, kind or short name, or
		resource.group when several types share a name. The objects are read in pages
		(--chunk-size) of one consistent list, in the type's storage version, and
		written as they arrive: a stream of YAML documents (the default) or, with
		-o json, a List, to standard output or to the file --filename names. Progress
		goes to standard error.

		The fields the server assigns when it creates an object (uid,
		resourceVersion, creationTimestamp, generation, managedFields) are left
		out, so that the output can be created again, with kubectl annex import or
		with kubectl create -f. Everything else is kept: labels, annotations,
		finalizers, owner references, spec and status.`)

	exportExample = templates.Examples(`
		# Export the policy reports of the current namespace as YAML to standard output
		kubectl annex export policyreports

		# Export the policy reports of every namespace to a file
		kubectl annex export policyreports.reports.example.com -A -f reports.yaml

		# Export the reports labelled team=web as a JSON List
		kubectl annex export policyreports -A -l team=web -o json > reports.json`)
)

// ExportOptions are the options of `kubectl annex export`.
type ExportOptions struct {
	configFlags   *genericclioptions.ConfigFlags
	output        string
	filename      string
	allNamespaces bool
	selector      string
	chunkSize     int64
	progress      string
	genericiooptions.IOStreams
}

// NewCmdExport returns `kubectl annex export`.
func NewCmdExport(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &ExportOptions{configFlags: configFlags, output: "yaml", chunkSize: defaultChunkSize, progress: progressAuto, IOStreams: streams}
	cmd := &cobra.Command{
		Use:                   "export TYPE [-f FILENAME] [options]",
		DisableFlagsInUseLine: true,
		Short:                 "Export the objects of a hosted type as YAML or JSON",
		Long:                  exportLong,
		Example:               exportExample,
		Args:                  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context(), args[0])
		},
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", o.output, "Output format. One of: (yaml, json).")
	cmd.Flags().StringVarP(&o.filename, "filename", "f", "", "File to write the objects to; standard output when empty or -. The file appears only once the export is complete.")
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "If present, export the objects of every namespace. Namespace in current context is ignored even if specified with --namespace.")
	cmd.Flags().StringVarP(&o.selector, "selector", "l", "", "Selector (label query) to filter on, supports '=', '==', '!=', 'in', 'notin'.(e.g. -l key1=value1,key2=value2). Matching objects must satisfy all of the specified label constraints.")
	cmd.Flags().Int64Var(&o.chunkSize, "chunk-size", o.chunkSize, "Return large lists in chunks rather than all at once.")
	cmd.Flags().StringVar(&o.progress, "progress", o.progress, "Show progress on standard error: auto (when it is a terminal), always or never.")
	return cmd
}

// Validate checks the flags.
func (o *ExportOptions) Validate() error {
	if o.output != "yaml" && o.output != "json" {
		return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json,yaml", o.output)
	}
	if o.chunkSize <= 0 {
		return fmt.Errorf("--chunk-size must be greater than 0")
	}
	return validateProgress(o.progress)
}

// Run exports the objects of the type arg names.
func (o *ExportOptions) Run(ctx context.Context, arg string) (retErr error) {
	c, err := newClients(o.configFlags)
	if err != nil {
		return err
	}
	hrs, err := c.hostedResources(ctx)
	if err != nil {
		return err
	}
	t, err := findType(hrs, arg)
	if err != nil {
		return err
	}
	v := t.exportVersion()
	if v == "" {
		return fmt.Errorf("%s serves no version", t.Name())
	}
	namespace, where := "", ""
	if t.namespaced() && !o.allNamespaces {
		namespace, where = c.namespace, fmt.Sprintf(" in namespace %s", c.namespace)
	}

	out, dest, commit, err := o.open()
	if err != nil {
		return err
	}
	defer func() {
		if err := commit(retErr == nil); err != nil && retErr == nil {
			retErr = err
		}
	}()
	buffered := bufio.NewWriter(out)
	writer := newObjectWriter(o.output, buffered)

	res := c.dynamic.Resource(t.GroupVersionResource(v)).Namespace(namespace)
	opts := metav1.ListOptions{Limit: o.chunkSize, LabelSelector: o.selector}
	var prog *progress
	defer func() {
		if retErr != nil && prog != nil {
			prog.finish(false)
		}
	}()
	for {
		list, err := res.List(ctx, opts)
		if err != nil {
			if apierrors.IsResourceExpired(err) {
				return fmt.Errorf("exporting %s: the store compacted the revision the export reads, before the last page was read (%w); export again", t.Name(), err)
			}
			return fmt.Errorf("exporting %s: %w", t.Name(), err)
		}
		if prog == nil {
			total := int64(-1)
			if list.GetContinue() == "" {
				total = int64(len(list.Items))
			} else if remaining := list.GetRemainingItemCount(); remaining != nil {
				total = int64(len(list.Items)) + *remaining
			}
			prog = newProgress(o.ErrOut, o.progress, "exporting "+t.Name(), total)
		}
		for i := range list.Items {
			obj := &list.Items[i]
			clearServerFields(obj)
			if err := writer.write(obj); err != nil {
				return fmt.Errorf("writing to %s: %w", dest, err)
			}
			prog.add(1)
		}
		if list.GetContinue() == "" {
			break
		}
		opts.Continue = list.GetContinue()
	}
	if err := writer.close(); err != nil {
		return fmt.Errorf("writing to %s: %w", dest, err)
	}
	if err := buffered.Flush(); err != nil {
		return fmt.Errorf("writing to %s: %w", dest, err)
	}
	took := prog.finish(true)
	fmt.Fprintf(o.ErrOut, "exported %d objects of %s%s (version %s) to %s in %s%s\n",
		prog.done, t.Name(), where, v, dest, took.Round(1e6), rate(prog.done, took))
	return nil
}

// open returns where the objects go and a function that finishes it: a
// file is written under a temporary name beside it and renamed at the end,
// so that a failed export leaves no partial file behind.
func (o *ExportOptions) open() (w io.Writer, dest string, commit func(ok bool) error, err error) {
	if o.filename == "" || o.filename == "-" {
		return o.Out, "standard output", func(bool) error { return nil }, nil
	}
	dir, base := filepath.Split(o.filename)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-")
	if err != nil {
		return nil, "", nil, err
	}
	commit = func(ok bool) error {
		closeErr := tmp.Close()
		if !ok || closeErr != nil {
			_ = os.Remove(tmp.Name())
			return closeErr
		}
		return os.Rename(tmp.Name(), o.filename)
	}
	return tmp, o.filename, commit, nil
}
