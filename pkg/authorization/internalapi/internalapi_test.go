package internalapi

import (
	"context"
	"testing"

	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	authorizerunion "k8s.io/apiserver/pkg/authorization/union"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/rest"
)

// loopbackServer registers a loopback token the way a completed
// genericapiserver configuration does, and returns the token and the
// resulting authentication and authorization.
func loopbackServer(t *testing.T) (string, *genericapiserver.AuthenticationInfo, *genericapiserver.AuthorizationInfo) {
	t.Helper()
	const token = "loopback-token"
	authn := &genericapiserver.AuthenticationInfo{
		// Some other way in, as the delegated authenticator would be.
		Authenticator: authenticatorfactory.NewFromTokens(map[string]*user.DefaultInfo{
			"admin-token": {Name: "admin", Groups: []string{user.SystemPrivilegedGroup}},
		}, nil),
	}
	authz := &genericapiserver.AuthorizationInfo{Authorizer: authorizerfactory.NewPrivilegedGroups(user.SystemPrivilegedGroup)}
	genericapiserver.AuthorizeClientBearerToken(&rest.Config{BearerToken: token}, authn, authz)
	return token, authn, authz
}

func TestLoopbackUser(t *testing.T) {
	token, authn, _ := loopbackServer(t)
	got, err := LoopbackUser(authn.Authenticator, token)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetName() != user.APIServerUser || got.GetUID() == "" {
		t.Errorf("loopback user = %q uid %q, want %q with a UID", got.GetName(), got.GetUID(), user.APIServerUser)
	}
	if _, err := LoopbackUser(authn.Authenticator, "not-the-token"); err == nil {
		t.Error("a token the server does not know gave a loopback user")
	}
	if _, err := LoopbackUser(authn.Authenticator, ""); err == nil {
		t.Error("an empty token gave a loopback user")
	}
}

func TestAuthorizer(t *testing.T) {
	token, authn, authz := loopbackServer(t)
	loopback, err := LoopbackUser(authn.Authenticator, token)
	if err != nil {
		t.Fatal(err)
	}
	guard, err := NewAuthorizer(loopback)
	if err != nil {
		t.Fatal(err)
	}
	chain := authorizerunion.New(guard, authz.Authorizer)

	masters := []string{user.SystemPrivilegedGroup, user.AllAuthenticated}
	crd := func(u user.Info, verb, subresource string) authorizer.AttributesRecord {
		return authorizer.AttributesRecord{
			User: u, Verb: verb, APIGroup: Group, APIVersion: "v1",
			Resource: "customresourcedefinitions", Subresource: subresource, Name: "widgets.example.com",
			ResourceRequest: true,
		}
	}
	cases := []struct {
		name  string
		attrs authorizer.AttributesRecord
		want  authorizer.Decision
	}{
		{"the loopback user", crd(loopback, "delete", ""), authorizer.DecisionAllow},
		{"the loopback user, status", crd(loopback, "patch", "status"), authorizer.DecisionAllow},
		{"system:masters", crd(&user.DefaultInfo{Name: "admin", Groups: masters}, "patch", ""), authorizer.DecisionDeny},
		{"system:masters, status", crd(&user.DefaultInfo{Name: "admin", Groups: masters}, "update", "status"), authorizer.DecisionDeny},
		{"the loopback name with another UID", crd(&user.DefaultInfo{Name: user.APIServerUser, UID: "guess", Groups: masters}, "get", ""), authorizer.DecisionDeny},
		{"the loopback name with no UID", crd(&user.DefaultInfo{Name: user.APIServerUser, Groups: masters}, "list", ""), authorizer.DecisionDeny},
		{"no user", crd(nil, "list", ""), authorizer.DecisionDeny},
		{"another group", authorizer.AttributesRecord{
			User: &user.DefaultInfo{Name: "admin", Groups: masters}, Verb: "delete", APIGroup: "annex.dev", APIVersion: "v1alpha1",
			Resource: "hostedresources", ResourceRequest: true,
		}, authorizer.DecisionAllow},
		{"discovery of the group", authorizer.AttributesRecord{
			User: &user.DefaultInfo{Name: "admin", Groups: masters}, Verb: "get", Path: "/apis/apiextensions.k8s.io/v1",
		}, authorizer.DecisionAllow},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, reason, err := chain.Authorize(context.Background(), tc.attrs)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("decision = %v (%q), want %v", got, reason, tc.want)
			}
			if got == authorizer.DecisionDeny && reason != Reason {
				t.Errorf("reason = %q, want %q", reason, Reason)
			}
		})
	}
}

func TestNewAuthorizerNeedsAnIdentity(t *testing.T) {
	for _, u := range []user.Info{nil, &user.DefaultInfo{Name: user.APIServerUser}, &user.DefaultInfo{UID: "x"}} {
		if _, err := NewAuthorizer(u); err == nil {
			t.Errorf("NewAuthorizer(%v) accepted an incomplete identity", u)
		}
	}
}
