// +k8s:deepcopy-gen=package
// +k8s:conversion-gen=annex.dev/annex/pkg/apis/annex
// +k8s:defaulter-gen=TypeMeta
// +k8s:openapi-gen=true
// +k8s:openapi-model-package=dev.annex.v1alpha1
// +groupName=annex.dev

// Package v1alpha1 is the v1alpha1 version of the annex.dev API group.
package v1alpha1
