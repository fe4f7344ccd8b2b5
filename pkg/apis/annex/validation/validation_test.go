package validation

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"annex.dev/annex/pkg/apis/annex"
)

func validHostedResource() *annex.HostedResource {
	return &annex.HostedResource{
		ObjectMeta: metav1.ObjectMeta{Name: "widgets.example.com"},
		Spec: annex.HostedResourceSpec{
			Group: "example.com",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "widgets", Singular: "widget", Kind: "Widget", ListKind: "WidgetList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{"size": {Type: "integer"}}},
					},
				}},
			}},
			Conversion: &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter},
			Storage:    annex.HostedResourceStorage{Backend: annex.DefaultStorageBackend},
		},
	}
}

// wantFields checks that errs name exactly the fields in want (and say why, with reason).
func wantFields(t *testing.T, errs field.ErrorList, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for _, e := range errs {
		got[e.Field] += e.Error() + "; "
	}
	for path, reason := range want {
		msg, ok := got[path]
		if !ok {
			t.Errorf("no error for %s; got %v", path, errs)
			continue
		}
		if !strings.Contains(msg, reason) {
			t.Errorf("error for %s = %q, want it to say %q", path, msg, reason)
		}
	}
	for path := range got {
		if _, ok := want[path]; !ok {
			t.Errorf("unexpected error for %s: %s", path, got[path])
		}
	}
}

