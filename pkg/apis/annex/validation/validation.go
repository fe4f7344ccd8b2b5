// Package validation checks annex.dev objects and reports every problem with
// its field path.
package validation

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"k8s.io/apiextensions-apiserver/pkg/apihelpers"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"annex.dev/annex/pkg/apis/annex"
)

// reservedGroups are API groups a HostedResource may never declare: annex's
// own group, and the groups the cluster serves itself.
var reservedGroups = []string{annex.GroupName}

// ValidateHostedResource validates a new HostedResource. The CRD parts are
// checked by the upstream CustomResourceDefinition validation, so a
// HostedResource is accepted exactly when the same CRD would be.
func ValidateHostedResource(ctx context.Context, hr *annex.HostedResource) field.ErrorList {
	crd, errs := toCRD(hr)
	if len(errs) > 0 {
		return errs
	}
	allErrs := hostedPaths(crdErrors(apiextensionsvalidation.ValidateCustomResourceDefinition(ctx, crd)))
	allErrs = append(allErrs, validateGroup(hr.Spec.Group, field.NewPath("spec", "group"))...)
	allErrs = append(allErrs, validateStorage(&hr.Spec.Storage, nil, field.NewPath("spec", "storage"))...)
	allErrs = append(allErrs, validateAdoption(hr, field.NewPath("spec", "adoption"))...)
	return allErrs
}

// validateAdoption checks that an adopted CRD is the type's own: the same
// plural and group, so the same name.
func validateAdoption(hr *annex.HostedResource, fldPath *field.Path) field.ErrorList {
	if hr.Spec.Adoption == nil {
		return nil
	}
	name := hr.Spec.Adoption.CustomResourceDefinition
	want := hr.Spec.Names.Plural + "." + hr.Spec.Group
	switch {
	case name == "":
		return field.ErrorList{field.Required(fldPath.Child("customResourceDefinition"), "the name of the cluster's CustomResourceDefinition to adopt")}
	case hr.Spec.Adoption.Release:
		return field.ErrorList{field.Forbidden(fldPath.Child("release"), "can be set only once the adoption is Adopted")}
	case hr.Spec.Adoption.DeleteClusterCopies:
		return field.ErrorList{field.Forbidden(fldPath.Child("deleteClusterCopies"), "can be set only once the adoption is Adopted")}
	case name != want:
		return field.ErrorList{field.Invalid(fldPath.Child("customResourceDefinition"), name,
			fmt.Sprintf("must be the CustomResourceDefinition of this type, %s (spec.names.plural and spec.group)", want))}
	}
	return nil
}

// validateAdoptionUpdate keeps spec.adoption as it was created, but for
// release and deleteClusterCopies. release may be set true once the
// adoption is Adopted, and false again while it is still Adopted (a release
// that has not begun, or that failed and was rolled back).
// deleteClusterCopies may be set true once the adoption is Adopted and no
// release is asked for, and never unset: what it deleted cannot come back.
// release waits until that deletion is complete.
func validateAdoptionUpdate(hr, old *annex.HostedResource, fldPath *field.Path) field.ErrorList {
	if hr.Spec.Adoption == nil || old.Spec.Adoption == nil {
		if hr.Spec.Adoption != nil || old.Spec.Adoption != nil {
			return field.ErrorList{field.Forbidden(fldPath, "cannot be added, changed or removed once the HostedResource exists")}
		}
		return nil
	}
	if hr.Spec.Adoption.CustomResourceDefinition != old.Spec.Adoption.CustomResourceDefinition {
		return field.ErrorList{field.Forbidden(fldPath, "cannot be added, changed or removed once the HostedResource exists")}
	}
	var status annex.AdoptionStatus
	if old.Status.Adoption != nil {
		status = *old.Status.Adoption
	}
	phase := status.Phase
	var allErrs field.ErrorList
	release, deleteCopies := hr.Spec.Adoption.Release, hr.Spec.Adoption.DeleteClusterCopies
	switch {
	case deleteCopies == old.Spec.Adoption.DeleteClusterCopies:
	case !deleteCopies:
		allErrs = append(allErrs, field.Forbidden(fldPath.Child("deleteClusterCopies"),
			"cannot be unset: the cluster's copies it deleted cannot come back"))
	case phase != annex.AdoptionAdopted:
		allErrs = append(allErrs, field.Forbidden(fldPath.Child("deleteClusterCopies"), fmt.Sprintf(
			"can be set only once the adoption is Adopted, not %s", phaseOrPending(phase))))
	case release:
		allErrs = append(allErrs, field.Forbidden(fldPath.Child("deleteClusterCopies"),
			"cannot be set while spec.adoption.release is: a release writes the objects back into the cluster"))
	}
	if release == old.Spec.Adoption.Release {
		return allErrs
	}
	switch {
	case phase != annex.AdoptionAdopted && release:
		allErrs = append(allErrs, field.Forbidden(fldPath.Child("release"), fmt.Sprintf(
			"can be set only once the adoption is Adopted, not %s", phaseOrPending(phase))))
	case phase != annex.AdoptionAdopted:
		allErrs = append(allErrs, field.Forbidden(fldPath.Child("release"), fmt.Sprintf(
			"cannot be unset once the release has begun (the adoption is %s)", phaseOrPending(phase))))
	case release && old.Spec.Adoption.DeleteClusterCopies && (status.ClusterCopies == nil || status.ClusterCopies.CompletionTime == nil):
		allErrs = append(allErrs, field.Forbidden(fldPath.Child("release"),
			"cannot be set until the deletion of the cluster's copies (spec.adoption.deleteClusterCopies) is complete: status.adoption.clusterCopies.completionTime"))
	}
	return allErrs
}

