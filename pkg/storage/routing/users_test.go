package routing

import (
	"slices"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
)

func TestBackendUsers(t *testing.T) {
	hrs := []v1alpha1.HostedResource{
		*hostedResource("a.example.com", "pg"),
		*hostedResource("b.example.com", "default"),
		*hostedResource("c.example.com", "pg"),
		// Moving away from pg: its CRD is still bound there.
		*hostedResource("moving.example.com", "other"),
	}
	stray := crd("stray.example.com", "pg")
	stray.Labels = nil
	crds := []apiextensionsv1.CustomResourceDefinition{
		*crd("a.example.com", "pg"),
		*crd("moving.example.com", "pg"),
		// Being deleted: its HostedResource is gone, its CRD not yet.
		*crd("going.example.com", "pg"),
		// Created on annex directly, not by a HostedResource.
		*stray,
	}
	want := []string{"a.example.com", "c.example.com", "going.example.com", "moving.example.com"}
	if got := BackendUsers("pg", hrs, crds); !slices.Equal(got, want) {
		t.Errorf("users of pg: %q, want %q", got, want)
	}
	if got := BackendUsers("unused", hrs, crds); len(got) != 0 {
		t.Errorf("users of a backend nobody names: %q, want none", got)
	}
}