func TestValidateHostedResource(t *testing.T) {
	tests := map[string]struct {
		mutate func(*annex.HostedResource)
		want   map[string]string
	}{
		"valid": {mutate: func(*annex.HostedResource) {}},
		"adopting its own CRD": {
			mutate: func(hr *annex.HostedResource) {
				hr.Spec.Adoption = &annex.Adoption{CustomResourceDefinition: "widgets.example.com"}
			},
		},
		"adopting another type's CRD": {
			mutate: func(hr *annex.HostedResource) {
				hr.Spec.Adoption = &annex.Adoption{CustomResourceDefinition: "gadgets.example.com"}
			},
			want: map[string]string{"spec.adoption.customResourceDefinition": "must be the CustomResourceDefinition of this type, widgets.example.com"},
		},
		"adopting no CRD": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Adoption = &annex.Adoption{} },
			want:   map[string]string{"spec.adoption.customResourceDefinition": "Required"},
		},
		"an adoption released at its creation": {
			mutate: func(hr *annex.HostedResource) {
				hr.Spec.Adoption = &annex.Adoption{CustomResourceDefinition: "widgets.example.com", Release: true}
			},
			want: map[string]string{"spec.adoption.release": "only once the adoption is Adopted"},
		},
		"an adoption whose cluster copies are deleted at its creation": {
			mutate: func(hr *annex.HostedResource) {
				hr.Spec.Adoption = &annex.Adoption{CustomResourceDefinition: "widgets.example.com", DeleteClusterCopies: true}
			},
			want: map[string]string{"spec.adoption.deleteClusterCopies": "only once the adoption is Adopted"},
		},
		"group without a dot": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Group, hr.Name = "example", "widgets.example" },
			want:   map[string]string{"spec.group": "at least one dot"},
		},
		"name is not plural.group": {
			mutate: func(hr *annex.HostedResource) { hr.Name = "gadgets.example.com" },
			want:   map[string]string{"metadata.name": `spec.names.plural+"."+spec.group`},
		},
		"kind not a DNS label plural": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Names.Plural, hr.Name = "Widgets", "Widgets.example.com" },
			want:   map[string]string{"metadata.name": "lower case", "spec.names.plural": "lower case"},
		},
		"two storage versions": {
			mutate: func(hr *annex.HostedResource) {
				v2 := *hr.Spec.Versions[0].DeepCopy()
				v2.Name = "v2"
				hr.Spec.Versions = append(hr.Spec.Versions, v2)
			},
			want: map[string]string{"spec.versions": "exactly one version marked as storage version"},
		},
		"no schema": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Versions[0].Schema = nil },
			want:   map[string]string{"spec.versions[0].schema.openAPIV3Schema": "Required"},
		},
		"a rule over the cost limit": {
			mutate: func(hr *annex.HostedResource) {
				spec := hr.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
				spec.Properties["words"] = apiextensionsv1.JSONSchemaProps{Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{
					Schema: &apiextensionsv1.JSONSchemaProps{Type: "string"}}}
				spec.XValidations = apiextensionsv1.ValidationRules{{Rule: "self.words.all(x, self.words.all(y, self.words.all(z, x + y + z != '')))"}}
				hr.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"] = spec
			},
			want: map[string]string{
				"spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule": "exceeds budget",
				"spec.versions[0].schema.openAPIV3Schema":                                                   "exceeds budget",
			},
		},
		"a printer column's path": {
			mutate: func(hr *annex.HostedResource) {
				hr.Spec.Versions[0].AdditionalPrinterColumns = []apiextensionsv1.CustomResourceColumnDefinition{{Name: "Size", Type: "integer", JSONPath: "spec.size"}}
			},
			want: map[string]string{"spec.versions[0].additionalPrinterColumns[0].jsonPath": "must be a simple json path"},
		},
		"annex's own group": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Group, hr.Name = "annex.dev", "widgets.annex.dev" },
			want:   map[string]string{"spec.group": "annex's own API"},
		},
		"a built-in group": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Group, hr.Name = "apps.k8s.io", "widgets.apps.k8s.io" },
			want: map[string]string{
				"spec.group": "built-in APIs",
				"metadata.annotations[api-approved.kubernetes.io]": "protected groups",
			},
		},
		"preserveUnknownFields": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.PreserveUnknownFields = true },
			want:   map[string]string{"spec.preserveUnknownFields": "x-kubernetes-preserve-unknown-fields"},
		},
		"backend not a DNS label": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Storage.Backend = "Big_Store" },
			want:   map[string]string{"spec.storage.backend": "RFC 1123 label"},
		},
		"no backend": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Storage.Backend = "" },
			want:   map[string]string{"spec.storage.backend": "Required"},
		},
		"no cache":   {mutate: func(hr *annex.HostedResource) { hr.Spec.Storage.Cache = annex.StorageCacheNone }},
		"lean cache": {mutate: func(hr *annex.HostedResource) { hr.Spec.Storage.Cache = annex.StorageCacheLean }},
		"an unknown cache": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Storage.Cache = "Everything" },
			want:   map[string]string{"spec.storage.cache": `supported values: "WatchCache", "Lean", "None"`},
		},
		"a cache budget": {mutate: func(hr *annex.HostedResource) { hr.Spec.Storage.CacheBudget = ptr.To(resource.MustParse("2Gi")) }},
		"a cache budget of a lean cache": {mutate: func(hr *annex.HostedResource) {
			hr.Spec.Storage.Cache, hr.Spec.Storage.CacheBudget = annex.StorageCacheLean, ptr.To(resource.MustParse("512Mi"))
		}},
		"a cache budget of zero": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Storage.CacheBudget = ptr.To(resource.MustParse("0")) },
			want:   map[string]string{"spec.storage.cacheBudget": "must be a positive quantity of bytes"},
		},
		"a negative cache budget": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Storage.CacheBudget = ptr.To(resource.MustParse("-1Gi")) },
			want:   map[string]string{"spec.storage.cacheBudget": "must be a positive quantity of bytes"},
		},
		"a cache budget of the watch cache": {
			mutate: func(hr *annex.HostedResource) {
				hr.Spec.Storage.Cache, hr.Spec.Storage.CacheBudget = annex.StorageCacheWatchCache, ptr.To(resource.MustParse("1Gi"))
			},
			want: map[string]string{"spec.storage.cacheBudget": "bounds the Lean cache only, and cache is WatchCache"},
		},
		"retention not positive": {
			mutate: func(hr *annex.HostedResource) {
				hr.Spec.Storage.Retention = &annex.RetentionPolicy{MaxAge: &metav1.Duration{Duration: -time.Hour}, MaxObjectsPerNamespace: ptr.To[int64](0)}
			},
			want: map[string]string{
				"spec.storage.retention.maxAge":                 "greater than zero",
				"spec.storage.retention.maxObjectsPerNamespace": "greater than zero",
			},
		},
		"retention maxAge under a second": {
			mutate: func(hr *annex.HostedResource) {
				hr.Spec.Storage.Retention = &annex.RetentionPolicy{MaxAge: &metav1.Duration{Duration: 500 * time.Millisecond}}
			},
			want: map[string]string{"spec.storage.retention.maxAge": "must be at least 1s"},
		},
		"retention with a bound of one": {
			mutate: func(hr *annex.HostedResource) {
				hr.Spec.Storage.Retention = &annex.RetentionPolicy{MaxAge: &metav1.Duration{Duration: time.Second}, MaxObjectsPerNamespace: ptr.To[int64](1)}
			},
		},
		"retention without a bound": {
			mutate: func(hr *annex.HostedResource) { hr.Spec.Storage.Retention = &annex.RetentionPolicy{} },
			want:   map[string]string{"spec.storage.retention": "set maxAge, maxObjectsPerNamespace or both"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			hr := validHostedResource()
			tc.mutate(hr)
			wantFields(t, ValidateHostedResource(context.Background(), hr), tc.want)
		})
	}
}

