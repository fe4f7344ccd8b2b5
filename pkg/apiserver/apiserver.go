// Package apiserver composes annex's API servers: the annex.dev server is
// the head of the delegation chain, the hosted-resource server (the embedded
// apiextensions-apiserver) follows it, and the delegate given to New ends it.
//
// The configuration flows one way, as in the upstream servers: the command's
// options build a Config (starting annex's own stores, the only side effect
// before New), Complete fills in its defaults, and New composes the whole
// server: the chain, its filters (the guard of the internal CRD API, the
// check of each hosted type's backend), storage routing, the controllers,
// the warmup of the hosted types' storage, and every post-start hook,
// shutdown hook and readiness check they need. AnnexServer.Run serves until
// its context is done, then closes the backends and the stores, in that
// order.
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"

	apiextensionsapiserver "k8s.io/apiextensions-apiserver/pkg/apiserver"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apiserver/pkg/authentication/user"
	authorizerunion "k8s.io/apiserver/pkg/authorization/union"
	discoveryendpoint "k8s.io/apiserver/pkg/endpoints/discovery/aggregated"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/install"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/authorization/internalapi"
	"annex.dev/annex/pkg/controllers"
	annexclientset "annex.dev/annex/pkg/generated/clientset/versioned"
	annexinformers "annex.dev/annex/pkg/generated/informers/externalversions"
	hostedresourcestorage "annex.dev/annex/pkg/registry/annex/hostedresource/storage"
	storagebackendstorage "annex.dev/annex/pkg/registry/annex/storagebackend/storage"
	"annex.dev/annex/pkg/registry/core"
	"annex.dev/annex/pkg/storage/lean"
	"annex.dev/annex/pkg/storage/routing"
	"annex.dev/annex/pkg/storage/secretpolicy"
)

var (
	// Scheme holds annex.dev's types and the unversioned meta types.
	Scheme = runtime.NewScheme()
	// Codecs encode and decode Scheme's types.
	Codecs = serializer.NewCodecFactory(Scheme)
)

func init() {
	install.Install(Scheme)

	// The meta types every API server answers with.
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
	unversioned := schema.GroupVersion{Group: "", Version: "v1"}
	Scheme.AddUnversionedTypes(unversioned,
		&metav1.Status{},
		&metav1.APIVersions{},
		&metav1.APIGroupList{},
		&metav1.APIGroup{},
		&metav1.APIResourceList{},
	)
}

// Config is the configuration of annex's chain of servers.
type Config struct {
	// GenericConfig configures the annex.dev server, the head of the chain.
	GenericConfig *genericapiserver.RecommendedConfig
	// HostedResources configures the embedded apiextensions-apiserver that
	// serves the hosted types; the annex.dev server delegates to it.
	HostedResources *apiextensionsapiserver.Config
	// Standalone serves /api/v1 namespaces and finalizes them, for
	// standalone mode where no cluster does.
	Standalone bool
	// AdminKubeconfig, in standalone mode, writes the admin's kubeconfig
	// for the address annex serves on, once it serves.
	AdminKubeconfig func(addr net.Addr) error
	// LeanEncodedLists answers the JSON lists of the types kept lean from
	// their cached encodings (see withLeanLists).
	LeanEncodedLists bool
	// LeanEncodedGets answers the JSON gets of the types kept lean from
	// their cached encodings when the cache is current (see withLeanGets).
	LeanEncodedGets bool
	// LeanCacheBudget bounds the memory of the lean caches.
	LeanCacheBudget lean.Budget
	// Router is the hosted types' RESTOptionsGetter (HostedResources uses
	// it); the server gives it the listers it reads.
	Router *routing.Router
	// Controllers configure annex's controllers, which New runs on the
	// server's loopback client.
	Controllers controllers.Options
	// Stores are annex's own stores, started for this configuration; Run
	// closes them last.
	Stores Stores
	// StorageSecrets says which Secrets a StorageBackend may name; one that
	// names another is refused with 422 when it is written.
	StorageSecrets secretpolicy.Policy
}

// Stores are the stores a configuration started.
type Stores interface {
	// Failed delivers the error of a store that stopped on its own.
	Failed() <-chan error
	// Close stops them.
	Close()
}

