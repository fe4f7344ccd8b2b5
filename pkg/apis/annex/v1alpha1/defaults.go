package v1alpha1

import (
	"annex.dev/annex/pkg/apis/annex"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func addDefaultingFuncs(scheme *runtime.Scheme) error {
	return RegisterDefaults(scheme)
}

// SetDefaults_HostedResource applies the defaults a CustomResourceDefinition v1
// would get (singular and list kind from the kind, conversion strategy None,
// webhook port 443), by running the upstream defaulting on the CRD parts, and
// stores the objects in the default backend unless another is named.
func SetDefaults_HostedResource(obj *HostedResource) {
	crd := &apiextensionsv1.CustomResourceDefinition{Spec: apiextensionsv1.CustomResourceDefinitionSpec{
		Group:                 obj.Spec.Group,
		Names:                 obj.Spec.Names,
		Scope:                 obj.Spec.Scope,
		Versions:              obj.Spec.Versions,
		Conversion:            obj.Spec.Conversion,
		PreserveUnknownFields: obj.Spec.PreserveUnknownFields,
	}}
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(crd)
	obj.Spec.Names = crd.Spec.Names
	obj.Spec.Versions = crd.Spec.Versions
	obj.Spec.Conversion = crd.Spec.Conversion

	if obj.Spec.Storage.Backend == "" {
		obj.Spec.Storage.Backend = annex.DefaultStorageBackend
	}
}
