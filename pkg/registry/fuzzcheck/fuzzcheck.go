// Package fuzzcheck holds what annex's fuzz targets require of the answer to
// a create or an update: a refusal is the client's fault (a 4xx, never a
// 500), and each error of a 422 names the field it is about and what kind of
// problem it is, so that a client can show it next to the field.
package fuzzcheck

import (
	"errors"
	"net/http"
	"slices"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// errorTypes are the types a validation error may have. field.ErrorTypeInternal
// is not one: it is a server fault, answered as a 500 elsewhere.
var errorTypes = []field.ErrorType{
	field.ErrorTypeNotFound,
	field.ErrorTypeRequired,
	field.ErrorTypeDuplicate,
	field.ErrorTypeInvalid,
	field.ErrorTypeNotSupported,
	field.ErrorTypeForbidden,
	field.ErrorTypeTooLong,
	field.ErrorTypeTooMany,
	field.ErrorTypeTooFew,
	field.ErrorTypeTypeInvalid,
	field.ErrorTypeTooShort,
}

// hasPath says whether a field path names a field: the root path is "", and
// a nil *field.Path prints as "<nil>".
func hasPath(p string) bool { return p != "" && p != "<nil>" }

// ErrorList fails t unless every error of errs names a field and has one of
// the types of a client's error, and unless errs, answered as the API
// answers them (apierrors.NewInvalid), is a 422 with one cause per error,
// each naming its field.
func ErrorList(t testing.TB, gk schema.GroupKind, name string, errs field.ErrorList) {
	t.Helper()
	for _, err := range errs {
		if err == nil {
			t.Errorf("a nil error in %v", errs)
			continue
		}
		if !hasPath(err.Field) {
			t.Errorf("an error names no field: %q (%s)", err.Error(), err.Type)
		}
		if !slices.Contains(errorTypes, err.Type) {
			t.Errorf("an error has type %q, not a client error's: %s", err.Type, err.Field)
		}
	}
	if len(errs) == 0 {
		return
	}
	Status(t, apierrors.NewInvalid(gk, name, errs), http.StatusUnprocessableEntity)
}

// Status fails t unless err, what a create or an update returned, is nil or
// an API status error with one of the codes allowed, and unless a 422 has
// causes that each name a field.
func Status(t testing.TB, err error, allowed ...int32) {
	t.Helper()
	if err == nil {
		return
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		t.Errorf("not an API status (a 500 to the client): %T %v", err, err)
		return
	}
	s := status.Status()
	if !slices.Contains(allowed, s.Code) {
		t.Errorf("code %d (%s), want one of %v: %s", s.Code, s.Reason, allowed, s.Message)
	}
	if s.Code != http.StatusUnprocessableEntity {
		return
	}
	if s.Reason != metav1.StatusReasonInvalid || s.Details == nil || len(s.Details.Causes) == 0 {
		t.Errorf("a 422 without its causes: %+v", s)
		return
	}
	for _, c := range s.Details.Causes {
		if !hasPath(c.Field) || c.Type == "" {
			t.Errorf("a cause of the 422 names no field or no type: %+v", c)
		}
	}
}
