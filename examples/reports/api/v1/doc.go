// +k8s:deepcopy-gen=package
// +groupName=reports.example.com

// Package v1 is the v1 version of the reports.example.com API group, the
// example custom resource type that annex hosts in its tests and docs. The
// schema that the server enforces is config/samples/policyreports.yaml; these
// types mirror it for Go clients, as a CRD user's API package does.
package v1
