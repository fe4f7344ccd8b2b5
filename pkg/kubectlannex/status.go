package kubectlannex

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	"k8s.io/kubectl/pkg/util/templates"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

// ReportAPIVersion and ReportKind name the document that
// `kubectl annex status -o json|yaml` prints. It is the plugin's output,
// not an API that annex serves.
const (
	ReportAPIVersion = "kubectl.annex.dev/v1alpha1"
	ReportKind       = "StatusReport"
)

// StatusReport is what `kubectl annex status -o json|yaml` prints.
type StatusReport struct {
	metav1.TypeMeta `json:",inline"`
	// Items has one entry per hosted type, by name.
	Items []TypeStatus `json:"items"`
}

// TypeStatus is the state of one hosted type.
type TypeStatus struct {
	// Name is the HostedResource's, resource.group.
	Name     string `json:"name"`
	Group    string `json:"group"`
	Resource string `json:"resource"`
	Kind     string `json:"kind"`
	Scope    string `json:"scope"`
	// Versions are the served versions, preferred first.
	Versions       []string `json:"versions"`
	StorageVersion string   `json:"storageVersion,omitempty"`
	// Established is the HostedResource's Established condition.
	Established metav1.Condition `json:"established"`
	Backend     BackendStatus    `json:"backend"`
	// ObjectCount is the number of objects, counted when the command ran;
	// ObjectCountError says why it is missing.
	ObjectCount      *int64 `json:"objectCount,omitempty"`
	ObjectCountError string `json:"objectCountError,omitempty"`
	// EstimatedSizeBytes is annex's estimate of the objects' size in the
	// store (the HostedResource's status.estimatedSizeBytes).
	EstimatedSizeBytes *int64 `json:"estimatedSizeBytes,omitempty"`
	// APIServices are the cluster's APIServices of the served versions;
	// none when annex runs standalone, without a cluster.
	APIServices []APIServiceStatus `json:"apiServices,omitempty"`
	// Adoption is the progress of the adoption of the cluster's CRD of the
	// same name, for a type that adopts one.
	Adoption          *v1alpha1.AdoptionStatus `json:"adoption,omitempty"`
	CreationTimestamp metav1.Time              `json:"creationTimestamp"`
}

// BackendStatus is the StorageBackend that holds a type's objects.
type BackendStatus struct {
	Name string `json:"name"`
	// Type is Embedded, Etcd or Postgres; empty for "default", annex's
	// command-line store.
	Type string `json:"type,omitempty"`
	// Ready is the StorageBackend's Ready condition; for "default", the
	// HostedResource's StorageBackendReady condition.
	Ready metav1.Condition `json:"ready"`
	// SizeBytes is the size of the store's database.
	SizeBytes *int64 `json:"sizeBytes,omitempty"`
}

// APIServiceStatus is one APIService of a hosted type.
type APIServiceStatus struct {
	Name      string           `json:"name"`
	Available metav1.Condition `json:"available"`
}

var (
	statusLong = templates.LongDesc(`
		Show the types that annex hosts: for each, the storage backend that holds its
		objects and whether that backend is ready, how many objects it has, about how
		much room they take in the store, and whether the cluster's APIServices send
		its requests to annex.

		The object count is read when the command runs (a list of one object, whose
		remaining count the server reports). The size is annex's estimate from the
		objects it last read, refreshed about every minute.`)

	statusExample = templates.Examples(`
		# List the hosted types with their backend, object count and size
		kubectl annex status

		# Add the group, resource, versions and the backend's type and size
		kubectl annex status -o wide

		# Print a structured document for scripts
		kubectl annex status -o yaml

		# Print the object count of each type as JSON
		kubectl annex status -o json`)
)

// StatusOptions are the options of `kubectl annex status`.
type StatusOptions struct {
	configFlags *genericclioptions.ConfigFlags
	printFlags  *genericclioptions.JSONYamlPrintFlags
	output      string
	noHeaders   bool
	// now is the time ages are measured from.
	now func() time.Time
	genericiooptions.IOStreams
}