func phaseOrPending(phase annex.AdoptionPhase) string {
	if phase == "" {
		return "pending"
	}
	return string(phase)
}

// ValidateHostedResourceUpdate validates an update of a HostedResource's spec and metadata.
func ValidateHostedResourceUpdate(ctx context.Context, hr, old *annex.HostedResource) field.ErrorList {
	crd, errs := toCRD(hr)
	if len(errs) > 0 {
		return errs
	}
	oldCRD, errs := toCRD(old)
	if len(errs) > 0 {
		return errs
	}
	allErrs := hostedPaths(crdErrors(apiextensionsvalidation.ValidateCustomResourceDefinitionUpdate(ctx, crd, oldCRD)))
	allErrs = append(allErrs, validateGroup(hr.Spec.Group, field.NewPath("spec", "group"))...)
	allErrs = append(allErrs, validateStorage(&hr.Spec.Storage, &old.Spec.Storage, field.NewPath("spec", "storage"))...)
	allErrs = append(allErrs, validateAdoptionUpdate(hr, old, field.NewPath("spec", "adoption"))...)
	return allErrs
}

// ValidateHostedResourceAgainstCRD validates an update of a HostedResource
// against the internal CRD that serves its type now, as the upstream
// validation would validate the same update of that CRD: once the type is
// established its scope and kind cannot change, and every version that has
// stored objects (the CRD's status.storedVersions) must stay. The
// HostedResource's own validation cannot see that state.
func ValidateHostedResourceAgainstCRD(ctx context.Context, hr *annex.HostedResource, live *apiextensionsv1.CustomResourceDefinition) field.ErrorList {
	updated := live.DeepCopy()
	updated.Spec.Group, updated.Spec.Names, updated.Spec.Scope = hr.Spec.Group, hr.Spec.Names, hr.Spec.Scope
	updated.Spec.Versions, updated.Spec.Conversion = hr.Spec.Versions, hr.Spec.Conversion
	updated.Spec.PreserveUnknownFields = hr.Spec.PreserveUnknownFields
	var crd, old apiextensions.CustomResourceDefinition
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(updated, &crd, nil); err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("spec"), "", fmt.Sprintf("cannot be read as a CustomResourceDefinition spec: %v", err))}
	}
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(live, &old, nil); err != nil {
		return field.ErrorList{field.InternalError(field.NewPath("spec"), fmt.Errorf("reading the type's CustomResourceDefinition: %w", err))}
	}
	var allErrs field.ErrorList
	storedVersionsKept := true
	for _, err := range apiextensionsvalidation.ValidateCustomResourceDefinitionUpdate(ctx, &crd, &old) {
		switch {
		case strings.HasPrefix(err.Field, "spec"):
			allErrs = append(allErrs, hostedPaths(field.ErrorList{err})...)
		case strings.HasPrefix(err.Field, "status.storedVersions") && storedVersionsKept:
			storedVersionsKept = false
			// A stored version missing from the new versions.
			allErrs = append(allErrs, field.Invalid(field.NewPath("spec", "versions"), versionNames(hr.Spec.Versions), fmt.Sprintf(
				"must keep every version the type has stored objects in (%s): migrate the objects to another version first",
				strings.Join(live.Status.StoredVersions, ", "))))
		}
	}
	return allErrs
}

