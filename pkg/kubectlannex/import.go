package kubectlannex

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/util/retry"
	"k8s.io/kubectl/pkg/util/templates"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// Values of --on-error.
const (
	onErrorContinue = "continue"
	onErrorStop     = "stop"
)

// defaultParallel is how many objects import creates at the same time.
const defaultParallel = 4

// maxProblems is how many unusable objects import lists before it gives up
// reading.
const maxProblems = 20

var (
	importLong = templates.LongDesc(`
		Create the objects of a file in the types that annex hosts: what kubectl annex
		export wrote, or any stream of YAML documents or JSON values, each an object or
		a List of objects.

		The file is read through once before anything is written. If a document cannot
		be parsed, or an object is not of a type annex hosts, has no name, or is in
		another namespace than --namespace names, nothing is created.

		Each object is then created as it is in the file. The server assigns a new
		uid, resourceVersion, creationTimestamp and generation; those in the file
		are ignored, as are managedFields, deletionTimestamp and
		deletionGracePeriodSeconds. Labels, annotations, finalizers, owner references
		and spec are kept. When the type has a status subresource, the object's status
		is written through it right after the create; if that fails, the object is
		deleted again, so that no object is left without its status.

		Objects are created --parallel at a time. An object that cannot be created (it
		exists already, the server refuses it) is reported with its reason. Import goes
		on with the next object, or, with --on-error=stop, creates one object at a time
		and stops at the first that fails. It exits non-zero when any object failed.

		Objects of a namespaced type without a namespace go to the current namespace;
		the namespaces must exist.`)

	importExample = templates.Examples(`
		# Import what kubectl annex export wrote
		kubectl annex import -f reports.yaml

		# Import from standard input, stopping at the first object that fails
		kubectl annex export policyreports -A | kubectl annex import -f - --on-error=stop`)
)

// ImportOptions are the options of `kubectl annex import`.
type ImportOptions struct {
	configFlags *genericclioptions.ConfigFlags
	filename    string
	onError     string
	parallel    int
	progress    string
	genericiooptions.IOStreams
}

// NewCmdImport returns `kubectl annex import`.
func NewCmdImport(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &ImportOptions{configFlags: configFlags, onError: onErrorContinue, parallel: defaultParallel, progress: progressAuto, IOStreams: streams}
	cmd := &cobra.Command{
		Use:                   "import -f FILENAME [options]",
		DisableFlagsInUseLine: true,
		Short:                 "Create the objects of a file in the hosted types",
		Long:                  importLong,
		Example:               importExample,
		Args:                  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.filename, "filename", "f", "", "File that holds the objects; - for standard input.")
	cmd.Flags().StringVar(&o.onError, "on-error", o.onError, "What to do when an object cannot be created: continue with the next one, or stop (which creates one object at a time).")
	cmd.Flags().IntVar(&o.parallel, "parallel", o.parallel, "Number of objects to create at the same time.")
	cmd.Flags().StringVar(&o.progress, "progress", o.progress, "Show progress on standard error: auto (when it is a terminal), always or never.")
	return cmd
}

// Validate checks the flags.
func (o *ImportOptions) Validate() error {
	if o.filename == "" {
		return fmt.Errorf("must specify -f FILENAME (- for standard input)")
	}
	if o.parallel < 1 {
		return fmt.Errorf("--parallel must be at least 1")
	}
	if o.onError != onErrorContinue && o.onError != onErrorStop {
		return fmt.Errorf("invalid --on-error %q: one of continue, stop", o.onError)
	}
	return validateProgress(o.progress)
}

// importObject is an object to create, with the type it belongs to.
type importObject struct {
	obj *unstructured.Unstructured
	pos position
	typ hostedType
}