// NewCmdStatus returns `kubectl annex status`.
func NewCmdStatus(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &StatusOptions{
		configFlags: configFlags,
		printFlags:  genericclioptions.NewJSONYamlPrintFlags(),
		now:         time.Now,
		IOStreams:   streams,
	}
	cmd := &cobra.Command{
		Use:                   "status [options]",
		DisableFlagsInUseLine: true,
		Short:                 "Show the hosted types, their backends, object counts and APIServices",
		Long:                  statusLong,
		Example:               statusExample,
		Args:                  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "Output format. One of: (json, yaml, wide).")
	cmd.Flags().BoolVar(&o.noHeaders, "no-headers", false, "When using the default or wide output format, don't print headers.")
	return cmd
}

// Validate checks the output format.
func (o *StatusOptions) Validate() error {
	switch o.output {
	case "", "wide", "json", "yaml":
		return nil
	}
	return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json,wide,yaml", o.output)
}

// Run reads the state of every hosted type and prints it.
func (o *StatusOptions) Run(ctx context.Context) error {
	c, err := newClients(o.configFlags)
	if err != nil {
		return err
	}
	report, warnings, err := readStatus(ctx, c)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintf(o.ErrOut, "Warning: %s\n", w)
	}
	return o.print(report)
}

func (o *StatusOptions) print(report *StatusReport) error {
	switch o.output {
	case "json", "yaml":
		printer, err := o.printFlags.ToPrinter(o.output)
		if err != nil {
			return err
		}
		obj, err := report.unstructured()
		if err != nil {
			return err
		}
		return printer.PrintObj(obj, o.Out)
	}
	if len(report.Items) == 0 {
		fmt.Fprintln(o.ErrOut, "annex hosts no types yet: declare one with a HostedResource (kubectl explain hostedresources)")
		return nil
	}
	printer := printers.NewTablePrinter(printers.PrintOptions{Wide: o.output == "wide", NoHeaders: o.noHeaders})
	return printer.PrintObj(report.table(o.now()), o.Out)
}

// readStatus gathers the report: the HostedResources, the StorageBackends,
// the APIServices and a count of each type's objects. Trouble with one type
// (a count that fails) is a warning and a gap in its row, not an error.
func readStatus(ctx context.Context, c *clients) (*StatusReport, []string, error) {
	hrs, err := c.hostedResources(ctx)
	if err != nil {
		return nil, nil, err
	}
	backends, err := c.annex.AnnexV1alpha1().StorageBackends().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, c.annexError(ctx, err)
	}
	// Standalone annex serves no apiregistration.k8s.io: there are no
	// APIServices to show.
	var apiServices []apiregistrationv1.APIService
	if list, err := c.aggregator.ApiregistrationV1().APIServices().List(ctx, metav1.ListOptions{}); err == nil {
		apiServices = list.Items
	} else if !apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("listing the cluster's APIServices: %w", err)
	}
	report := buildReport(hrs, backends.Items, apiServices)
	types := map[string]hostedType{}
	for i := range hrs {
		types[hrs[i].Name] = hostedType{hr: &hrs[i]}
	}
	var warnings []string
	for i := range report.Items {
		item := &report.Items[i]
		count, err := countObjects(ctx, c, types[item.Name])
		if err != nil {
			item.ObjectCountError = err.Error()
			warnings = append(warnings, fmt.Sprintf("counting the objects of %s: %v", item.Name, err))
			continue
		}
		item.ObjectCount = &count
	}
	return report, warnings, nil
}

// countObjects counts a type's objects in every namespace with a list of
// one object: the server reports how many remain after it.
func countObjects(ctx context.Context, c *clients, t hostedType) (int64, error) {
	v := t.exportVersion()
	if v == "" {
		return 0, fmt.Errorf("no version is served")
	}
	list, err := c.dynamic.Resource(t.GroupVersionResource(v)).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return 0, err
	}
	count := int64(len(list.Items))
	if list.GetContinue() != "" {
		remaining := list.GetRemainingItemCount()
		if remaining == nil {
			return 0, fmt.Errorf("the server did not report how many objects remain")
		}
		count += *remaining
	}
	return count, nil
}