func versionNames(versions []apiextensionsv1.CustomResourceDefinitionVersion) []string {
	names := make([]string, 0, len(versions))
	for _, v := range versions {
		names = append(names, v.Name)
	}
	return names
}

// ValidateHostedResourceStatusUpdate validates an update of a HostedResource's status.
func ValidateHostedResourceStatusUpdate(hr, old *annex.HostedResource) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMetaUpdate(&hr.ObjectMeta, &old.ObjectMeta, field.NewPath("metadata"))
	return append(allErrs, validateStatus(hr.Status.ObservedGeneration, hr.Status.Conditions, field.NewPath("status"))...)
}

// toCRD builds the internal CustomResourceDefinition that the HostedResource
// declares, through the upstream v1 conversion.
func toCRD(hr *annex.HostedResource) (*apiextensions.CustomResourceDefinition, field.ErrorList) {
	in := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: hr.ObjectMeta,
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group:                 hr.Spec.Group,
			Names:                 hr.Spec.Names,
			Scope:                 hr.Spec.Scope,
			Versions:              hr.Spec.Versions,
			Conversion:            hr.Spec.Conversion,
			PreserveUnknownFields: hr.Spec.PreserveUnknownFields,
		},
	}
	// A HostedResource has no stored versions of its own yet; the storage
	// version stands in so the CRD's status rules hold.
	for _, v := range hr.Spec.Versions {
		if v.Storage {
			in.Status.StoredVersions = append(in.Status.StoredVersions, v.Name)
		}
	}
	out := &apiextensions.CustomResourceDefinition{}
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(in, out, nil); err != nil {
		return nil, field.ErrorList{field.Invalid(field.NewPath("spec"), "", fmt.Sprintf("cannot be read as a CustomResourceDefinition spec: %v", err))}
	}
	return out, nil
}

// crdErrors drops the errors about the synthesized CRD's status, which a
// HostedResource does not have; the spec errors already say what is wrong.
func crdErrors(errs field.ErrorList) field.ErrorList {
	var out field.ErrorList
	for _, err := range errs {
		if strings.HasPrefix(err.Field, "status") {
			continue
		}
		out = append(out, err)
	}
	return out
}

// sharedVersionFields are the fields of the versions that the internal
// CustomResourceDefinition holds once, at the top of its spec, when every
// version has the same value.
var sharedVersionFields = map[string]string{
	"spec.validation":               "schema",
	"spec.subresources":             "subresources",
	"spec.additionalPrinterColumns": "additionalPrinterColumns",
	"spec.selectableFields":         "selectableFields",
}

// hostedPaths names the fields of errs as a HostedResource has them. The
// upstream validation reads the internal CustomResourceDefinition, which
// holds a schema (subresources, printer columns, selectable fields) that
// every version shares once, as spec.validation; a HostedResource has it
// in each version, so the error names the first version's.
func hostedPaths(errs field.ErrorList) field.ErrorList {
	for _, err := range errs {
		for shared, versioned := range sharedVersionFields {
			if rest, ok := strings.CutPrefix(err.Field, shared); ok && (rest == "" || rest[0] == '.' || rest[0] == '[') {
				err.Field = "spec.versions[0]." + versioned + rest
				break
			}
		}
		// The internal printer column's field is JSONPath; the API's jsonPath.
		if rest, ok := strings.CutSuffix(err.Field, ".JSONPath"); ok {
			err.Field = rest + ".jsonPath"
		}
	}
	return errs
}

func validateGroup(group string, fldPath *field.Path) field.ErrorList {
	for _, reserved := range reservedGroups {
		if group == reserved || strings.HasSuffix(group, "."+reserved) {
			return field.ErrorList{field.Invalid(fldPath, group, fmt.Sprintf("the group %q is annex's own API", reserved))}
		}
	}
	if apihelpers.IsProtectedCommunityGroup(group) {
		return field.ErrorList{field.Invalid(fldPath, group, "groups under k8s.io and kubernetes.io belong to the cluster's built-in APIs")}
	}
	return nil
}

