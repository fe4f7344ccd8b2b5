package fuzzcheck

import (
	"context"
	"net/http"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
)

// Context is a request's context for a create or an update of an object of
// the given scope: a namespaced object's request names the namespace
// "default", a cluster-scoped one's none.
func Context(namespaced bool) context.Context {
	ns := metav1.NamespaceNone
	if namespaced {
		ns = metav1.NamespaceDefault
	}
	return genericapirequest.WithNamespace(context.Background(), ns)
}

// createRecorder keeps the errors its strategy's Validate returned.
type createRecorder struct {
	rest.RESTCreateStrategy
	errs field.ErrorList
}

func (r *createRecorder) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	r.errs = r.RESTCreateStrategy.Validate(ctx, obj)
	return r.errs
}

// updateRecorder keeps the errors its strategy's ValidateUpdate returned.
type updateRecorder struct {
	rest.RESTUpdateStrategy
	errs field.ErrorList
}

func (r *updateRecorder) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	r.errs = r.RESTUpdateStrategy.ValidateUpdate(ctx, obj, old)
	return r.errs
}

// Create does to obj what the generic registry store does to a new object
// before it stores it (system fields, a generated name, rest.BeforeCreate:
// the strategy's PrepareForCreate and Validate, then the common metadata
// validation), and checks the answer: the strategy's errors pass ErrorList,
// and the answer is nil, a 422, or one of the other codes allowed. It
// returns whether the object would be stored.
func Create(t testing.TB, ctx context.Context, strategy rest.RESTCreateStrategy, obj runtime.Object, allowed ...int32) bool {
	t.Helper()
	accessor, err := meta.Accessor(obj)
	if err != nil {
		t.Fatalf("%T has no metadata: %v", obj, err)
	}
	rest.FillObjectMetaSystemFields(accessor)
	if accessor.GetGenerateName() != "" && accessor.GetName() == "" {
		accessor.SetName(strategy.GenerateName(accessor.GetGenerateName()))
	}
	recorder := &createRecorder{RESTCreateStrategy: strategy}
	err = rest.BeforeCreate(recorder, ctx, obj)
	check(t, strategy, obj, recorder.errs, err, allowed)
	return err == nil
}

// Update does to obj, an update of old, what the generic registry store
// does before it stores it (rest.BeforeUpdate: the strategy's
// PrepareForUpdate, the common metadata validation and ValidateUpdate), and
// checks the answer as Create does. It returns whether the update would be
// stored.
func Update(t testing.TB, ctx context.Context, strategy rest.RESTUpdateStrategy, obj, old runtime.Object, allowed ...int32) bool {
	t.Helper()
	recorder := &updateRecorder{RESTUpdateStrategy: strategy}
	err := rest.BeforeUpdate(recorder, ctx, obj, old)
	check(t, strategy, obj, recorder.errs, err, allowed)
	return err == nil
}

func check(t testing.TB, typer runtime.ObjectTyper, obj runtime.Object, errs field.ErrorList, err error, allowed []int32) {
	t.Helper()
	kinds, _, kerr := typer.ObjectKinds(obj)
	if kerr != nil || len(kinds) == 0 {
		t.Fatalf("the strategy does not know %T: %v", obj, kerr)
	}
	accessor, _ := meta.Accessor(obj)
	ErrorList(t, kinds[0].GroupKind(), accessor.GetName(), errs)
	Status(t, err, append([]int32{http.StatusUnprocessableEntity}, allowed...)...)
}