// buildReport puts together what the cluster says of each type, without
// the counts.
func buildReport(hrs []v1alpha1.HostedResource, backends []v1alpha1.StorageBackend, apiServices []apiregistrationv1.APIService) *StatusReport {
	report := &StatusReport{
		TypeMeta: metav1.TypeMeta{APIVersion: ReportAPIVersion, Kind: ReportKind},
		Items:    []TypeStatus{},
	}
	byName := map[string]*v1alpha1.StorageBackend{}
	for i := range backends {
		byName[backends[i].Name] = &backends[i]
	}
	svcs := map[string]*apiregistrationv1.APIService{}
	for i := range apiServices {
		svcs[apiServices[i].Name] = &apiServices[i]
	}
	for i := range hrs {
		hr := &hrs[i]
		t := hostedType{hr: hr}
		item := TypeStatus{
			Name:               hr.Name,
			Group:              hr.Spec.Group,
			Resource:           hr.Spec.Names.Plural,
			Kind:               hr.Spec.Names.Kind,
			Scope:              string(hr.Spec.Scope),
			Versions:           t.servedVersions(),
			Established:        conditionOrUnknown(hr.Status.Conditions, v1alpha1.HostedResourceEstablished),
			EstimatedSizeBytes: hr.Status.EstimatedSizeBytes,
			CreationTimestamp:  hr.CreationTimestamp,
		}
		if hr.Spec.Adoption != nil {
			item.Adoption = hr.Status.Adoption
			if item.Adoption == nil {
				item.Adoption = &v1alpha1.AdoptionStatus{Reason: "Pending"}
			}
		}
		for _, v := range hr.Spec.Versions {
			if v.Storage {
				item.StorageVersion = v.Name
			}
		}
		item.Backend = backendStatus(hr, byName)
		if len(svcs) > 0 {
			for _, v := range item.Versions {
				name := v + "." + hr.Spec.Group
				s := APIServiceStatus{Name: name}
				if svc, ok := svcs[name]; ok {
					s.Available = availableCondition(svc)
				} else {
					s.Available = metav1.Condition{Type: string(apiregistrationv1.Available), Status: metav1.ConditionFalse, Reason: "NotFound",
						Message: fmt.Sprintf("the cluster has no APIService %s", name)}
				}
				item.APIServices = append(item.APIServices, s)
			}
		}
		report.Items = append(report.Items, item)
	}
	slices.SortFunc(report.Items, func(a, b TypeStatus) int { return strings.Compare(a.Name, b.Name) })
	return report
}

// backendStatus is the backend a HostedResource names and its health.
func backendStatus(hr *v1alpha1.HostedResource, backends map[string]*v1alpha1.StorageBackend) BackendStatus {
	name := hr.Spec.Storage.Backend
	if name == "" {
		name = "default"
	}
	b := BackendStatus{Name: name}
	sb, ok := backends[name]
	if !ok {
		// "default" is annex's command-line store, which has no
		// StorageBackend; the HostedResource says how it is, as it does
		// for a backend that does not exist.
		b.Ready = conditionOrUnknown(hr.Status.Conditions, v1alpha1.HostedResourceStorageBackendReady)
		return b
	}
	b.Type = string(sb.Spec.Type)
	b.Ready = conditionOrUnknown(sb.Status.Conditions, v1alpha1.StorageBackendReady)
	b.SizeBytes = sb.Status.SizeBytes
	return b
}

func conditionOrUnknown(conditions []metav1.Condition, conditionType string) metav1.Condition {
	if c := meta.FindStatusCondition(conditions, conditionType); c != nil {
		return *c
	}
	return metav1.Condition{Type: conditionType, Status: metav1.ConditionUnknown}
}

// unstructured is the report as an object the printers take.
func (r *StatusReport) unstructured() (runtime.Object, error) {
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(r)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: content}, nil
}