// validateStorage checks spec.storage; old is the stored object's on an update, nil on a create.
func validateStorage(s, old *annex.HostedResourceStorage, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if s.Backend == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("backend"), `name a StorageBackend, or "default"`))
	} else {
		for _, msg := range validation.IsDNS1123Label(s.Backend) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("backend"), s.Backend, msg))
		}
	}
	switch s.Cache {
	case "", annex.StorageCacheWatchCache, annex.StorageCacheLean, annex.StorageCacheNone:
	default:
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("cache"), s.Cache,
			[]annex.StorageCache{annex.StorageCacheWatchCache, annex.StorageCacheLean, annex.StorageCacheNone}))
	}
	if b := s.CacheBudget; b != nil {
		path := fldPath.Child("cacheBudget")
		switch {
		case b.Sign() <= 0:
			allErrs = append(allErrs, field.Invalid(path, b.String(), "must be a positive quantity of bytes such as 2Gi; leave it out for annex's --lean-cache-budget-per-type"))
		case s.Cache != "" && s.Cache != annex.StorageCacheLean:
			allErrs = append(allErrs, field.Invalid(path, b.String(), fmt.Sprintf("bounds the Lean cache only, and cache is %s", s.Cache)))
		}
	}
	// An unchanged policy is not checked again, so that rules added later
	// never block an update (a finalizer's removal) of an existing object.
	if old == nil || !apiequality.Semantic.DeepEqual(s.Retention, old.Retention) {
		allErrs = append(allErrs, validateRetention(s.Retention, fldPath.Child("retention"))...)
	}
	return allErrs
}

// minRetentionMaxAge is the shortest maxAge: a creation timestamp has a
// resolution of one second, so a shorter one cannot be honoured.
const minRetentionMaxAge = time.Second

func validateRetention(r *annex.RetentionPolicy, fldPath *field.Path) field.ErrorList {
	if r == nil {
		return nil
	}
	var allErrs field.ErrorList
	if r.MaxAge == nil && r.MaxObjectsPerNamespace == nil {
		allErrs = append(allErrs, field.Required(fldPath, "set maxAge, maxObjectsPerNamespace or both; to keep every object, leave retention out"))
	}
	if r.MaxAge != nil && r.MaxAge.Duration < minRetentionMaxAge {
		msg := "must be greater than zero"
		if r.MaxAge.Duration > 0 {
			msg = fmt.Sprintf("must be at least %s: creation timestamps, which ages are measured from, have a resolution of one second", minRetentionMaxAge)
		}
		allErrs = append(allErrs, field.Invalid(fldPath.Child("maxAge"), r.MaxAge.Duration.String(), msg))
	}
	if r.MaxObjectsPerNamespace != nil && *r.MaxObjectsPerNamespace <= 0 {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("maxObjectsPerNamespace"), *r.MaxObjectsPerNamespace, "must be greater than zero"))
	}
	return allErrs
}

// ValidateStorageBackend validates a new StorageBackend.
func ValidateStorageBackend(sb *annex.StorageBackend) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMeta(&sb.ObjectMeta, false, apimachineryvalidation.NameIsDNSLabel, field.NewPath("metadata"))
	return append(allErrs, validateStorageBackendSpec(&sb.Spec, nil, field.NewPath("spec"))...)
}

// ValidateStorageBackendUpdate validates an update of a StorageBackend's spec and metadata.
func ValidateStorageBackendUpdate(sb, old *annex.StorageBackend) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMetaUpdate(&sb.ObjectMeta, &old.ObjectMeta, field.NewPath("metadata"))
	allErrs = append(allErrs, validateStorageBackendSpec(&sb.Spec, &old.Spec, field.NewPath("spec"))...)
	if sb.Spec.Type != old.Spec.Type {
		allErrs = append(allErrs, field.Forbidden(field.NewPath("spec", "type"), "cannot be changed; create another StorageBackend instead"))
	}
	return allErrs
}

// ValidateStorageBackendStatusUpdate validates an update of a StorageBackend's status.
func ValidateStorageBackendStatusUpdate(sb, old *annex.StorageBackend) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMetaUpdate(&sb.ObjectMeta, &old.ObjectMeta, field.NewPath("metadata"))
	return append(allErrs, validateStatus(sb.Status.ObservedGeneration, sb.Status.Conditions, field.NewPath("status"))...)
}