// Run imports the file's objects.
func (o *ImportOptions) Run(ctx context.Context) error {
	c, err := newClients(o.configFlags)
	if err != nil {
		return err
	}
	hrs, err := c.hostedResources(ctx)
	if err != nil {
		return err
	}
	src, name, cleanup, err := o.source()
	if err != nil {
		return err
	}
	defer cleanup()

	// The first pass checks every object, so that a bad file writes
	// nothing, and counts them for the progress.
	var total int64
	var problems []string
	err = readObjects(src, func(obj *unstructured.Unstructured, pos position) error {
		total++
		if _, err := prepare(hrs, c, obj, pos); err != nil {
			problems = append(problems, err.Error())
			if len(problems) == maxProblems {
				return errors.New("too many problems")
			}
		}
		return nil
	})
	if err != nil && len(problems) < maxProblems {
		return fmt.Errorf("reading %s: %w; nothing was imported", name, err)
	}
	if len(problems) > 0 {
		more := ""
		if len(problems) == maxProblems {
			more = "\n  (and perhaps more; the first " + fmt.Sprint(maxProblems) + " are listed)"
		}
		return fmt.Errorf("%s holds objects that cannot be imported; nothing was imported:\n  %s%s", name, strings.Join(problems, "\n  "), more)
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}

	prog := newProgress(o.ErrOut, o.progress, "importing", total)
	created, failed, stopped, err := o.create(ctx, hrs, c, src, prog)
	took := prog.finish(err == nil && !stopped)
	if err != nil {
		return fmt.Errorf("importing %s: %w (%d of %d objects imported)", name, err, created, total)
	}
	fmt.Fprintf(o.ErrOut, "imported %d of %d objects from %s in %s%s\n", created, total, name, took.Round(time.Millisecond), rate(created+failed, took))
	switch {
	case stopped:
		return fmt.Errorf("stopped at the first object that failed (--on-error=stop); %d objects were not tried", total-created-failed)
	case failed > 0:
		return fmt.Errorf("%d of %d objects were not imported", failed, total)
	}
	return nil
}

