package storagebackend

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/storage/secretpolicy"
)

var policy = secretpolicy.Policy{
	Namespaces: []string{secretpolicy.DefaultNamespace},
	Serving:    types.NamespacedName{Namespace: secretpolicy.DefaultNamespace, Name: "annex-tls"},
}

func etcdBackend(namespace, name string) *annex.StorageBackend {
	return &annex.StorageBackend{
		ObjectMeta: metav1.ObjectMeta{Name: "etcd", ResourceVersion: "1"},
		Spec: annex.StorageBackendSpec{Type: annex.StorageBackendEtcd, Etcd: &annex.EtcdStorage{
			Endpoints:    []string{"https://etcd-0.etcd:2379"},
			TLSSecretRef: &annex.SecretReference{Namespace: namespace, Name: name},
		}},
	}
}

func postgresBackend(namespace, name string) *annex.StorageBackend {
	return &annex.StorageBackend{
		ObjectMeta: metav1.ObjectMeta{Name: "pg", ResourceVersion: "1"},
		Spec: annex.StorageBackendSpec{Type: annex.StorageBackendPostgres, Postgres: &annex.PostgresStorage{
			DSNSecretRef: annex.SecretKeySelector{Namespace: namespace, Name: name, Key: "dsn"},
		}},
	}
}

// only fails unless errs is exactly one Forbidden on path.
func only(t *testing.T, errs field.ErrorList, path string) {
	t.Helper()
	if len(errs) != 1 || errs[0].Field != path || errs[0].Type != field.ErrorTypeForbidden {
		t.Errorf("errors %v, want one Forbidden on %s", errs, path)
	}
}

func TestCreateRefusesSecretsThePolicyRefuses(t *testing.T) {
	s := NewStrategy(runtime.NewScheme(), policy)
	ctx := context.Background()
	only(t, s.Validate(ctx, etcdBackend("annex-system", "etcd-client")), "spec.etcd.tlsSecretRef.namespace")
	only(t, s.Validate(ctx, postgresBackend("kube-system", "pg")), "spec.postgres.dsnSecretRef.namespace")
	only(t, s.Validate(ctx, etcdBackend(secretpolicy.DefaultNamespace, "annex-tls")), "spec.etcd.tlsSecretRef.name")
	only(t, s.Validate(ctx, postgresBackend(secretpolicy.DefaultNamespace, "annex-tls")), "spec.postgres.dsnSecretRef.name")
	for _, sb := range []*annex.StorageBackend{etcdBackend(secretpolicy.DefaultNamespace, "etcd-client"), postgresBackend(secretpolicy.DefaultNamespace, "pg")} {
		if errs := s.Validate(ctx, sb); len(errs) > 0 {
			t.Errorf("%s: %v, want it accepted", sb.Name, errs)
		}
	}
	// The zero policy allows no Secret at all.
	only(t, NewStrategy(runtime.NewScheme(), secretpolicy.Policy{}).Validate(ctx, postgresBackend(secretpolicy.DefaultNamespace, "pg")),
		"spec.postgres.dsnSecretRef.namespace")
}

func TestUpdateRefusesOnlyTheSecretsItChanges(t *testing.T) {
	s := NewStrategy(runtime.NewScheme(), policy)
	ctx := context.Background()
	// Written before the policy: a label may still change.
	old := postgresBackend("annex-system", "pg")
	labelled := old.DeepCopy()
	labelled.Labels = map[string]string{"team": "a"}
	if errs := s.ValidateUpdate(ctx, labelled, old); len(errs) > 0 {
		t.Errorf("a label change of a StorageBackend written before the policy: %v, want it accepted", errs)
	}
	// Pointing it at another refused Secret is refused.
	moved := old.DeepCopy()
	moved.Spec.Postgres.DSNSecretRef.Name = "pg2"
	only(t, s.ValidateUpdate(ctx, moved, old), "spec.postgres.dsnSecretRef.namespace")
	// And an allowed reference may not become a refused one.
	allowed := etcdBackend(secretpolicy.DefaultNamespace, "etcd-client")
	serving := allowed.DeepCopy()
	serving.Spec.Etcd.TLSSecretRef.Name = "annex-tls"
	only(t, s.ValidateUpdate(ctx, serving, allowed), "spec.etcd.tlsSecretRef.name")
}