func TestValidateHostedResourceUpdate(t *testing.T) {
	old := validHostedResource()
	old.ResourceVersion = "1"

	changed := old.DeepCopy()
	changed.Spec.Versions[0].Schema.OpenAPIV3Schema.Description = "widgets"
	wantFields(t, ValidateHostedResourceUpdate(context.Background(), changed, old), nil)

	broken := old.DeepCopy()
	broken.Spec.Versions[0].Storage = false
	wantFields(t, ValidateHostedResourceUpdate(context.Background(), broken, old), map[string]string{
		"spec.versions": "exactly one version marked as storage version",
	})

	// A policy stored before a rule existed does not block other updates,
	// such as the removal of a finalizer, but a change of it is checked.
	stored := old.DeepCopy()
	stored.Spec.Storage.Retention = &annex.RetentionPolicy{}
	stored.Finalizers = []string{"annex.dev/hosted-objects"}
	unfinalized := stored.DeepCopy()
	unfinalized.Finalizers = nil
	wantFields(t, ValidateHostedResourceUpdate(context.Background(), unfinalized, stored), nil)
	retuned := stored.DeepCopy()
	retuned.Spec.Storage.Retention.MaxAge = &metav1.Duration{Duration: time.Millisecond}
	wantFields(t, ValidateHostedResourceUpdate(context.Background(), retuned, stored), map[string]string{
		"spec.storage.retention.maxAge": "at least 1s",
	})

	// An adoption is declared when the HostedResource is created, and stays.
	adopting := old.DeepCopy()
	adopting.Spec.Adoption = &annex.Adoption{CustomResourceDefinition: "widgets.example.com"}
	wantFields(t, ValidateHostedResourceUpdate(context.Background(), adopting, old), map[string]string{
		"spec.adoption": "cannot be added, changed or removed",
	})
	wantFields(t, ValidateHostedResourceUpdate(context.Background(), old, adopting), map[string]string{
		"spec.adoption": "cannot be added, changed or removed",
	})
	wantFields(t, ValidateHostedResourceUpdate(context.Background(), adopting.DeepCopy(), adopting), nil)
	renamed := adopting.DeepCopy()
	renamed.Spec.Adoption.CustomResourceDefinition = "gadgets.example.com"
	wantFields(t, ValidateHostedResourceUpdate(context.Background(), renamed, adopting), map[string]string{
		"spec.adoption": "cannot be added, changed or removed",
	})

	// release is set once the adoption is Adopted, and unset only while it
	// still is (a release not begun, or rolled back).
	for _, tc := range []struct {
		phase    annex.AdoptionPhase
		from, to bool
		want     string
	}{
		{phase: "", from: false, to: true, want: "only once the adoption is Adopted, not pending"},
		{phase: annex.AdoptionCopying, from: false, to: true, want: "only once the adoption is Adopted, not Copying"},
		{phase: annex.AdoptionSwitched, from: false, to: true, want: "only once the adoption is Adopted, not Switched"},
		{phase: annex.AdoptionFailed, from: false, to: true, want: "only once the adoption is Adopted, not Failed"},
		{phase: annex.AdoptionAdopted, from: false, to: true},
		{phase: annex.AdoptionAdopted, from: true, to: false},
		{phase: annex.AdoptionRollingBack, from: true, to: false, want: "cannot be unset once the release has begun (the adoption is RollingBack)"},
		{phase: annex.AdoptionReleased, from: true, to: false, want: "cannot be unset once the release has begun (the adoption is Released)"},
		{phase: annex.AdoptionRollingBack, from: true, to: true},
	} {
		t.Run(fmt.Sprintf("release %v to %v while %s", tc.from, tc.to, tc.phase), func(t *testing.T) {
			before := adopting.DeepCopy()
			before.Spec.Adoption.Release = tc.from
			if tc.phase != "" {
				before.Status.Adoption = &annex.AdoptionStatus{Phase: tc.phase}
			}
			after := before.DeepCopy()
			after.Spec.Adoption.Release = tc.to
			var want map[string]string
			if tc.want != "" {
				want = map[string]string{"spec.adoption.release": tc.want}
			}
			wantFields(t, ValidateHostedResourceUpdate(context.Background(), after, before), want)
		})
	}

	// deleteClusterCopies is set once the adoption is Adopted and no
	// release is asked for, and never unset; a release waits until the
	// deletion is complete.
	done := &annex.ClusterCopiesStatus{Total: 3, Deleted: 3, CompletionTime: &metav1.Time{}}
	for _, tc := range []struct {
		name                 string
		phase                annex.AdoptionPhase
		copies               *annex.ClusterCopiesStatus
		from, to             annex.Adoption
		wantField, wantError string
	}{
		{name: "set while Adopted", phase: annex.AdoptionAdopted, to: annex.Adoption{DeleteClusterCopies: true}},
		{name: "set while Copying", phase: annex.AdoptionCopying, to: annex.Adoption{DeleteClusterCopies: true},
			wantField: "spec.adoption.deleteClusterCopies", wantError: "only once the adoption is Adopted, not Copying"},
		{name: "set before the adoption began", to: annex.Adoption{DeleteClusterCopies: true},
			wantField: "spec.adoption.deleteClusterCopies", wantError: "only once the adoption is Adopted, not pending"},
		{name: "set while a release is asked for", phase: annex.AdoptionAdopted,
			from: annex.Adoption{Release: true}, to: annex.Adoption{Release: true, DeleteClusterCopies: true},
			wantField: "spec.adoption.deleteClusterCopies", wantError: "cannot be set while spec.adoption.release is"},
		{name: "set with release at once", phase: annex.AdoptionAdopted, to: annex.Adoption{Release: true, DeleteClusterCopies: true},
			wantField: "spec.adoption.deleteClusterCopies", wantError: "cannot be set while spec.adoption.release is"},
		{name: "unset during the deletion", phase: annex.AdoptionAdopted, copies: &annex.ClusterCopiesStatus{Total: 3, Deleted: 1},
			from:      annex.Adoption{DeleteClusterCopies: true},
			wantField: "spec.adoption.deleteClusterCopies", wantError: "cannot be unset"},
		{name: "unset after the deletion", phase: annex.AdoptionAdopted, copies: done,
			from:      annex.Adoption{DeleteClusterCopies: true},
			wantField: "spec.adoption.deleteClusterCopies", wantError: "cannot be unset"},
		{name: "release before the deletion began", phase: annex.AdoptionAdopted,
			from: annex.Adoption{DeleteClusterCopies: true}, to: annex.Adoption{DeleteClusterCopies: true, Release: true},
			wantField: "spec.adoption.release", wantError: "until the deletion of the cluster's copies (spec.adoption.deleteClusterCopies) is complete"},
		{name: "release during the deletion", phase: annex.AdoptionAdopted, copies: &annex.ClusterCopiesStatus{Total: 3, Deleted: 1},
			from: annex.Adoption{DeleteClusterCopies: true}, to: annex.Adoption{DeleteClusterCopies: true, Release: true},
			wantField: "spec.adoption.release", wantError: "until the deletion of the cluster's copies (spec.adoption.deleteClusterCopies) is complete"},
		{name: "release after the deletion", phase: annex.AdoptionAdopted, copies: done,
			from: annex.Adoption{DeleteClusterCopies: true}, to: annex.Adoption{DeleteClusterCopies: true, Release: true}},
		{name: "kept while RollingBack", phase: annex.AdoptionRollingBack, copies: done,
			from: annex.Adoption{DeleteClusterCopies: true, Release: true}, to: annex.Adoption{DeleteClusterCopies: true, Release: true}},
	} {
		t.Run("deleteClusterCopies "+tc.name, func(t *testing.T) {
			before := adopting.DeepCopy()
			before.Spec.Adoption.Release, before.Spec.Adoption.DeleteClusterCopies = tc.from.Release, tc.from.DeleteClusterCopies
			if tc.phase != "" {
				before.Status.Adoption = &annex.AdoptionStatus{Phase: tc.phase, ClusterCopies: tc.copies}
			}
			after := before.DeepCopy()
			after.Spec.Adoption.Release, after.Spec.Adoption.DeleteClusterCopies = tc.to.Release, tc.to.DeleteClusterCopies
			var want map[string]string
			if tc.wantField != "" {
				want = map[string]string{tc.wantField: tc.wantError}
			}
			wantFields(t, ValidateHostedResourceUpdate(context.Background(), after, before), want)
		})
	}
}

