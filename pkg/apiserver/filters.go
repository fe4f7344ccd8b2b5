package apiserver

import (
	"errors"
	"mime"
	"net/http"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/endpoints/handlers/negotiation"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	"k8s.io/apiserver/pkg/endpoints/request"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/storage/routing"
	"annex.dev/annex/pkg/storage/unavailable"
)

// withBackendCheck answers 503 Service Unavailable, at once and with the
// reason, to a request for a hosted type whose backend cannot serve it:
// missing, not ready, still connecting, or being changed (check says which,
// see routing.Router.Check). Without it the request would hang on an
// unreachable store or fail with the apiextensions server's bare "error
// resolving resource". It belongs inside authentication and authorization,
// so that only those allowed to use a type learn about its backend. isAnnex
// recognizes annex's own requests, which may read a type that moves.
func withBackendCheck(handler http.Handler, check func(group, resource string, fromAnnex bool) error, isAnnex func(user.Info) bool,
	s runtime.NegotiatedSerializer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		info, ok := request.RequestInfoFrom(req.Context())
		if !ok || !info.IsResourceRequest || info.APIGroup == "" || info.APIGroup == annex.GroupName ||
			info.APIGroup == apiextensionsv1.GroupName {
			handler.ServeHTTP(w, req)
			return
		}
		u, _ := request.UserFrom(req.Context())
		if err := check(info.APIGroup, info.Resource, u != nil && isAnnex(u)); err != nil {
			gv := schema.GroupVersion{Group: info.APIGroup, Version: info.APIVersion}
			responsewriters.ErrorNegotiated(backendCheckRefusal(err, info), s, gv, w, req)
			return
		}
		handler.ServeHTTP(w, req)
	})
}

// backendCheckRefusal is the 503 of withBackendCheck. Nothing of the request
// ran, so a write says it was not applied. While annex is starting, which
// passes within seconds, the answer carries a Retry-After, which client-go
// follows by itself; a backend that is missing, unready, unreachable or
// being changed is answered at once, so that kubectl fails with the reason
// instead of retrying for ten seconds.
func backendCheckRefusal(err error, info *request.RequestInfo) *apierrors.StatusError {
	msg := err.Error()
	switch info.Verb {
	case "create", "update", "patch", "delete", "deletecollection":
		msg += "; the write was not applied"
	}
	refusal := apierrors.NewServiceUnavailable(msg)
	refusal.ErrStatus.Details = &metav1.StatusDetails{Group: info.APIGroup, Kind: info.Resource}
	if errors.Is(err, routing.ErrStarting) {
		refusal.ErrStatus.Details.RetryAfterSeconds = unavailable.RetryAfterSeconds
	}
	return refusal
}

// withHostedMediaTypes answers 415 Unsupported Media Type to a create or
// update of a hosted object sent in protobuf. The apiextensions server
// lists protobuf among the media types of custom resources (for the
// meta.k8s.io types it answers with) but has no decoder of custom
// resources in it: such a request panics in the decoder, and the client
// sees its stream reset. The scale subresource, a typed autoscaling/v1
// Scale, reads protobuf and is left alone.
func withHostedMediaTypes(handler http.Handler, s runtime.NegotiatedSerializer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		info, ok := request.RequestInfoFrom(req.Context())
		if !ok || !info.IsResourceRequest || (info.Verb != "create" && info.Verb != "update") || info.Subresource == "scale" ||
			info.APIGroup == "" || info.APIGroup == annex.GroupName || info.APIGroup == apiextensionsv1.GroupName {
			handler.ServeHTTP(w, req)
			return
		}
		if mediaType, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err != nil || mediaType != runtime.ContentTypeProtobuf {
			handler.ServeHTTP(w, req)
			return
		}
		gv := schema.GroupVersion{Group: info.APIGroup, Version: info.APIVersion}
		err := negotiation.NewUnsupportedMediaTypeError([]string{runtime.ContentTypeJSON, runtime.ContentTypeYAML})
		responsewriters.ErrorNegotiated(err, s, gv, w, req)
	})
}
