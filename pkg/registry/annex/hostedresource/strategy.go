// Package hostedresource holds the registry strategy of HostedResources.
package hostedresource

import (
	"context"
	"fmt"

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
)

// resetFields are owned by the other subresource: status for the main
// resource, everything else for /status. Server-side apply removes them from
// an applier's intent.
func resetFields(path string) map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		"annex.dev/v1alpha1": fieldpath.NewSet(fieldpath.MakePathOrDie(path)),
	}
}

type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
}

// NewStrategy returns the strategy of the main resource.
func NewStrategy(typer runtime.ObjectTyper) strategy {
	return strategy{typer, names.SimpleNameGenerator}
}

func (strategy) NamespaceScoped() bool { return false }

func (strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return resetFields("status")
}

// PrepareForCreate clears the status, which only annex's controllers write.
func (strategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {
	hr := obj.(*annex.HostedResource)
	hr.Status = annex.HostedResourceStatus{}
	hr.Generation = 1
}

// PrepareForUpdate keeps the status and bumps the generation when the spec changes.
func (strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	hr, oldHR := obj.(*annex.HostedResource), old.(*annex.HostedResource)
	hr.Status = oldHR.Status
	if !apiequality.Semantic.DeepEqual(hr.Spec, oldHR.Spec) {
		hr.Generation = oldHR.Generation + 1
	}
}

func (strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	return validation.ValidateHostedResource(ctx, obj.(*annex.HostedResource))
}

func (strategy) WarningsOnCreate(ctx context.Context, obj runtime.Object) []string { return nil }

func (strategy) Canonicalize(obj runtime.Object) {}

func (strategy) AllowCreateOnUpdate() bool { return false }

func (strategy) AllowUnconditionalUpdate() bool { return true }

func (strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	return validation.ValidateHostedResourceUpdate(ctx, obj.(*annex.HostedResource), old.(*annex.HostedResource))
}

func (strategy) WarningsOnUpdate(ctx context.Context, obj, old runtime.Object) []string { return nil }

type statusStrategy struct{ strategy }

// NewStatusStrategy returns the strategy of the /status subresource.
func NewStatusStrategy(s strategy) statusStrategy { return statusStrategy{s} }

func (statusStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		"annex.dev/v1alpha1": fieldpath.NewSet(fieldpath.MakePathOrDie("spec"), fieldpath.MakePathOrDie("metadata", "labels"), fieldpath.MakePathOrDie("metadata", "annotations")),
	}
}

// PrepareForUpdate keeps everything but the status.
func (statusStrategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	hr, oldHR := obj.(*annex.HostedResource), old.(*annex.HostedResource)
	hr.Spec = oldHR.Spec
	hr.Labels, hr.Annotations = oldHR.Labels, oldHR.Annotations
}

func (statusStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	return validation.ValidateHostedResourceStatusUpdate(obj.(*annex.HostedResource), old.(*annex.HostedResource))
}

func (statusStrategy) WarningsOnUpdate(ctx context.Context, obj, old runtime.Object) []string {
	return nil
}

// GetAttrs returns the labels and the selectable fields of a HostedResource.
func GetAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	hr, ok := obj.(*annex.HostedResource)
	if !ok {
		return nil, nil, fmt.Errorf("not a HostedResource: %T", obj)
	}
	return labels.Set(hr.Labels), SelectableFields(hr), nil
}

// SelectableFields are the fields a field selector can name.
func SelectableFields(hr *annex.HostedResource) fields.Set {
	return generic.AddObjectMetaFieldsSet(fields.Set{
		"spec.group":           hr.Spec.Group,
		"spec.names.kind":      hr.Spec.Names.Kind,
		"spec.scope":           string(hr.Spec.Scope),
		"spec.storage.backend": hr.Spec.Storage.Backend,
	}, &hr.ObjectMeta, false)
}

// Match returns the predicate a list or watch filters with.
func Match(label labels.Selector, field fields.Selector) storage.SelectionPredicate {
	return storage.SelectionPredicate{Label: label, Field: field, GetAttrs: GetAttrs}
}
