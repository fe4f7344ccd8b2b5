package apiserver

import (
	"net/http"
	"strings"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metainternalversionscheme "k8s.io/apimachinery/pkg/apis/meta/internalversion/scheme"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	endpointsmetrics "k8s.io/apiserver/pkg/endpoints/metrics"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/util/apihelpers"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"annex.dev/annex/pkg/storage/lean"
)

// Why a get of a type kept lean was not answered from its encoding, beyond
// the reasons of the lists; the values of the metric's label "answer".
const (
	leanGetStale   = "stale"   // the cache had not received the store's current revision within leanGetWait
	leanGetMissing = "missing" // the cache does not hold the object: the upstream handler answers, a 404 as a rule
)

// leanGetWait is how long a get waits for the lean cache to catch up with
// the store's current revision before the upstream handler answers it: a
// progress notification takes a few milliseconds, a read of the store,
// decoded and encoded again, about as long and a good deal of CPU.
const leanGetWait = 100 * time.Millisecond

var (
	leanGets = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "annex",
		Subsystem: "lean",
		Name:      "get_requests_total",
		Help: "Gets of hosted types kept lean, by answer: \"encoded\" for those written from the cache's encoding, " +
			"else why the upstream handler answered (stale, missing, not-served, deprecated, media-type, options, audit, error, outdated, not-started).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"group", "version", "resource", "answer"})
	registerLeanGetsOnce sync.Once
)

// withLeanGets answers the JSON gets of the latest state of an object of a
// type kept lean (no resourceVersion) from the cache's encoding of the
// object, as the upstream handler would answer them after reading the store
// but without reading the object from the store, decoding it and encoding
// it again; see lean.Storage.GetEncoded for when the cache answers. The
// request must be one the upstream handler answers with that JSON, byte for
// byte, as for withLeanLists; anything else goes on to it. It belongs
// inside authentication, authorization and the backend check.
func withLeanGets(handler http.Handler, lists *lean.Registry, crds func(name string) (*apiextensionsv1.CustomResourceDefinition, error)) http.Handler {
	registerLeanGetsOnce.Do(func() { legacyregistry.MustRegister(leanGets) })
	return withLeanReads(handler, "get", leanGets, lists, crds, leanGet)
}

// leanGet reads the object a get asks for from the lean cache, or says why
// the upstream handler answers it instead.
func leanGet(req *http.Request, info *request.RequestInfo, registered lean.Registered,
	crds func(name string) (*apiextensionsv1.CustomResourceDefinition, error)) (runtime.Object, string) {
	crd, why := leanServable(req, info, registered, crds)
	if why != "" {
		return nil, why
	}
	if !plainJSON(req) {
		return nil, leanListMediaType
	}
	// The get options as the upstream get handler reads them: only a get
	// of the latest is answered here.
	opts := metav1.GetOptions{}
	if err := metainternalversionscheme.ParameterCodec.DecodeParameters(req.URL.Query(), metav1.SchemeGroupVersion, &opts); err != nil ||
		opts.ResourceVersion != "" {
		return nil, leanListOptions
	}
	// The object's key as the type's registry store makes it; a name or a
	// namespace it refuses goes to the upstream handler, which says why.
	keyFunc := registry.NoNamespaceKeyFunc
	if crd.Spec.Scope == apiextensionsv1.NamespaceScoped {
		keyFunc = registry.NamespaceKeyFunc
	}
	key, err := keyFunc(request.WithNamespace(req.Context(), info.Namespace), "", info.Name)
	if err != nil {
		return nil, leanListNotServed
	}
	s := registered.Storage
	obj, stale, err := s.GetEncoded(req.Context(), s.ResourcePrefix()+key, leanGetWait)
	switch {
	case err != nil:
		return nil, leanListError
	case stale:
		return nil, leanGetStale
	case obj == nil:
		return nil, leanGetMissing
	}
	return obj, leanListEncoded
}

// serveEncoded writes what was read from the lean cache: a list or an
// object from the encodings, in JSON, or a list of metadata as the upstream
// handler writes a list it turned into metadata; instrumented as the
// apiextensions server instruments its handlers.
func serveEncoded(w http.ResponseWriter, req *http.Request, info *request.RequestInfo, obj runtime.Object) {
	endpointsmetrics.InstrumentHandlerFunc(strings.ToUpper(info.Verb), info.APIGroup, info.APIVersion, info.Resource, "",
		endpointsmetrics.CleanScope(info), endpointsmetrics.APIServerComponent, false, "",
		func(w http.ResponseWriter, req *http.Request) {
			request.TrackSerializeResponseObjectLatency(req.Context(), func() {
				if list, ok := obj.(*metav1.PartialObjectMetadataList); ok {
					responsewriters.WriteObjectNegotiated(apihelpers.GetMetaInternalVersionCodecs(), metadataListRestrictions{},
						metav1.SchemeGroupVersion, w, req, http.StatusOK, list, false)
					return
				}
				responsewriters.SerializeObject("application/json", lean.JSONEncoder{}, w, req, http.StatusOK, obj)
			})
		})(w, req)
}
