package apiserver

import (
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	apiextensionshelpers "k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metainternalversionscheme "k8s.io/apimachinery/pkg/apis/meta/internalversion/scheme"
	metainternalversionvalidation "k8s.io/apimachinery/pkg/apis/meta/internalversion/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	"k8s.io/apiserver/pkg/audit"
	"k8s.io/apiserver/pkg/endpoints/handlers/negotiation"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/util/apihelpers"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/storage/lean"
)

// Why a list of a type kept lean was not answered from its encodings; the
// values of the metric's label "answer", with "encoded" for those that were.
const (
	leanListEncoded    = "encoded"
	leanListMetadata   = "metadata"    // answered as PartialObjectMetadataList, from the encodings' metadata
	leanListNotServed  = "not-served"  // the type's definition does not serve it as listed: the upstream handler says why
	leanListDeprecated = "deprecated"  // a deprecated version, whose answers carry a warning
	leanListMediaType  = "media-type"  // neither plain JSON nor metadata only: YAML, a Table, or pretty-printed JSON
	leanListOptions    = "options"     // list options the upstream handler refuses, or a field or shard selector
	leanListAudit      = "audit"       // an audit policy that records response bodies
	leanListError      = "error"       // the cache refused the list: the upstream handler answers the error
	leanListOutdated   = "outdated"    // the cache was made for another generation of the definition
	leanListNotStarted = "not-started" // annex's routing has not started
)

var (
	leanLists = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "annex",
		Subsystem: "lean",
		Name:      "list_requests_total",
		Help: "Lists of hosted types kept lean, by answer: \"encoded\" for those written from the cache's encodings, " +
			"\"metadata\" for those answered as PartialObjectMetadataList from the encodings' metadata, " +
			"else why the upstream handler answered (not-served, deprecated, media-type, options, audit, error, outdated, not-started).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "version", "resource", "answer"})
	registerLeanListsOnce sync.Once
)

// withLeanLists answers the JSON lists of the types kept lean from their
// cached encodings, written between the list's own fields (see
// lean.EncodedList), as the upstream handler would answer them but
// without decoding, copying and encoding each item again; and the lists
// asked for as metadata only (PartialObjectMetadataList, in JSON or
// protobuf: the garbage collector's, the namespace controller's, metadata
// informers') from the metadata of the encodings, without decoding the
// rest of each object.
//
// It answers only where the upstream handler's answer is that list, byte
// for byte: a served, established version that is not deprecated, plain
// JSON or metadata only, list options the upstream handler accepts without
// a field or shard selector, and no audit of response bodies. Anything else, and a list the
// cache refuses (a 410 for an expired continue token, say), goes on to the
// upstream handler, which answers it itself. It belongs inside
// authentication, authorization and the backend check.
func withLeanLists(handler http.Handler, lists *lean.Registry, crds func(name string) (*apiextensionsv1.CustomResourceDefinition, error)) http.Handler {
	registerLeanListsOnce.Do(func() { legacyregistry.MustRegister(leanLists) })
	return withLeanReads(handler, "list", leanLists, lists, crds, leanList)
}

// withLeanReads answers the requests of verb for the types kept lean with
// what read reads from the lean cache, counting them by answer in answers;
// read answers nil, and why, to leave a request to the upstream handler.
func withLeanReads(handler http.Handler, verb string, answers *metrics.CounterVec, lists *lean.Registry,
	crds func(name string) (*apiextensionsv1.CustomResourceDefinition, error),
	read func(*http.Request, *request.RequestInfo, lean.Registered, func(string) (*apiextensionsv1.CustomResourceDefinition, error)) (runtime.Object, string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		info, ok := request.RequestInfoFrom(req.Context())
		if !ok || !info.IsResourceRequest || info.Verb != verb || info.Subresource != "" || info.APIGroup == "" ||
			info.APIGroup == annex.GroupName || info.APIGroup == apiextensionsv1.GroupName {
			handler.ServeHTTP(w, req)
			return
		}
		gvr := schema.GroupVersionResource{Group: info.APIGroup, Version: info.APIVersion, Resource: info.Resource}
		registered, ok := lists.Get(gvr)
		if !ok {
			handler.ServeHTTP(w, req)
			return
		}
		obj, answer := read(req, info, registered, crds)
		answers.WithLabelValues(gvr.Group, gvr.Version, gvr.Resource, answer).Inc()
		if obj == nil {
			handler.ServeHTTP(w, req)
			return
		}
		serveEncoded(w, req, info, obj)
	})
}

