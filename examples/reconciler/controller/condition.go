package controller

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	reportsv1 "annex.dev/annex/examples/reports/api/v1"
)

// Reasons of the Compliant condition.
const (
	// ReasonNoPolicyFailures says that summary.fail is 0.
	ReasonNoPolicyFailures = "NoPolicyFailures"
	// ReasonPolicyFailures says that summary.fail is above 0.
	ReasonPolicyFailures = "PolicyFailures"
)

// maxNamedPolicies bounds the message of a report with many failed policies;
// a condition message is meant for a person reading `kubectl describe`.
const maxNamedPolicies = 10

// ComplianceCondition computes the Compliant condition of a report from its
// summary and results: True when summary.fail is 0, otherwise False with a
// message naming the policies whose results failed. It leaves
// LastTransitionTime unset; meta.SetStatusCondition fills it in when the
// status changes.
func ComplianceCondition(report *reportsv1.PolicyReport) metav1.Condition {
	cond := metav1.Condition{
		Type:               reportsv1.ConditionCompliant,
		ObservedGeneration: report.Generation,
	}
	if report.Summary.Fail == 0 {
		cond.Status = metav1.ConditionTrue
		cond.Reason = ReasonNoPolicyFailures
		cond.Message = "No policy failed."
		return cond
	}
	cond.Status = metav1.ConditionFalse
	cond.Reason = ReasonPolicyFailures

	var policies []string
	for _, r := range report.Results {
		if r.Result == reportsv1.ResultFail && !slices.Contains(policies, r.Policy) {
			policies = append(policies, r.Policy)
		}
	}
	slices.Sort(policies)
	results := "results"
	if report.Summary.Fail == 1 {
		results = "result"
	}
	switch {
	case len(policies) == 0:
		// The schema's CEL rule refuses such a report; it can still be read
		// from storage written before the rule existed.
		cond.Message = fmt.Sprintf("%d %s failed; the report lists none of them.", report.Summary.Fail, results)
	case len(policies) > maxNamedPolicies:
		cond.Message = fmt.Sprintf("%d %s failed, in the policies %s and %d more.",
			report.Summary.Fail, results, strings.Join(policies[:maxNamedPolicies], ", "), len(policies)-maxNamedPolicies)
	default:
		cond.Message = fmt.Sprintf("%d %s failed, in the policies %s.", report.Summary.Fail, results, strings.Join(policies, ", "))
	}
	return cond
}