// create creates the objects of src, checked already, with --parallel
// workers; with --on-error=stop, one at a time in the file's order, so
// that nothing after the first failure is written.
func (o *ImportOptions) create(ctx context.Context, hrs []v1alpha1.HostedResource, c *clients, src io.Reader, prog *progress) (created, failed int64, stopped bool, err error) {
	workers := o.parallel
	if o.onError == onErrorStop {
		workers = 1
	}
	var mu sync.Mutex // guards the counts, stopped and prog
	stop := make(chan struct{})
	done := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		prog.add(1)
		if err == nil {
			created++
			return
		}
		failed++
		prog.printf("error: %v\n", err)
		if o.onError == onErrorStop && !stopped {
			stopped = true
			close(stop)
		}
	}

	items := make(chan importObject)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for item := range items {
				done(createObject(ctx, c, item))
			}
		}()
	}
	err = readObjects(src, func(obj *unstructured.Unstructured, pos position) error {
		item, err := prepare(hrs, c, obj, pos)
		if err != nil {
			// The first pass checked it; the file changed since.
			return err
		}
		select {
		case <-stop:
			return errStop
		default:
		}
		select {
		case items <- item:
			return nil
		case <-stop:
			return errStop
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(items)
	wg.Wait()
	if errors.Is(err, errStop) {
		err = nil
	}
	if err == nil {
		err = ctx.Err()
	}
	return created, failed, stopped, err
}

var errStop = errors.New("stopped")

// source opens the file to import; standard input is copied to a
// temporary file first, because import reads its input twice.
func (o *ImportOptions) source() (src io.ReadSeeker, name string, cleanup func(), err error) {
	if o.filename != "-" {
		f, err := os.Open(o.filename)
		if err != nil {
			return nil, "", nil, err
		}
		return f, o.filename, func() { _ = f.Close() }, nil
	}
	f, err := os.CreateTemp("", "kubectl-annex-import-")
	if err != nil {
		return nil, "", nil, err
	}
	cleanup = func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}
	if _, err := io.Copy(f, o.In); err != nil {
		cleanup()
		return nil, "", nil, fmt.Errorf("reading standard input: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return f, "standard input", cleanup, nil
}

// prepare checks an object of the file and makes it ready to create: the
// server's fields dropped, the namespace set.
func prepare(hrs []v1alpha1.HostedResource, c *clients, obj *unstructured.Unstructured, pos position) (importObject, error) {
	gvk := obj.GroupVersionKind()
	if gvk.Kind == "" || obj.GetAPIVersion() == "" {
		return importObject{}, fmt.Errorf("%s: the object has no apiVersion or kind", pos)
	}
	t, err := typeOf(hrs, gvk)
	if err != nil {
		return importObject{}, fmt.Errorf("%s (%s %q): %w", pos, gvk.Kind, obj.GetName(), err)
	}
	if obj.GetName() == "" && obj.GetGenerateName() == "" {
		return importObject{}, fmt.Errorf("%s (%s): the object has no metadata.name", pos, gvk.Kind)
	}
	if t.namespaced() {
		switch ns := obj.GetNamespace(); {
		case ns == "":
			obj.SetNamespace(c.namespace)
		case c.explicitNamespace && ns != c.namespace:
			return importObject{}, fmt.Errorf("%s (%s): the namespace of the object %q does not match the namespace %q; pass --namespace=%s or leave --namespace out",
				pos, describe(t, obj), ns, c.namespace, ns)
		}
	} else {
		obj.SetNamespace("")
	}
	clearServerFields(obj)
	return importObject{obj: obj, pos: pos, typ: t}, nil
}

// describe names an object as kubectl does: kind.group/name, with its
// namespace.
func describe(t hostedType, obj *unstructured.Unstructured) string {
	name := strings.ToLower(t.hr.Spec.Names.Kind) + "." + t.hr.Spec.Group + "/" + obj.GetName()
	if obj.GetName() == "" {
		name += obj.GetGenerateName() + "*"
	}
	if ns := obj.GetNamespace(); ns != "" {
		name += " in namespace " + ns
	}
	return name
}

// createObject creates one object and, when its type has a status
// subresource, writes its status. If the status cannot be written, the
// object is deleted again: an object is imported whole or not at all.
func createObject(ctx context.Context, c *clients, item importObject) error {
	obj := item.obj
	what := describe(item.typ, obj)
	v := obj.GroupVersionKind().Version
	res := c.dynamic.Resource(item.typ.GroupVersionResource(v)).Namespace(obj.GetNamespace())
	status, hasStatus := obj.Object["status"]
	created, err := res.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("%s (%s): %w", what, item.pos, err)
	}
	if !item.typ.hasStatus(v) || !hasStatus {
		return nil
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		created.Object["status"] = status
		_, err := res.UpdateStatus(ctx, created, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			// Something changed the object since; write the status onto
			// what it is now.
			if latest, getErr := res.Get(ctx, created.GetName(), metav1.GetOptions{}); getErr == nil {
				created = latest
			}
		}
		return err
	})
	if err == nil {
		return nil
	}
	// Delete it even when ctx has ended (an interrupt): the object must
	// not stay without its status.
	delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	uid := created.GetUID()
	var delErr error
	if len(created.GetFinalizers()) > 0 {
		// Its finalizers would hold the deletion forever: no controller
		// has had a reason to act on an object created a moment ago.
		_, delErr = res.Patch(delCtx, created.GetName(), types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	}
	if delErr == nil {
		delErr = res.Delete(delCtx, created.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	}
	if delErr != nil && !apierrors.IsNotFound(delErr) {
		return fmt.Errorf("%s (%s): created, but its status could not be written (%w), and deleting it again failed: %v; delete it by hand", what, item.pos, err, delErr)
	}
	return fmt.Errorf("%s (%s): its status could not be written, so it was deleted again: %w", what, item.pos, err)
}
