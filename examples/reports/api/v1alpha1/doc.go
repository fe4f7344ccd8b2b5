// +k8s:deepcopy-gen=package
// +groupName=reports.example.com

// Package v1alpha1 is the deprecated v1alpha1 version of the
// reports.example.com API group. Its schema is the same as v1's, so the
// server converts between the two with the "None" strategy (only apiVersion
// changes); see package v1.
package v1alpha1
