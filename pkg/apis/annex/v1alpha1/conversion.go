package v1alpha1

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
)

// selectableFields are the fields, besides metadata.name, that a field
// selector may name for each kind; the registry's GetAttrs returns the same.
var selectableFields = map[string][]string{
	"HostedResource": {"spec.group", "spec.names.kind", "spec.scope", "spec.storage.backend"},
	"StorageBackend": {"spec.type"},
}

func addFieldLabelConversionFuncs(scheme *runtime.Scheme) error {
	for kind, fields := range selectableFields {
		allowed := map[string]bool{"metadata.name": true}
		for _, f := range fields {
			allowed[f] = true
		}
		err := scheme.AddFieldLabelConversionFunc(SchemeGroupVersion.WithKind(kind), func(label, value string) (string, string, error) {
			if !allowed[label] {
				return "", "", fmt.Errorf("field label not supported: %s", label)
			}
			return label, value, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
