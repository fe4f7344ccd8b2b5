package storagebackend

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"annex.dev/annex/pkg/apis/annex/install"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/registry/fuzzcheck"
	"annex.dev/annex/pkg/storage/secretpolicy"
)

// storedStorageBackend is the StorageBackend that the fuzzed updates change.
const storedStorageBackend = `{
  "apiVersion": "annex.dev/v1alpha1",
  "kind": "StorageBackend",
  "metadata": {"name": "reports"},
  "spec": {
    "type": "Etcd",
    "etcd": {
      "endpoints": ["https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"],
      "tlsSecretRef": {"namespace": "annex-system", "name": "etcd-client"}
    }
  }
}`

// FuzzStorageBackend sends random bodies to the create and update paths of
// StorageBackends: decoding, defaulting, conversion, and the strategy's
// validation (fuzzcheck.Typed.Check says what must hold).
func FuzzStorageBackend(f *testing.F) {
	scheme := runtime.NewScheme()
	install.Install(scheme)
	// The seeds' Secrets are in annex-system: allowed, beside the serving
	// certificate's, which is refused.
	policy := secretpolicy.Policy{Namespaces: []string{"annex-system"}, Serving: types.NamespacedName{Namespace: "annex-system", Name: "annex-serving"}}
	k := fuzzcheck.NewTyped(f, scheme, v1alpha1.SchemeGroupVersion.WithKind("StorageBackend"), NewStrategy(scheme, policy), []byte(storedStorageBackend))
	f.Fuzz(k.Check)
}
