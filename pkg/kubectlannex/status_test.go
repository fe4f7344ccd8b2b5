package kubectlannex

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

func condition(conditionType string, status metav1.ConditionStatus, reason string) metav1.Condition {
	return metav1.Condition{Type: conditionType, Status: status, Reason: reason, Message: reason + " message"}
}

func apiService(name string, status apiregistrationv1.ConditionStatus, reason string) apiregistrationv1.APIService {
	return apiregistrationv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: apiregistrationv1.APIServiceStatus{Conditions: []apiregistrationv1.APIServiceCondition{
			{Type: apiregistrationv1.Available, Status: status, Reason: reason},
		}},
	}
}

// statusFixture is a cluster with three hosted types: one on the default
// store, one on a ready Postgres backend whose v1beta1 APIService is
// missing, one on an unreachable etcd backend.
func statusFixture(now time.Time) *StatusReport {
	hrs := testTypes()[:3]
	for i := range hrs {
		hrs[i].CreationTimestamp = metav1.NewTime(now.Add(-time.Duration(i+1) * time.Hour))
		meta.SetStatusCondition(&hrs[i].Status.Conditions, condition(v1alpha1.HostedResourceEstablished, metav1.ConditionTrue, "InitialNamesAccepted"))
	}
	hrs[0].Spec.Storage.Backend = "default"
	meta.SetStatusCondition(&hrs[0].Status.Conditions, condition(v1alpha1.HostedResourceStorageBackendReady, metav1.ConditionTrue, v1alpha1.ReasonDefaultStore))
	hrs[0].Status.EstimatedSizeBytes = ptr.To[int64](3 << 20)
	hrs[1].Spec.Storage.Backend = "pg"
	hrs[2].Spec.Storage.Backend = "far"
	// widgets.a.example.com adopts the cluster's CRD, and is copying.
	hrs[2].Spec.Adoption = &v1alpha1.Adoption{CustomResourceDefinition: hrs[2].Name}
	hrs[2].Status.Adoption = &v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionCopying, Copied: 500, Total: 3000}
	backends := []v1alpha1.StorageBackend{
		{ObjectMeta: metav1.ObjectMeta{Name: "pg"}, Spec: v1alpha1.StorageBackendSpec{Type: v1alpha1.StorageBackendPostgres},
			Status: v1alpha1.StorageBackendStatus{Conditions: []metav1.Condition{condition(v1alpha1.StorageBackendReady, metav1.ConditionTrue, "Reachable")}, SizeBytes: ptr.To[int64](1 << 30)}},
		{ObjectMeta: metav1.ObjectMeta{Name: "far"}, Spec: v1alpha1.StorageBackendSpec{Type: v1alpha1.StorageBackendEtcd},
			Status: v1alpha1.StorageBackendStatus{Conditions: []metav1.Condition{condition(v1alpha1.StorageBackendReady, metav1.ConditionFalse, "Unreachable")}}},
	}
	svcs := []apiregistrationv1.APIService{
		apiService("v1.reports.example.com", apiregistrationv1.ConditionTrue, "Passed"),
		apiService("v1.a.example.com", apiregistrationv1.ConditionFalse, "FailedDiscoveryCheck"),
	}
	report := buildReport(hrs, backends, svcs)
	report.Items[0].ObjectCount = ptr.To[int64](0)
	report.Items[1].ObjectCount = ptr.To[int64](300)
	// widgets.a.example.com's count failed.
	report.Items[2].ObjectCountError = "the server is currently unable to handle the request"
	return report
}

func TestStatusTable(t *testing.T) {
	now := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	report := statusFixture(now)
	var out bytes.Buffer
	o := &StatusOptions{IOStreams: genericiooptions.IOStreams{Out: &out, ErrOut: &out}, now: func() time.Time { return now }}
	if err := o.print(report); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"NAME                                       KIND                  BACKEND   BACKEND READY         OBJECTS     SIZE        APISERVICE                                      ADOPTION           AGE",
		"clusterpolicyreports.reports.example.com   ClusterPolicyReport   pg        True                  0           <unknown>   True                                            <none>             120m",
		"policyreports.reports.example.com          PolicyReport          default   True                  300         3.0 MiB     v1beta1.reports.example.com: False (NotFound)   <none>             60m",
		"widgets.a.example.com                      Widget                far       False (Unreachable)   <unknown>   <unknown>   False (FailedDiscoveryCheck)                    Copying 500/3000   3h",
	}
	if got := strings.Split(strings.TrimRight(out.String(), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("status table:\n%s\nwant:\n%s", out.String(), strings.Join(want, "\n"))
	}
}

