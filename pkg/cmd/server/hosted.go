package server

import (
	"context"
	"fmt"

	noopoteltrace "go.opentelemetry.io/otel/trace/noop"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsapiserver "k8s.io/apiextensions-apiserver/pkg/apiserver"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"annex.dev/annex/pkg/storage/backend"
	"annex.dev/annex/pkg/storage/compression"
	"annex.dev/annex/pkg/storage/routing"
	"annex.dev/annex/pkg/storage/secretpolicy"
)

// hostedResourcesConfig derives the embedded apiextensions-apiserver's
// configuration from annex's, as the kube-apiserver derives its own
// apiextensions server: the same serving, authentication, authorization and
// admission, with storage codecs for CustomResourceDefinitions and for
// custom resources.
func (o *Options) hostedResourcesConfig(annex *genericapiserver.RecommendedConfig, policy secretpolicy.Policy) (*apiextensionsapiserver.Config, *routing.Router, *backend.Factory, error) {
	// A shallow copy: the request chain and its settings are shared.
	genericConfig := annex.Config
	// Each server adds its own hooks; sharing the map would add them twice.
	genericConfig.PostStartHooks = map[string]genericapiserver.PostStartHookConfigEntry{}
	genericConfig.RESTOptionsGetter = nil
	genericConfig.MergedResourceConfig = apiextensionsapiserver.DefaultAPIResourceConfigSource()

	etcdOptions := *o.RecommendedOptions.Etcd
	etcdOptions.StorageConfig.Codec = apiextensionsapiserver.Codecs.LegacyCodec(apiextensionsv1.SchemeGroupVersion)
	etcdOptions.StorageConfig.EncodeVersioner = runtime.NewMultiGroupVersioner(
		apiextensionsv1.SchemeGroupVersion, schema.GroupKind{Group: apiextensionsv1.GroupName})
	// annex's own storage already reports on the same etcd.
	etcdOptions.SkipHealthEndpoints = true
	if err := etcdOptions.ApplyTo(&genericConfig); err != nil {
		return nil, nil, nil, err
	}
	// Each hosted type is stored in the backend its HostedResource names.
	backendOptions := backend.Options{
		Etcd:                 etcdOptions,
		ResourceTransformers: compression.ResourceTransformers(genericConfig.ResourceTransformers, compression.Mode(o.StorageCompression)),
		Tracker:              genericConfig.StorageObjectCountTracker,
		DefaultStore:         o.store,
		RuntimeDir:           o.runtimeDir,
		Postgres:             o.postgres(),
		SecretPolicy:         policy,
	}
	if o.Mode == ModeAggregated && annex.ClientConfig != nil {
		cluster, err := kubernetes.NewForConfig(annex.ClientConfig)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("creating the cluster's client: %w", err)
		}
		// Uncached: a backend reads the one Secret it names, so annex needs
		// get on Secrets, not list and watch of every Secret in the cluster.
		backendOptions.Secrets = func(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
			return cluster.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		}
	}
	backends := backend.NewFactory(backendOptions)
	router := routing.New(routing.Options{Backends: backends, RetryInterval: o.StorageBackendRetryInterval,
		ReuseWrittenObjects: o.LeanReuseWrittenObjects})

	sharedInformers := annex.SharedInformerFactory
	if sharedInformers == nil {
		// Standalone mode has no cluster to watch; the factory is required
		// and reads annex itself.
		client, err := kubernetes.NewForConfig(genericConfig.LoopbackClientConfig)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("creating the loopback client: %w", err)
		}
		sharedInformers = informers.NewSharedInformerFactory(client, 0)
	}

	return &apiextensionsapiserver.Config{
		GenericConfig: &genericapiserver.RecommendedConfig{
			Config:                genericConfig,
			SharedInformerFactory: sharedInformers,
		},
		ExtraConfig: apiextensionsapiserver.ExtraConfig{
			CRDRESTOptionsGetter: router,
			// One replica establishes a type at once; with more, the
			// establishing controller waits for the others to see it.
			MasterCount:         1,
			ServiceResolver:     webhook.NewDefaultServiceResolver(),
			AuthResolverWrapper: webhookAuthentication(),
		},
	}, router, backends, nil
}

// secretPolicy says which Secrets StorageBackends may name: those in
// --storage-secret-namespaces, but neither --serving-cert-secret nor any
// that holds a certificate annex serves with.
func (o *Options) secretPolicy(serving *genericapiserver.SecureServingInfo) (secretpolicy.Policy, error) {
	servingSecret, err := o.servingCertSecret()
	if err != nil {
		return secretpolicy.Policy{}, err
	}
	policy := secretpolicy.Policy{Namespaces: o.StorageSecretNamespaces, Serving: servingSecret}
	if serving != nil {
		policy.ServingCertificates = func() [][]byte {
			var certs [][]byte
			if serving.Cert != nil {
				cert, _ := serving.Cert.CurrentCertKeyContent()
				certs = append(certs, cert)
			}
			for _, sni := range serving.SNICerts {
				cert, _ := sni.CurrentCertKeyContent()
				certs = append(certs, cert)
			}
			return certs
		}
	}
	return policy, nil
}

// webhookAuthentication says how annex authenticates to the conversion
// webhooks of hosted types. The kube-apiserver hands its own loopback
// credentials to a webhook at kubernetes.default.svc, since that is
// itself; for annex that service is the cluster's kube-apiserver, another
// server, so such a webhook gets no credentials: annex's loopback token
// never leaves annex.
func webhookAuthentication() webhook.AuthenticationInfoResolverWrapper {
	return webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil, &rest.Config{}, noopoteltrace.NewTracerProvider())
}
