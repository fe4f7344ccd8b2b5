// Package apiserver composes annex's API servers. The annex.dev server is the
// head of the delegation chain; the hosted-resource server will follow it.
package apiserver

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"

	"annex.dev/annex/pkg/apis/annex"
	"annex.dev/annex/pkg/apis/annex/install"
	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	hostedresourcestorage "annex.dev/annex/pkg/registry/annex/hostedresource/storage"
	storagebackendstorage "annex.dev/annex/pkg/registry/annex/storagebackend/storage"
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

// Config is the configuration of the annex.dev server.
type Config struct {
	GenericConfig *genericapiserver.RecommendedConfig
}

type completedConfig struct {
	GenericConfig genericapiserver.CompletedConfig
}

// CompletedConfig is a Config whose defaults are filled in.
type CompletedConfig struct {
	*completedConfig
}

// Complete fills in the fields that were not set.
func (cfg *Config) Complete() CompletedConfig {
	return CompletedConfig{&completedConfig{GenericConfig: cfg.GenericConfig.Complete()}}
}

// AnnexServer serves the annex.dev API group.
type AnnexServer struct {
	GenericAPIServer *genericapiserver.GenericAPIServer
}

// New returns the annex.dev server; requests it does not serve go to delegate.
func (c completedConfig) New(delegate genericapiserver.DelegationTarget) (*AnnexServer, error) {
	genericServer, err := c.GenericConfig.New("annex-apiserver", delegate)
	if err != nil {
		return nil, err
	}

	apiGroupInfo := genericapiserver.NewDefaultAPIGroupInfo(annex.GroupName, Scheme, metav1.ParameterCodec, Codecs)
	optsGetter := c.GenericConfig.RESTOptionsGetter

	hostedResources, hostedResourcesStatus, err := hostedresourcestorage.NewREST(Scheme, optsGetter)
	if err != nil {
		return nil, fmt.Errorf("creating the storage of hostedresources: %w", err)
	}
	storageBackends, storageBackendsStatus, err := storagebackendstorage.NewREST(Scheme, optsGetter)
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
	return &AnnexServer{GenericAPIServer: genericServer}, nil
}
