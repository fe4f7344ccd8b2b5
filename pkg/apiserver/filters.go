package apiserver

import (
	"net/http"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	"k8s.io/apiserver/pkg/endpoints/request"

	"annex.dev/annex/pkg/apis/annex"
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
			responsewriters.ErrorNegotiated(apierrors.NewServiceUnavailable(err.Error()), s, gv, w, req)
			return
		}
		handler.ServeHTTP(w, req)
	})
}
