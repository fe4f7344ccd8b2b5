package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// PolicyReport holds the results of evaluating a set of policies against one
// object. Reports are written often and in large numbers, which is why annex
// keeps them out of the cluster's etcd.
type PolicyReport struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says what was evaluated.
	Spec PolicyReportSpec `json:"spec"`
	// summary counts the results by outcome; the server defaults every count to 0.
	// +optional
	Summary PolicyReportSummary `json:"summary,omitempty"`
	// results are the outcomes of the individual policy rules.
	// +optional
	// +listType=atomic
	Results []PolicyReportResult `json:"results,omitempty"`
	// status is written by the report's controller through the status subresource.
	// +optional
	Status PolicyReportStatus `json:"status,omitempty"`
}

// PolicyReportSpec says what a report was evaluated against.
type PolicyReportSpec struct {
	// scope is the object the report is about.
	Scope Scope `json:"scope"`
	// policySet names the set of policies that was evaluated; the server defaults it to "default".
	// +optional
	PolicySet string `json:"policySet,omitempty"`
	// replicas is how many evaluators should produce this report; the server
	// defaults it to 1. It exists so that the type has a scale subresource
	// (spec.replicas <-> status.replicas).
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
}

// Scope names the object a report is about, in the report's namespace.
type Scope struct {
	// kind of the object, for example "Deployment".
	Kind string `json:"kind"`
	// name of the object.
	Name string `json:"name"`
}

// PolicyReportSummary counts a report's results by outcome.
type PolicyReportSummary struct {
	// pass is the number of results that passed.
	// +optional
	Pass int64 `json:"pass,omitempty"`
	// fail is the number of results that failed.
	// +optional
	Fail int64 `json:"fail,omitempty"`
	// warn is the number of results that passed with a warning.
	// +optional
	Warn int64 `json:"warn,omitempty"`
	// error is the number of results whose evaluation failed.
	// +optional
	Error int64 `json:"error,omitempty"`
	// skip is the number of results that were not evaluated.
	// +optional
	Skip int64 `json:"skip,omitempty"`
}

// Result is the outcome of evaluating one policy rule.
// +enum
type Result string

// The outcomes of a policy rule.
const (
	ResultPass  Result = "pass"
	ResultFail  Result = "fail"
	ResultWarn  Result = "warn"
	ResultError Result = "error"
	ResultSkip  Result = "skip"
)

// Severity says how much a failed rule matters.
// +enum
type Severity string

// The severities of a policy rule.
const (
	SeverityLow      Severity = "low"
	SeverityMedium   Severity = "medium"
	SeverityHigh     Severity = "high"
	SeverityCritical Severity = "critical"
)

// PolicyReportResult is the outcome of one policy rule.
type PolicyReportResult struct {
	// policy is the name of the policy.
	Policy string `json:"policy"`
	// rule is the name of the rule within the policy.
	// +optional
	Rule string `json:"rule,omitempty"`
	// result is pass, fail, warn, error or skip.
	Result Result `json:"result"`
	// severity is low, medium, high or critical; the server defaults it to medium.
	// +optional
	Severity Severity `json:"severity,omitempty"`
	// category groups related policies, for example "Pod Security".
	// +optional
	Category string `json:"category,omitempty"`
	// message explains the result.
	// +optional
	Message string `json:"message,omitempty"`
	// timestamp is when the rule was evaluated.
	// +optional
	Timestamp *Timestamp `json:"timestamp,omitempty"`
	// resources are the objects the rule was evaluated against, when they
	// are more than the report's scope.
	// +optional
	// +listType=atomic
	Resources []ResourceReference `json:"resources,omitempty"`
}

// Timestamp is a point in time in seconds and nanoseconds since the Unix epoch.
type Timestamp struct {
	// seconds since the Unix epoch.
	// +optional
	Seconds int64 `json:"seconds,omitempty"`
	// nanos is the fraction of the second, from 0 to 999999999.
	// +optional
	Nanos int32 `json:"nanos,omitempty"`
}

// ResourceReference names an object that a rule was evaluated against.
type ResourceReference struct {
	// apiVersion of the object, for example "apps/v1".
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// kind of the object.
	// +optional
	Kind string `json:"kind,omitempty"`
	// namespace of the object; empty for a cluster-scoped object.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// name of the object.
	// +optional
	Name string `json:"name,omitempty"`
	// uid of the object.
	// +optional
	UID string `json:"uid,omitempty"`
}

// PolicyReportStatus is what a report's controller observed.
type PolicyReportStatus struct {
	// conditions are the observations of the report's state; the "Compliant"
	// condition says whether no policy failed.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// observedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// replicas is how many evaluators produce this report (the scale subresource's status.replicas).
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// selector is a label selector, in string form, for the evaluators (the scale subresource's status.selector).
	// +optional
	Selector string `json:"selector,omitempty"`
}

// ConditionCompliant is the condition type that says whether a report has no failed results.
const ConditionCompliant = "Compliant"

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// PolicyReportList is a list of PolicyReports.
type PolicyReportList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`

	// items are the PolicyReports.
	Items []PolicyReport `json:"items"`
}
