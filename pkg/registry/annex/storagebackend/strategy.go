// Package storagebackend holds the registry strategy of StorageBackends.
package storagebackend

import (
	"context"
	"fmt"
	"slices"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/validation"
	"annex.dev/annex/pkg/storage/secretpolicy"
)

type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	// secrets says which Secrets a StorageBackend may name.
	secrets secretpolicy.Policy
}

// NewStrategy returns the strategy of the main resource. A StorageBackend
// that names a Secret policy refuses is invalid.
func NewStrategy(typer runtime.ObjectTyper, policy secretpolicy.Policy) strategy {
	return strategy{typer, names.SimpleNameGenerator, policy}
}

func (strategy) NamespaceScoped() bool { return false }

// GetResetFields says that the main resource does not own the status.
func (strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		"annex.dev/v1alpha1": fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}

// PrepareForCreate clears the status, which only annex's controllers write.
func (strategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {
	sb := obj.(*annex.StorageBackend)
	sb.Status = annex.StorageBackendStatus{}
	sb.Generation = 1
}

// PrepareForUpdate keeps the status and bumps the generation when the spec changes.
func (strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	sb, oldSB := obj.(*annex.StorageBackend), old.(*annex.StorageBackend)
	sb.Status = oldSB.Status
	if !apiequality.Semantic.DeepEqual(sb.Spec, oldSB.Spec) {
		sb.Generation = oldSB.Generation + 1
	}
}

func (s strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	sb := obj.(*annex.StorageBackend)
	return append(validation.ValidateStorageBackend(sb), s.validateSecrets(sb, nil)...)
}

func (strategy) WarningsOnCreate(ctx context.Context, obj runtime.Object) []string { return nil }

func (strategy) Canonicalize(obj runtime.Object) {}

func (strategy) AllowCreateOnUpdate() bool { return false }

func (strategy) AllowUnconditionalUpdate() bool { return true }

func (s strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	sb, oldSB := obj.(*annex.StorageBackend), old.(*annex.StorageBackend)
	return append(validation.ValidateStorageBackendUpdate(sb, oldSB), s.validateSecrets(sb, oldSB)...)
}

// secretRef is a StorageBackend's reference to a Secret, at path.
type secretRef struct {
	namespace, name string
	path            *field.Path
}

func (r secretRef) same(o secretRef) bool {
	return r.namespace == o.namespace && r.name == o.name && r.path.String() == o.path.String()
}

func secretRefs(sb *annex.StorageBackend) []secretRef {
	var refs []secretRef
	if e := sb.Spec.Etcd; e != nil && e.TLSSecretRef != nil {
		refs = append(refs, secretRef{e.TLSSecretRef.Namespace, e.TLSSecretRef.Name, field.NewPath("spec", "etcd", "tlsSecretRef")})
	}
	if p := sb.Spec.Postgres; p != nil {
		refs = append(refs, secretRef{p.DSNSecretRef.Namespace, p.DSNSecretRef.Name, field.NewPath("spec", "postgres", "dsnSecretRef")})
	}
	return refs
}

// validateSecrets refuses the Secrets sb names that the policy refuses. An
// update is refused only for a reference it changes, so that a StorageBackend
// written before the policy changed can still have its labels changed, or be
// deleted; annex still refuses to read such a Secret, and the backend's
// status says why.
func (s strategy) validateSecrets(sb, old *annex.StorageBackend) field.ErrorList {
	var unchanged []secretRef
	if old != nil {
		unchanged = secretRefs(old)
	}
	var allErrs field.ErrorList
	for _, ref := range secretRefs(sb) {
		if slices.ContainsFunc(unchanged, ref.same) {
			continue
		}
		allErrs = append(allErrs, s.secrets.Validate(ref.namespace, ref.name, ref.path)...)
	}
	return allErrs
}

func (strategy) WarningsOnUpdate(ctx context.Context, obj, old runtime.Object) []string { return nil }

type statusStrategy struct{ strategy }

// NewStatusStrategy returns the strategy of the /status subresource.
func NewStatusStrategy(s strategy) statusStrategy { return statusStrategy{s} }

// GetResetFields says that /status owns nothing but the status.
func (statusStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		"annex.dev/v1alpha1": fieldpath.NewSet(fieldpath.MakePathOrDie("spec"), fieldpath.MakePathOrDie("metadata", "labels"), fieldpath.MakePathOrDie("metadata", "annotations")),
	}
}

// PrepareForUpdate keeps everything but the status.
func (statusStrategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	sb, oldSB := obj.(*annex.StorageBackend), old.(*annex.StorageBackend)
	sb.Spec = oldSB.Spec
	sb.Labels, sb.Annotations = oldSB.Labels, oldSB.Annotations
}

func (statusStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	return validation.ValidateStorageBackendStatusUpdate(obj.(*annex.StorageBackend), old.(*annex.StorageBackend))
}

func (statusStrategy) WarningsOnUpdate(ctx context.Context, obj, old runtime.Object) []string {
	return nil
}

// GetAttrs returns the labels and the selectable fields of a StorageBackend.
func GetAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	sb, ok := obj.(*annex.StorageBackend)
	if !ok {
		return nil, nil, fmt.Errorf("not a StorageBackend: %T", obj)
	}
	return labels.Set(sb.Labels), SelectableFields(sb), nil
}

// SelectableFields are the fields a field selector can name.
func SelectableFields(sb *annex.StorageBackend) fields.Set {
	return generic.AddObjectMetaFieldsSet(fields.Set{"spec.type": string(sb.Spec.Type)}, &sb.ObjectMeta, false)
}

// Match returns the predicate a list or watch filters with.
func Match(label labels.Selector, field fields.Selector) storage.SelectionPredicate {
	return storage.SelectionPredicate{Label: label, Field: field, GetAttrs: GetAttrs}
}