type completedConfig struct {
	GenericConfig   genericapiserver.CompletedConfig
	HostedResources apiextensionsapiserver.CompletedConfig
	Standalone      bool
	AdminKubeconfig func(addr net.Addr) error
	Router          *routing.Router
	Controllers     controllers.Options
	Stores          Stores
	StorageSecrets  secretpolicy.Policy
	// LeanEncodedLists, LeanEncodedGets and LeanCacheBudget are Config's.
	LeanEncodedLists bool
	LeanEncodedGets  bool
	LeanCacheBudget  lean.Budget
}

// CompletedConfig is a Config whose defaults are filled in.
type CompletedConfig struct {
	*completedConfig
}

// Complete fills in the fields that were not set.
func (cfg *Config) Complete() CompletedConfig {
	// Both servers publish into one aggregated discovery document, which the
	// head serves at /apis: without this, hosted groups would be missing.
	if cfg.GenericConfig.AggregatedDiscoveryGroupManager == nil {
		cfg.GenericConfig.AggregatedDiscoveryGroupManager = discoveryendpoint.NewResourceManager("apis")
	}
	cfg.HostedResources.GenericConfig.AggregatedDiscoveryGroupManager = cfg.GenericConfig.AggregatedDiscoveryGroupManager
	if tracker := cfg.GenericConfig.StorageObjectCountTracker; tracker != nil && cfg.Controllers.ObjectStats == nil {
		cfg.Controllers.ObjectStats = tracker.Get
	}
	if cfg.Router != nil && cfg.Controllers.Objects == nil {
		cfg.Controllers.Objects = cfg.Router.RawObjects
	}
	return CompletedConfig{&completedConfig{
		GenericConfig:    cfg.GenericConfig.Complete(),
		HostedResources:  cfg.HostedResources.Complete(),
		Standalone:       cfg.Standalone,
		AdminKubeconfig:  cfg.AdminKubeconfig,
		Router:           cfg.Router,
		Controllers:      cfg.Controllers,
		Stores:           cfg.Stores,
		StorageSecrets:   cfg.StorageSecrets,
		LeanEncodedLists: cfg.LeanEncodedLists,
		LeanEncodedGets:  cfg.LeanEncodedGets,
		LeanCacheBudget:  cfg.LeanCacheBudget,
	}}
}

// AnnexServer serves the annex.dev API group and, through its delegate, the hosted types.
type AnnexServer struct {
	GenericAPIServer *genericapiserver.GenericAPIServer
	// HostedResources is the embedded apiextensions-apiserver.
	HostedResources *apiextensionsapiserver.CustomResourceDefinitions

	router *routing.Router
	stores Stores
	// failed receives the error of a controller that stopped annex.
	failed chan error
}