func TestAdoptionCell(t *testing.T) {
	for _, tc := range []struct {
		adoption *v1alpha1.AdoptionStatus
		want     string
	}{
		{nil, "<none>"},
		{&v1alpha1.AdoptionStatus{Reason: "Pending"}, "Pending"},
		{&v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionCopying, Copied: 10, Total: 20}, "Copying 10/20"},
		{&v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionCopying, Reason: "GroupHasOtherCRDs"}, "Copying (GroupHasOtherCRDs)"},
		{&v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionFailed, Reason: "CRDNotFound"}, "Failed (CRDNotFound)"},
		{&v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionAdopted}, "Adopted"},
		{&v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionRollingBack, Copied: 40, Total: 3000}, "RollingBack 40/3000"},
		{&v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionAdopted, Reason: "ReleaseFailed"}, "Adopted (ReleaseFailed)"},
		{&v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionReleased}, "Released"},
		{&v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionAdopted, ClusterCopies: &v1alpha1.ClusterCopiesStatus{Total: 3000, Deleted: 500}},
			"Adopted, deleting the cluster's copies 500/3000"},
		{&v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionAdopted, Reason: "ClusterCopiesNotDeleted", ClusterCopies: &v1alpha1.ClusterCopiesStatus{Total: 3000}},
			"Adopted (ClusterCopiesNotDeleted)"},
		{&v1alpha1.AdoptionStatus{Phase: v1alpha1.AdoptionAdopted, ClusterCopies: &v1alpha1.ClusterCopiesStatus{Total: 3000, Deleted: 3000, CompletionTime: &metav1.Time{}}},
			"Adopted"},
	} {
		if got := adoptionCell(tc.adoption); got != tc.want {
			t.Errorf("adoptionCell(%+v) = %q, want %q", tc.adoption, got, tc.want)
		}
	}
}

func TestStatusWide(t *testing.T) {
	now := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	o := &StatusOptions{output: "wide", IOStreams: genericiooptions.IOStreams{Out: &out, ErrOut: &out}, now: func() time.Time { return now }}
	if err := o.print(statusFixture(now)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	wantHeader := []string{"NAME", "KIND", "GROUP", "RESOURCE", "VERSIONS", "BACKEND", "BACKEND", "TYPE", "BACKEND", "READY", "BACKEND", "SIZE", "OBJECTS", "SIZE", "APISERVICE", "ADOPTION", "AGE"}
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != strings.Join(wantHeader, " ") {
		t.Errorf("wide header %q, want %q", got, wantHeader)
	}
	if got, want := strings.Fields(lines[2])[:9], []string{"policyreports.reports.example.com", "PolicyReport", "reports.example.com", "policyreports", "v1*,v1beta1", "default", "<none>", "True", "<unknown>"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("wide row of policyreports %q, want it to start %q", got, want)
	}
	if got := strings.Fields(lines[1]); got[6] != "Postgres" || got[8] != "1.0" || got[9] != "GiB" {
		t.Errorf("wide row of clusterpolicyreports %q: want backend type Postgres and size 1.0 GiB", got)
	}
}

func TestStatusDocument(t *testing.T) {
	now := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	o := &StatusOptions{output: "yaml", printFlags: genericclioptions.NewJSONYamlPrintFlags(), IOStreams: genericiooptions.IOStreams{Out: &out, ErrOut: &out}}
	if err := o.print(statusFixture(now)); err != nil {
		t.Fatal(err)
	}
	var got StatusReport
	if err := yaml.UnmarshalStrict(out.Bytes(), &got); err != nil {
		t.Fatalf("the YAML document does not read back as a StatusReport: %v\n%s", err, out.String())
	}
	if got.APIVersion != ReportAPIVersion || got.Kind != ReportKind || len(got.Items) != 3 {
		t.Fatalf("document %s/%s with %d items, want %s/%s with 3:\n%s", got.APIVersion, got.Kind, len(got.Items), ReportAPIVersion, ReportKind, out.String())
	}
	pr := got.Items[1]
	if pr.Name != "policyreports.reports.example.com" || pr.ObjectCount == nil || *pr.ObjectCount != 300 ||
		pr.Backend.Name != "default" || pr.Backend.Ready.Reason != v1alpha1.ReasonDefaultStore ||
		len(pr.APIServices) != 2 || pr.APIServices[0].Available.Status != metav1.ConditionTrue || pr.APIServices[1].Available.Reason != "NotFound" {
		t.Errorf("policyreports in the document: %+v", pr)
	}
	far := got.Items[2]
	if far.ObjectCount != nil || far.ObjectCountError == "" || far.Backend.Type != "Etcd" || far.Backend.Ready.Status != metav1.ConditionFalse {
		t.Errorf("widgets in the document: %+v", far)
	}
}

// Standalone annex has no APIServices: the column says <none>.
func TestStatusWithoutAPIServices(t *testing.T) {
	hrs := testTypes()[:1]
	report := buildReport(hrs, nil, nil)
	if len(report.Items[0].APIServices) != 0 {
		t.Errorf("APIServices without any in the cluster: %+v", report.Items[0].APIServices)
	}
	if got := report.table(time.Now()).Rows[0].Cells[11]; got != "<none>" {
		t.Errorf("APIService cell without APIServices = %v, want <none>", got)
	}
}
