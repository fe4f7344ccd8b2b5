// +k8s:deepcopy-gen=package
// +groupName=annex.dev

// Package annex holds the internal (hub) types of the annex.dev API group.
package annex