// validateStorageBackendSpec checks a StorageBackend's spec; old is the
// stored object's on an update, nil on a create.
func validateStorageBackendSpec(spec, old *annex.StorageBackendSpec, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	etcdPath, postgresPath := fldPath.Child("etcd"), fldPath.Child("postgres")
	switch spec.Type {
	case annex.StorageBackendEmbedded:
	case annex.StorageBackendEtcd:
		if spec.Etcd == nil {
			allErrs = append(allErrs, field.Required(etcdPath, "required when type is Etcd"))
		}
	case annex.StorageBackendPostgres:
		if spec.Postgres == nil {
			allErrs = append(allErrs, field.Required(postgresPath, "required when type is Postgres"))
		}
	case "":
		allErrs = append(allErrs, field.Required(fldPath.Child("type"), "one of Embedded, Etcd, Postgres"))
	default:
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("type"), spec.Type,
			[]annex.StorageBackendType{annex.StorageBackendEmbedded, annex.StorageBackendEtcd, annex.StorageBackendPostgres}))
	}
	if spec.Etcd != nil {
		if spec.Type != annex.StorageBackendEtcd {
			allErrs = append(allErrs, field.Forbidden(etcdPath, "may only be set when type is Etcd"))
		}
		var oldEtcd *annex.EtcdStorage
		if old != nil {
			oldEtcd = old.Etcd
		}
		allErrs = append(allErrs, validateEtcd(spec.Etcd, oldEtcd, etcdPath)...)
	}
	if spec.Postgres != nil {
		if spec.Type != annex.StorageBackendPostgres {
			allErrs = append(allErrs, field.Forbidden(postgresPath, "may only be set when type is Postgres"))
		}
		allErrs = append(allErrs, validateSecretKey(&spec.Postgres.DSNSecretRef, postgresPath.Child("dsnSecretRef"))...)
	}
	return allErrs
}

// validateEtcd checks spec.etcd; old is the stored object's on an update,
// nil on a create or when it had none.
func validateEtcd(e, old *annex.EtcdStorage, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	// An http:// endpoint carries the objects and etcd's credentials
	// unencrypted: it is allowed only when the spec asks for it. Endpoints
	// left as they were are not checked again, so that a StorageBackend
	// written before the rule can still be relabelled, released by its
	// finalizer, or deleted; annex does not reach its store until it allows
	// plaintext, and its status says so.
	plaintextChecked := old == nil || e.Insecure != old.Insecure || !slices.Equal(e.Endpoints, old.Endpoints)
	if len(e.Endpoints) == 0 {
		allErrs = append(allErrs, field.Required(fldPath.Child("endpoints"), "at least one client URL of the etcd cluster"))
	}
	seen := map[string]bool{}
	for i, ep := range e.Endpoints {
		p := fldPath.Child("endpoints").Index(i)
		if seen[ep] {
			allErrs = append(allErrs, field.Duplicate(p, ep))
			continue
		}
		seen[ep] = true
		u, err := url.Parse(ep)
		switch {
		case err != nil:
			allErrs = append(allErrs, field.Invalid(p, ep, err.Error()))
		case u.Scheme != "http" && u.Scheme != "https":
			allErrs = append(allErrs, field.Invalid(p, ep, "must be an http or https URL, for example https://etcd-0.etcd:2379"))
		case u.Host == "":
			allErrs = append(allErrs, field.Invalid(p, ep, "must name a host"))
		case u.Path != "" && u.Path != "/", u.RawQuery != "", u.User != nil:
			allErrs = append(allErrs, field.Invalid(p, ep, "must be scheme://host:port with no path, query or credentials"))
		case u.Scheme == "http" && !e.Insecure && plaintextChecked:
			allErrs = append(allErrs, field.Invalid(p, ep, fmt.Sprintf(
				"an http:// endpoint is plaintext: annex would send the objects and etcd's credentials unencrypted; use https://, or set %s: true to allow plaintext",
				fldPath.Child("insecure"))))
		}
	}
	if ref := e.TLSSecretRef; ref != nil {
		allErrs = append(allErrs, validateSecretName(ref.Namespace, ref.Name, fldPath.Child("tlsSecretRef"))...)
	}
	return allErrs
}

func validateSecretKey(ref *annex.SecretKeySelector, fldPath *field.Path) field.ErrorList {
	allErrs := validateSecretName(ref.Namespace, ref.Name, fldPath)
	if ref.Key == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("key"), "the key of the Secret that holds the value"))
	} else {
		for _, msg := range validation.IsConfigMapKey(ref.Key) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("key"), ref.Key, msg))
		}
	}
	return allErrs
}

func validateSecretName(namespace, name string, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if namespace == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("namespace"), ""))
	} else {
		for _, msg := range validation.IsDNS1123Label(namespace) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("namespace"), namespace, msg))
		}
	}
	if name == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("name"), ""))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(name) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("name"), name, msg))
		}
	}
	return allErrs
}

func validateStatus(observedGeneration int64, conditions []metav1.Condition, fldPath *field.Path) field.ErrorList {
	allErrs := metav1validation.ValidateConditions(conditions, fldPath.Child("conditions"))
	if observedGeneration < 0 {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("observedGeneration"), observedGeneration, "must not be negative"))
	}
	return allErrs
}