func TestValidateStorageBackend(t *testing.T) {
	secret := annex.SecretKeySelector{Namespace: "annex-system", Name: "pg", Key: "dsn"}
	tests := map[string]struct {
		sb   annex.StorageBackend
		want map[string]string
	}{
		"embedded": {sb: annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: annex.StorageBackendEmbedded}}},
		"etcd": {sb: annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: annex.StorageBackendEtcd, Etcd: &annex.EtcdStorage{
			Endpoints: []string{"https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"}, TLSSecretRef: &annex.SecretReference{Namespace: "annex-system", Name: "etcd-client"},
		}}}},
		"postgres": {sb: annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: annex.StorageBackendPostgres, Postgres: &annex.PostgresStorage{DSNSecretRef: secret}}}},
		"no type": {
			sb:   annex.StorageBackend{},
			want: map[string]string{"spec.type": "Required"},
		},
		"unknown type": {
			sb:   annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: "Redis"}},
			want: map[string]string{"spec.type": "Unsupported value"},
		},
		"etcd without its member": {
			sb:   annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: annex.StorageBackendEtcd}},
			want: map[string]string{"spec.etcd": "required when type is Etcd"},
		},
		"member of another type": {
			sb:   annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: annex.StorageBackendEmbedded, Postgres: &annex.PostgresStorage{DSNSecretRef: secret}}},
			want: map[string]string{"spec.postgres": "only be set when type is Postgres"},
		},
		"bad endpoints": {
			sb: annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: annex.StorageBackendEtcd, Etcd: &annex.EtcdStorage{
				Endpoints: []string{"etcd-0:2379", "https://etcd-1:2379/v3", "https://etcd-2:2379", "https://etcd-2:2379"},
			}}},
			want: map[string]string{
				"spec.etcd.endpoints[0]": "http or https URL",
				"spec.etcd.endpoints[1]": "no path",
				"spec.etcd.endpoints[3]": "Duplicate value",
			},
		},
		"no endpoints": {
			sb:   annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: annex.StorageBackendEtcd, Etcd: &annex.EtcdStorage{}}},
			want: map[string]string{"spec.etcd.endpoints": "Required"},
		},
		"plaintext endpoints": {
			sb: annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: annex.StorageBackendEtcd, Etcd: &annex.EtcdStorage{
				Endpoints: []string{"https://etcd-0:2379", "http://etcd-1:2379", "HTTP://etcd-2:2379"},
			}}},
			want: map[string]string{
				"spec.etcd.endpoints[1]": "an http:// endpoint is plaintext: annex would send the objects and etcd's credentials unencrypted; use https://, or set spec.etcd.insecure: true to allow plaintext",
				"spec.etcd.endpoints[2]": "set spec.etcd.insecure: true",
			},
		},
		"plaintext endpoints allowed": {
			sb: annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: annex.StorageBackendEtcd, Etcd: &annex.EtcdStorage{
				Endpoints: []string{"https://etcd-0:2379", "http://etcd-1:2379"}, Insecure: true,
			}}},
		},
		// Whether a connection string allows plaintext is known once
		// annex reads its Secret.
		"postgres allowing plaintext": {sb: annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: annex.StorageBackendPostgres, Postgres: &annex.PostgresStorage{
			DSNSecretRef: secret, Insecure: true,
		}}}},
		"incomplete secret reference": {
			sb: annex.StorageBackend{Spec: annex.StorageBackendSpec{Type: annex.StorageBackendPostgres, Postgres: &annex.PostgresStorage{
				DSNSecretRef: annex.SecretKeySelector{Name: "Bad_Name", Key: "a/b"},
			}}},
			want: map[string]string{
				"spec.postgres.dsnSecretRef.namespace": "Required",
				"spec.postgres.dsnSecretRef.name":      "RFC 1123 subdomain",
				"spec.postgres.dsnSecretRef.key":       "valid config key",
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			sb := tc.sb
			sb.Name = "backend"
			wantFields(t, ValidateStorageBackend(&sb), tc.want)
		})
	}

	t.Run("name is not a DNS label", func(t *testing.T) {
		sb := annex.StorageBackend{ObjectMeta: metav1.ObjectMeta{Name: "pg.example"}, Spec: annex.StorageBackendSpec{Type: annex.StorageBackendEmbedded}}
		wantFields(t, ValidateStorageBackend(&sb), map[string]string{"metadata.name": "must not contain dots"})
	})
	t.Run("type is immutable", func(t *testing.T) {
		old := annex.StorageBackend{ObjectMeta: metav1.ObjectMeta{Name: "b", ResourceVersion: "1"}, Spec: annex.StorageBackendSpec{Type: annex.StorageBackendEmbedded}}
		sb := *old.DeepCopy()
		sb.Spec = annex.StorageBackendSpec{Type: annex.StorageBackendPostgres, Postgres: &annex.PostgresStorage{DSNSecretRef: secret}}
		wantFields(t, ValidateStorageBackendUpdate(&sb, &old), map[string]string{"spec.type": "cannot be changed"})
	})
	t.Run("plaintext endpoints on update", func(t *testing.T) {
		plaintext := annex.StorageBackend{ObjectMeta: metav1.ObjectMeta{Name: "b", ResourceVersion: "1"}, Spec: annex.StorageBackendSpec{
			Type: annex.StorageBackendEtcd, Etcd: &annex.EtcdStorage{Endpoints: []string{"http://etcd-0:2379"}, Insecure: true},
		}}
		// Dropping insecure, or adding a plaintext endpoint without it, is refused.
		sb := *plaintext.DeepCopy()
		sb.Spec.Etcd.Insecure = false
		wantFields(t, ValidateStorageBackendUpdate(&sb, &plaintext), map[string]string{"spec.etcd.endpoints[0]": "set spec.etcd.insecure: true"})
		secure := *plaintext.DeepCopy()
		secure.Spec.Etcd = &annex.EtcdStorage{Endpoints: []string{"https://etcd-0:2379"}}
		sb = *secure.DeepCopy()
		sb.Spec.Etcd.Endpoints = append(sb.Spec.Etcd.Endpoints, "http://etcd-1:2379")
		wantFields(t, ValidateStorageBackendUpdate(&sb, &secure), map[string]string{"spec.etcd.endpoints[1]": "set spec.etcd.insecure: true"})
		// A StorageBackend stored before the rule keeps its endpoints
		// through an update of its labels (or finalizers).
		legacy := *plaintext.DeepCopy()
		legacy.Spec.Etcd.Insecure = false
		sb = *legacy.DeepCopy()
		sb.Labels = map[string]string{"team": "a"}
		wantFields(t, ValidateStorageBackendUpdate(&sb, &legacy), nil)
	})
}