var statusColumns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "The HostedResource: resource.group."},
	{Name: "Kind", Type: "string", Description: "Kind of the type's objects."},
	{Name: "Group", Type: "string", Priority: 1, Description: "API group of the type."},
	{Name: "Resource", Type: "string", Priority: 1, Description: "Resource name (plural) of the type."},
	{Name: "Versions", Type: "string", Priority: 1, Description: "Served versions; the storage version is marked with *."},
	{Name: "Backend", Type: "string", Description: "StorageBackend that holds the objects."},
	{Name: "Backend Type", Type: "string", Priority: 1, Description: "Embedded, Etcd or Postgres."},
	{Name: "Backend Ready", Type: "string", Description: "The backend's Ready condition, with its reason when not True."},
	{Name: "Backend Size", Type: "string", Priority: 1, Description: "Size of the backend's database."},
	{Name: "Objects", Type: "string", Description: "Objects of the type, counted now."},
	{Name: "Size", Type: "string", Description: "Estimated size of the type's objects in the store."},
	{Name: "APIService", Type: "string", Description: "Whether every APIService of the type is Available; <none> when annex runs without a cluster."},
	{Name: "Adoption", Type: "string", Description: "For a type adopted from a CRD of the cluster, the adoption's phase (objects copied of the total while Copying, the reason when it waits or failed)."},
	{Name: "Age", Type: "string", Description: "Time since the HostedResource was created."},
}

// table is the report as kubectl prints tables.
func (r *StatusReport) table(now time.Time) *metav1.Table {
	table := &metav1.Table{ColumnDefinitions: statusColumns}
	for _, item := range r.Items {
		versions := make([]string, len(item.Versions))
		for i, v := range item.Versions {
			versions[i] = v
			if v == item.StorageVersion {
				versions[i] += "*"
			}
		}
		objects := "<unknown>"
		if item.ObjectCount != nil {
			objects = fmt.Sprint(*item.ObjectCount)
		}
		table.Rows = append(table.Rows, metav1.TableRow{Cells: []any{
			item.Name,
			item.Kind,
			item.Group,
			item.Resource,
			strings.Join(versions, ","),
			item.Backend.Name,
			orNone(item.Backend.Type),
			conditionCell(item.Backend.Ready),
			bytesCell(item.Backend.SizeBytes),
			objects,
			bytesCell(item.EstimatedSizeBytes),
			apiServicesCell(item.APIServices),
			adoptionCell(item.Adoption),
			ageCell(item.CreationTimestamp, now),
		}})
	}
	return table
}

// adoptionCell is an adoption's phase: "Copying 120/3000", "Adopted",
// "RollingBack 40/3000",
// "Failed (CRDNotFound)"; <none> for a type that adopts nothing.
func adoptionCell(a *v1alpha1.AdoptionStatus) string {
	switch {
	case a == nil:
		return "<none>"
	case a.Phase == "":
		return orNone(a.Reason)
	case (a.Phase == v1alpha1.AdoptionCopying || a.Phase == v1alpha1.AdoptionRollingBack) && a.Reason == "":
		return fmt.Sprintf("%s %d/%d", a.Phase, a.Copied, a.Total)
	case a.Phase == v1alpha1.AdoptionAdopted && a.Reason == "" && a.ClusterCopies != nil && a.ClusterCopies.CompletionTime == nil:
		return fmt.Sprintf("%s, deleting the cluster's copies %d/%d", a.Phase, a.ClusterCopies.Deleted, a.ClusterCopies.Total)
	case a.Reason != "":
		return fmt.Sprintf("%s (%s)", a.Phase, a.Reason)
	}
	return string(a.Phase)
}

// conditionCell is a condition as kubectl get apiservices shows one: its
// status, and its reason when it is not True.
func conditionCell(c metav1.Condition) string {
	if c.Status == metav1.ConditionTrue || c.Reason == "" {
		return string(c.Status)
	}
	return fmt.Sprintf("%s (%s)", c.Status, c.Reason)
}

// apiServicesCell is True when every APIService is available, else the
// first that is not.
func apiServicesCell(svcs []APIServiceStatus) string {
	if len(svcs) == 0 {
		return "<none>"
	}
	for _, s := range svcs {
		if s.Available.Status != metav1.ConditionTrue {
			if len(svcs) == 1 {
				return conditionCell(s.Available)
			}
			return s.Name + ": " + conditionCell(s.Available)
		}
	}
	return string(metav1.ConditionTrue)
}

func bytesCell(n *int64) string {
	if n == nil || *n < 0 {
		return "<unknown>"
	}
	return humanize.IBytes(uint64(*n))
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func ageCell(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}
