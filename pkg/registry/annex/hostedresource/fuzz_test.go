package hostedresource

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"

	"annex.dev/annex/pkg/apis/annex/install"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/registry/fuzzcheck"
)

// storedHostedResource is the HostedResource that the fuzzed updates change.
const storedHostedResource = `{
  "apiVersion": "annex.dev/v1alpha1",
  "kind": "HostedResource",
  "metadata": {"name": "widgets.example.com"},
  "spec": {
    "group": "example.com",
    "names": {"plural": "widgets", "kind": "Widget"},
    "scope": "Namespaced",
    "versions": [{
      "name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 1}}}
      }}}
    }],
    "storage": {"retention": {"maxAge": "24h"}}
  }
}`

// FuzzHostedResource sends random bodies to the create and update paths of
// HostedResources: decoding, defaulting, conversion, and the strategy's
// validation (fuzzcheck.Typed.Check says what must hold).
func FuzzHostedResource(f *testing.F) {
	scheme := runtime.NewScheme()
	install.Install(scheme)
	k := fuzzcheck.NewTyped(f, scheme, v1alpha1.SchemeGroupVersion.WithKind("HostedResource"), NewStrategy(scheme), []byte(storedHostedResource))
	f.Fuzz(k.Check)
}
