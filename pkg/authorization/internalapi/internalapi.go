// Package internalapi keeps annex's internal CustomResourceDefinition API
// (apiextensions.k8s.io) to annex itself.
//
// annex serves its hosted types through an embedded apiextensions-apiserver,
// whose CRDs are annex's own bookkeeping: the hostedresource controller
// writes them from HostedResources, and deleting one deletes every object of
// its type. In aggregated mode annex asks the cluster to authorize each
// request, and the cluster's RBAC for customresourcedefinitions is about the
// cluster's CRDs; it must not reach annex's. So every request for the
// apiextensions.k8s.io group is refused unless it comes from annex's own
// loopback client, whatever the cluster (or, in standalone mode, the
// system:masters group) would allow.
package internalapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// Reason is why a request for the internal CRD API is refused; it ends the
// 403's message.
const Reason = "the CustomResourceDefinitions of annex are internal to it: " +
	"declare, change and delete hosted types through hostedresources.annex.dev"

// Group is the API group kept to annex.
const Group = apiextensionsv1.GroupName

// Authorizer denies every request for Group but the loopback user's, and has
// no opinion on anything else. Put it in front of the server's authorizer in
// a union.
type Authorizer struct {
	name, uid string
}

var _ authorizer.Authorizer = &Authorizer{}

// NewAuthorizer returns an Authorizer that lets through only the user with
// the loopback user's name and UID. The UID is random per process (see
// genericapiserver.AuthorizeClientBearerToken), so no other identity, not
// even one asserted by a front proxy or an impersonation with the same name,
// can match it.
func NewAuthorizer(loopback user.Info) (*Authorizer, error) {
	if loopback == nil || loopback.GetName() == "" || loopback.GetUID() == "" {
		return nil, errors.New("the loopback user has no name or no UID")
	}
	return &Authorizer{name: loopback.GetName(), uid: loopback.GetUID()}, nil
}

// Authorize implements authorizer.Authorizer.
func (a *Authorizer) Authorize(_ context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	if !attrs.IsResourceRequest() || attrs.GetAPIGroup() != Group {
		return authorizer.DecisionNoOpinion, "", nil
	}
	if u := attrs.GetUser(); u != nil && u.GetName() == a.name && u.GetUID() == a.uid {
		return authorizer.DecisionNoOpinion, "", nil
	}
	return authorizer.DecisionDeny, Reason, nil
}

// LoopbackUser returns the identity the server's authenticator gives a
// request carrying the loopback client's bearer token: the user
// genericapiserver registered for it when the configuration was completed.
// Call it with the completed configuration's authenticator.
func LoopbackUser(authn authenticator.Request, token string) (user.Info, error) {
	if authn == nil {
		return nil, errors.New("the server has no authenticator")
	}
	if token == "" {
		return nil, errors.New("the loopback client has no bearer token")
	}
	req, err := http.NewRequest(http.MethodGet, "/", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, ok, err := authn.AuthenticateRequest(req)
	if err != nil {
		return nil, fmt.Errorf("authenticating the loopback token: %w", err)
	}
	if !ok || resp == nil || resp.User == nil {
		return nil, errors.New("the loopback token does not authenticate")
	}
	return resp.User, nil
}