// New returns the chain annex.dev server -> hosted-resource server -> delegate.
func (c completedConfig) New(delegate genericapiserver.DelegationTarget) (*AnnexServer, error) {
	hosted, err := c.HostedResources.New(delegate)
	if err != nil {
		return nil, fmt.Errorf("creating the hosted-resource server: %w", err)
	}
	// After Complete, which registers the loopback user.
	loopback, err := loopbackUser(c.GenericConfig)
	if err != nil {
		return nil, err
	}
	if err := guardInternalAPI(c.GenericConfig, loopback); err != nil {
		return nil, err
	}
	// Innermost, after authentication and authorization: a request for a
	// hosted type whose backend cannot serve gets a 503 with the reason;
	// past that check, a hosted object sent in protobuf gets a 415, and
	// the lists of types kept lean are answered from their encodings.
	isAnnex := func(u user.Info) bool { return u.GetName() == loopback.GetName() && u.GetUID() == loopback.GetUID() }
	build := c.GenericConfig.BuildHandlerChainFunc
	c.GenericConfig.BuildHandlerChainFunc = func(handler http.Handler, gc *genericapiserver.Config) http.Handler {
		if c.LeanEncodedLists {
			handler = withLeanLists(handler, c.Router.Lean(), c.Router.CRD)
		}
		if c.LeanEncodedGets {
			handler = withLeanGets(handler, c.Router.Lean(), c.Router.CRD)
		}
		handler = withHostedMediaTypes(handler, gc.Serializer)
		return build(withBackendCheck(handler, c.Router.Check, isAnnex, gc.Serializer), gc)
	}
	// No connection is accepted before the CAs of client certificates are
	// loaded: until then the cluster's users would be taken as anonymous.
	var cas authenticationCAs
	if rh := c.GenericConfig.Authentication.RequestHeaderConfig; rh != nil {
		cas.requestHeader = rh.CAContentProvider
	}
	if serving := c.GenericConfig.SecureServing; serving != nil && serving.Listener != nil {
		cas.serving = serving.ClientCA
		serving.Listener = newCAGatedListener(serving.Listener, cas.missing, caLoadTimeout, caLoadPoll)
	}
	genericServer, err := c.GenericConfig.New("annex-apiserver", hosted.GenericAPIServer)
	if err != nil {
		return nil, err
	}
	if err := genericServer.AddReadyzChecks(cas.requestHeaderCheck()); err != nil {
		return nil, err
	}

	apiGroupInfo := genericapiserver.NewDefaultAPIGroupInfo(annex.GroupName, Scheme, metav1.ParameterCodec, Codecs)
	optsGetter := c.GenericConfig.RESTOptionsGetter

	hostedResources, hostedResourcesStatus, err := hostedresourcestorage.NewREST(Scheme, optsGetter)
	if err != nil {
		return nil, fmt.Errorf("creating the storage of hostedresources: %w", err)
	}
	storageBackends, storageBackendsStatus, err := storagebackendstorage.NewREST(Scheme, optsGetter, c.StorageSecrets)
	if err != nil {
		return nil, fmt.Errorf("creating the storage of storagebackends: %w", err)
	}
	apiGroupInfo.VersionedResourcesStorageMap[v1alpha1.SchemeGroupVersion.Version] = map[string]rest.Storage{
		"hostedresources":        hostedResources,
		"hostedresources/status": hostedResourcesStatus,
		"storagebackends":        storageBackends,
		"storagebackends/status": storageBackendsStatus,
	}
	if err := genericServer.InstallAPIGroup(&apiGroupInfo); err != nil {
		return nil, fmt.Errorf("installing the annex.dev API group: %w", err)
	}
	if c.Standalone {
		if err := core.InstallLegacyAPI(genericServer, optsGetter); err != nil {
			return nil, fmt.Errorf("installing /api/v1 namespaces: %w", err)
		}
	}
	if err := startRouting(c.Router, genericServer, hosted); err != nil {
		return nil, err
	}
	budget := c.LeanCacheBudget
	budget.OfType = func(gr schema.GroupResource) (int64, bool) { return typeCacheBudget(c.Router, gr) }
	budgets := lean.NewBudgets(c.Router.Lean().Storages, budget)
	if err := genericServer.AddPostStartHook("lean-cache-budget", func(ctx genericapiserver.PostStartHookContext) error {
		go budgets.Run(ctx)
		return nil
	}); err != nil {
		return nil, err
	}
	s := &AnnexServer{GenericAPIServer: genericServer, HostedResources: hosted, router: c.Router, stores: c.Stores, failed: make(chan error, 1)}
	fail := func(err error) {
		select {
		case s.failed <- err:
		default:
		}
	}
	if err := installControllers(genericServer, c.Controllers, c.Standalone, c.Router, fail); err != nil {
		return nil, err
	}
	if c.AdminKubeconfig != nil {
		addr := c.GenericConfig.SecureServing.Listener.Addr()
		if err := genericServer.AddPostStartHook("write-admin-kubeconfig", func(genericapiserver.PostStartHookContext) error {
			if err := c.AdminKubeconfig(addr); err != nil {
				return fmt.Errorf("writing the admin kubeconfig: %w", err)
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// loopbackUser is the identity of annex's loopback client: its requests are
// annex's own.
func loopbackUser(c genericapiserver.CompletedConfig) (user.Info, error) {
	if c.LoopbackClientConfig == nil {
		return nil, errors.New("annex needs a loopback client")
	}
	loopback, err := internalapi.LoopbackUser(c.Authentication.Authenticator, c.LoopbackClientConfig.BearerToken)
	if err != nil {
		return nil, fmt.Errorf("finding annex's loopback user: %w", err)
	}
	return loopback, nil
}

// guardInternalAPI puts internalapi's authorizer in front of the head's:
// only annex's loopback client may use the internal CRD API. The head's
// handler chain authorizes every request of the chain (the delegates are
// reached behind it), so this one place covers the hosted-resource server.
func guardInternalAPI(c genericapiserver.CompletedConfig, loopback user.Info) error {
	if c.Authorization.Authorizer == nil {
		return errors.New("annex needs an authorizer to keep its internal CRD API to itself")
	}
	guard, err := internalapi.NewAuthorizer(loopback)
	if err != nil {
		return fmt.Errorf("guarding the internal CRD API: %w", err)
	}
	c.Authorization.Authorizer = authorizerunion.New(guard, c.Authorization.Authorizer)
	return nil
}

// startRouting gives the router the CRDs of the hosted-resource server's own
// informer and annex.dev's HostedResources and StorageBackends, read through
// loopback; annex is ready once they have synced.
func startRouting(router *routing.Router, server *genericapiserver.GenericAPIServer, hosted *apiextensionsapiserver.CustomResourceDefinitions) error {
	client, err := annexclientset.NewForConfig(server.LoopbackClientConfig)
	if err != nil {
		return fmt.Errorf("creating the loopback client of storage routing: %w", err)
	}
	factory := annexinformers.NewSharedInformerFactory(client, 0)
	hostedResources := factory.Annex().V1alpha1().HostedResources()
	backends := factory.Annex().V1alpha1().StorageBackends()
	crds := hosted.Informers.Apiextensions().V1().CustomResourceDefinitions()
	hrInformer, sbInformer, crdInformer := hostedResources.Informer(), backends.Informer(), crds.Informer()
	synced := func() bool { return hrInformer.HasSynced() && sbInformer.HasSynced() && crdInformer.HasSynced() }
	router.SetListers(crds.Lister(), hostedResources.Lister(), backends.Lister(), synced)
	if err := server.AddPostStartHook("start-storage-routing", func(ctx genericapiserver.PostStartHookContext) error {
		factory.Start(ctx.Done())
		return nil
	}); err != nil {
		return err
	}
	return server.AddReadyzChecks(healthz.NamedCheck("storage-routing", func(*http.Request) error {
		if !synced() {
			return errors.New("reading the hosted types and storage backends")
		}
		return nil
	}))
}

// Run serves until ctx is done, or until a store or a controller fails,
// and shuts down gracefully: the server first, then the backends the hosted
// types were routed to, then annex's own stores.
func (s *AnnexServer) Run(ctx context.Context) error {
	defer func() {
		if s.stores != nil {
			s.stores.Close()
		}
	}()
	defer s.router.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var storeFailed <-chan error
	if s.stores != nil {
		storeFailed = s.stores.Failed()
	}
	go func() {
		select {
		case err := <-storeFailed:
			klog.FromContext(ctx).Error(err, "A store of annex failed; shutting down")
			cancel(err)
		case err := <-s.failed:
			cancel(err)
		case <-ctx.Done():
		}
	}()
	if err := s.PrepareRun().RunWithContext(ctx); err != nil {
		return err
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Runner runs a prepared server until its context is done.
type Runner interface {
	RunWithContext(ctx context.Context) error
}

// PrepareRun prepares the chain to run. Only the head of the chain serves
// /openapi/v2 and /openapi/v3, so the hosted-resource server's OpenAPI
// controllers are pointed at the head's documents: the hosted types' schemas
// are then published next to annex.dev's, where kubectl explain and the
// cluster's aggregator look for them.
func (s *AnnexServer) PrepareRun() Runner {
	prepared := s.GenericAPIServer.PrepareRun()
	hosted := s.HostedResources.GenericAPIServer
	hosted.StaticOpenAPISpec = s.GenericAPIServer.StaticOpenAPISpec
	hosted.OpenAPIVersionedService = s.GenericAPIServer.OpenAPIVersionedService
	hosted.OpenAPIV3VersionedService = s.GenericAPIServer.OpenAPIV3VersionedService
	return prepared
}

// typeCacheBudget is the budget of a hosted type's lean caches set on its
// HostedResource, as annex's internal CRD of the type records it.
func typeCacheBudget(router *routing.Router, gr schema.GroupResource) (int64, bool) {
	crd, err := router.CRD(gr.String())
	if err != nil {
		return 0, false
	}
	value, ok := crd.Annotations[v1alpha1.CacheBudgetAnnotation]
	if !ok {
		return 0, false
	}
	bytes, err := strconv.ParseInt(value, 10, 64)
	if err != nil || bytes <= 0 {
		klog.ErrorS(err, "A hosted type's cache budget does not parse; annex's --lean-cache-budget-per-type bounds it", "resource", gr, "annotation", v1alpha1.CacheBudgetAnnotation, "value", value)
		return 0, false
	}
	return bytes, true
}
