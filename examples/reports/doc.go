// Package reports is annex's example hosted type: PolicyReport in the group
// reports.example.com. The server-side definition is the HostedResource in
// config/samples/policyreports.yaml; api/ holds the Go types a CRD user would
// write for it and generated/ the typed client generated from them by
// hack/update-codegen.sh. The tests of this package check that the manifest
// is a valid CustomResourceDefinition and that it and the Go types agree.
package reports
