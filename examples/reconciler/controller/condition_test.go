package controller

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	reportsv1 "annex.dev/annex/examples/reports/api/v1"
)

func result(policy string, r reportsv1.Result) reportsv1.PolicyReportResult {
	return reportsv1.PolicyReportResult{Policy: policy, Rule: "rule", Result: r}
}

func TestComplianceCondition(t *testing.T) {
	var many []reportsv1.PolicyReportResult
	for i := range 12 {
		many = append(many, result(fmt.Sprintf("policy-%02d", i), reportsv1.ResultFail))
	}
	for _, tc := range []struct {
		name    string
		summary reportsv1.PolicyReportSummary
		results []reportsv1.PolicyReportResult
		status  metav1.ConditionStatus
		reason  string
		message string
	}{
		{
			name:    "empty report",
			status:  metav1.ConditionTrue,
			reason:  ReasonNoPolicyFailures,
			message: "No policy failed.",
		},
		{
			name:    "passes, warnings and errors are compliant",
			summary: reportsv1.PolicyReportSummary{Pass: 2, Warn: 1, Error: 1, Skip: 1},
			results: []reportsv1.PolicyReportResult{result("a", reportsv1.ResultPass), result("b", reportsv1.ResultWarn), result("c", reportsv1.ResultError)},
			status:  metav1.ConditionTrue,
			reason:  ReasonNoPolicyFailures,
			message: "No policy failed.",
		},
		{
			name:    "one failure",
			summary: reportsv1.PolicyReportSummary{Pass: 1, Fail: 1},
			results: []reportsv1.PolicyReportResult{result("require-labels", reportsv1.ResultPass), result("disallow-privileged", reportsv1.ResultFail)},
			status:  metav1.ConditionFalse,
			reason:  ReasonPolicyFailures,
			message: "1 result failed, in the policies disallow-privileged.",
		},
		{
			name:    "failed policies are named once, sorted",
			summary: reportsv1.PolicyReportSummary{Fail: 3},
			results: []reportsv1.PolicyReportResult{result("zeta", reportsv1.ResultFail), result("alpha", reportsv1.ResultFail), result("zeta", reportsv1.ResultFail), result("beta", reportsv1.ResultPass)},
			status:  metav1.ConditionFalse,
			reason:  ReasonPolicyFailures,
			message: "3 results failed, in the policies alpha, zeta.",
		},
		{
			name:    "many failed policies",
			summary: reportsv1.PolicyReportSummary{Fail: 12},
			results: many,
			status:  metav1.ConditionFalse,
			reason:  ReasonPolicyFailures,
			message: "12 results failed, in the policies policy-00, policy-01, policy-02, policy-03, policy-04, policy-05, policy-06, policy-07, policy-08, policy-09 and 2 more.",
		},
		{
			name:    "summary counts failures the results do not show",
			summary: reportsv1.PolicyReportSummary{Fail: 2},
			results: []reportsv1.PolicyReportResult{result("a", reportsv1.ResultPass)},
			status:  metav1.ConditionFalse,
			reason:  ReasonPolicyFailures,
			message: "2 results failed; the report lists none of them.",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report := &reportsv1.PolicyReport{
				ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "ns", Generation: 7},
				Summary:    tc.summary,
				Results:    tc.results,
			}
			got := ComplianceCondition(report)
			want := metav1.Condition{
				Type: reportsv1.ConditionCompliant, Status: tc.status, ObservedGeneration: 7,
				Reason: tc.reason, Message: tc.message,
			}
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			// The server refuses a status whose condition breaks the rules
			// of metav1.Condition (the reason's pattern, the message's length).
			got.LastTransitionTime = metav1.Now()
			if errs := metav1validation.ValidateConditions([]metav1.Condition{got}, field.NewPath("status", "conditions")); len(errs) > 0 {
				t.Errorf("invalid condition: %v", errs)
			}
		})
	}
}
