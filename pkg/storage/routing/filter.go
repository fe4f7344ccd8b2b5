package routing

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

// WithBackendCheck answers 503 Service Unavailable, at once and with the
// reason, to a request for a hosted type whose backend cannot serve it:
// missing, not ready, still connecting, or being changed. Without it the
// request would hang on an unreachable store or fail with the
// apiextensions server's bare "error resolving resource". It belongs inside
// authentication and authorization, so that only those allowed to use a
// type learn about its backend.
func (r *Router) WithBackendCheck(handler http.Handler, s runtime.NegotiatedSerializer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		info, ok := request.RequestInfoFrom(req.Context())
		if !ok || !info.IsResourceRequest || info.APIGroup == "" || info.APIGroup == annex.GroupName ||
			info.APIGroup == apiextensionsv1.GroupName {
			handler.ServeHTTP(w, req)
			return
		}
		fromAnnex := false
		if u, ok := request.UserFrom(req.Context()); ok && u.GetName() == user.APIServerUser {
			fromAnnex = true
		}
		if err := r.Check(info.APIGroup, info.Resource, fromAnnex); err != nil {
			gv := schema.GroupVersion{Group: info.APIGroup, Version: info.APIVersion}
			responsewriters.ErrorNegotiated(apierrors.NewServiceUnavailable(err.Error()), s, gv, w, req)
			return
		}
		handler.ServeHTTP(w, req)
	})
}