// leanList reads the list a request asks for from the lean cache (a
// *lean.EncodedList, or a *metav1.PartialObjectMetadataList for metadata
// only), or says why the upstream handler answers it instead.
func leanList(req *http.Request, info *request.RequestInfo, registered lean.Registered,
	crds func(name string) (*apiextensionsv1.CustomResourceDefinition, error)) (runtime.Object, string) {
	crd, why := leanServable(req, info, registered, crds)
	if why != "" {
		return nil, why
	}
	namespaced := crd.Spec.Scope == apiextensionsv1.NamespaceScoped
	metadataOnly := metadataList(req)
	if !metadataOnly && !plainJSON(req) {
		return nil, leanListMediaType
	}

	// The list options as the upstream list handler reads them.
	opts := metainternalversion.ListOptions{}
	if err := metainternalversionscheme.ParameterCodec.DecodeParameters(req.URL.Query(), metav1.SchemeGroupVersion, &opts); err != nil {
		return nil, leanListOptions
	}
	watchList := utilfeature.DefaultFeatureGate.Enabled(features.WatchList)
	metainternalversion.SetListOptionsDefaults(&opts, watchList)
	if errs := metainternalversionvalidation.ValidateListOptions(&opts, watchList); len(errs) > 0 || opts.Watch ||
		opts.FieldSelector != nil && !opts.FieldSelector.Empty() || opts.ShardSelector != "" {
		return nil, leanListOptions
	}
	label := labels.Everything()
	if opts.LabelSelector != nil {
		label = opts.LabelSelector
	}
	// As the type's registry store lists: its key root, and its predicate.
	s := registered.Storage
	key := s.ResourcePrefix()
	if namespaced && info.Namespace != "" {
		key += "/" + info.Namespace
	}
	pred := s.Predicate(label, fields.Everything())
	pred.Limit, pred.Continue = opts.Limit, opts.Continue
	listOpts := storage.ListOptions{
		ResourceVersion:      opts.ResourceVersion,
		ResourceVersionMatch: opts.ResourceVersionMatch,
		Predicate:            pred,
		Recursive:            true,
	}
	if metadataOnly {
		list, err := s.ListMetadata(req.Context(), key, listOpts)
		if err != nil {
			return nil, leanListError
		}
		return list, leanListMetadata
	}
	list, err := s.ListEncoded(req.Context(), key, listOpts, registered.ListKind)
	if err != nil {
		return nil, leanListError
	}
	return list, leanListEncoded
}

// leanServable returns the definition of the type a request reads, or why
// the request is left to the upstream handler: what the apiextensions
// server checks before it serves a read (the version served, the names
// accepted, the scope), a cache made for another generation of the
// definition, a deprecated version (whose answers carry a warning), and an
// audit policy that records response bodies.
func leanServable(req *http.Request, info *request.RequestInfo, registered lean.Registered,
	crds func(name string) (*apiextensionsv1.CustomResourceDefinition, error)) (*apiextensionsv1.CustomResourceDefinition, string) {
	crd, err := crds(info.Resource + "." + info.APIGroup)
	if err != nil {
		return nil, leanListNotStarted
	}
	if crd.UID != registered.UID || crd.Generation != registered.Generation {
		return nil, leanListOutdated
	}
	namespaced := crd.Spec.Scope == apiextensionsv1.NamespaceScoped
	if !namespaced && info.Namespace != "" || !apiextensionshelpers.HasServedCRDVersion(crd, info.APIVersion) ||
		!apiextensionshelpers.IsCRDConditionTrue(crd, apiextensionsv1.NamesAccepted) && !apiextensionshelpers.IsCRDConditionTrue(crd, apiextensionsv1.Established) {
		return nil, leanListNotServed
	}
	for _, v := range crd.Spec.Versions {
		if v.Name == info.APIVersion && v.Deprecated {
			return nil, leanListDeprecated
		}
	}
	if ac := audit.AuditContextFrom(req.Context()); ac != nil && !ac.GetEventLevel().Less(auditinternal.LevelRequestResponse) {
		return nil, leanListAudit
	}
	return crd, ""
}

// metadataListRestrictions allows the one transformation the lean lists
// answer: a list into a PartialObjectMetadataList of meta.k8s.io/v1.
type metadataListRestrictions struct{}

func (metadataListRestrictions) AllowsMediaTypeTransform(_, _ string, target *schema.GroupVersionKind) bool {
	return target == nil || *target == metav1.SchemeGroupVersion.WithKind("PartialObjectMetadataList")
}
func (metadataListRestrictions) AllowsServerVersion(string) bool  { return false }
func (metadataListRestrictions) AllowsStreamSchema(s string) bool { return s == "watch" }

// metadataList says that the upstream handler would answer a request with
// a PartialObjectMetadataList of meta.k8s.io/v1 in JSON or protobuf: the
// media type it would choose from the Accept header, as it chooses, asks
// for that. Other media types (YAML, CBOR) and versions (meta.k8s.io/v1beta1)
// are left to it.
func metadataList(req *http.Request) bool {
	mediaType, ok := negotiation.NegotiateMediaTypeOptions(req.Header.Get("Accept"),
		apihelpers.GetMetaInternalVersionCodecs().SupportedMediaTypes(), metadataListRestrictions{})
	if !ok || mediaType.Convert == nil {
		return false
	}
	switch mediaType.Accepted.MediaType {
	case runtime.ContentTypeJSON, runtime.ContentTypeProtobuf:
		return true
	}
	return false
}

// plainJSON says that the apiextensions server would answer a request in
// plain JSON: it accepts only JSON (or anything), without parameters (a
// Table, metadata only, a version of either), and does not ask for the
// JSON pretty-printed (as curl, wget and browsers are answered).
func plainJSON(req *http.Request) bool {
	for _, accept := range req.Header.Values("Accept") {
		for clause := range strings.SplitSeq(accept, ",") {
			if clause = strings.TrimSpace(clause); clause == "" {
				continue
			}
			mediaType, params, err := mime.ParseMediaType(clause)
			if err != nil || len(params) > 0 || mediaType != "application/json" && mediaType != "*/*" {
				return false
			}
		}
	}
	if strings.Contains(req.URL.RawQuery, "pretty") {
		if pretty := req.URL.Query().Get("pretty"); pretty != "" {
			on, _ := strconv.ParseBool(pretty)
			return !on
		}
	}
	userAgent := req.UserAgent()
	return !strings.HasPrefix(userAgent, "curl") && !strings.HasPrefix(userAgent, "Wget") && !strings.HasPrefix(userAgent, "Mozilla/5.0")
}