// servingCRD is the internal CRD of validHostedResource as annex serves it:
// established, with objects stored in v1.
func servingCRD(hr *annex.HostedResource) *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: hr.Name, ResourceVersion: "7", Generation: 1},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: hr.Spec.Group, Names: hr.Spec.Names, Scope: hr.Spec.Scope, Versions: hr.Spec.Versions, Conversion: hr.Spec.Conversion,
		},
		Status: apiextensionsv1.CustomResourceDefinitionStatus{
			Conditions: []apiextensionsv1.CustomResourceDefinitionCondition{
				{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue},
				{Type: apiextensionsv1.NamesAccepted, Status: apiextensionsv1.ConditionTrue},
			},
			AcceptedNames:  hr.Spec.Names,
			StoredVersions: []string{"v1"},
		},
	}
}

func TestValidateHostedResourceAgainstCRD(t *testing.T) {
	ctx := context.Background()
	live := servingCRD(validHostedResource())

	t.Run("a change the type can take", func(t *testing.T) {
		hr := validHostedResource()
		hr.Spec.Versions[0].AdditionalPrinterColumns = []apiextensionsv1.CustomResourceColumnDefinition{{Name: "Size", Type: "integer", JSONPath: ".spec.size"}}
		wantFields(t, ValidateHostedResourceAgainstCRD(ctx, hr, live), nil)
	})
	t.Run("the scope of an established type", func(t *testing.T) {
		hr := validHostedResource()
		hr.Spec.Scope = apiextensionsv1.ClusterScoped
		// The HostedResource alone does not see it.
		old := validHostedResource()
		old.ResourceVersion, hr.ResourceVersion = "1", "1"
		wantFields(t, ValidateHostedResourceUpdate(ctx, hr, old), nil)
		wantFields(t, ValidateHostedResourceAgainstCRD(ctx, hr, live), map[string]string{"spec.scope": "immutable"})
	})
	t.Run("a version with stored objects replaced", func(t *testing.T) {
		hr := validHostedResource()
		hr.Spec.Versions[0].Name = "v2"
		wantFields(t, ValidateHostedResourceAgainstCRD(ctx, hr, live), map[string]string{"spec.versions": "stored objects in (v1)"})
	})
}
