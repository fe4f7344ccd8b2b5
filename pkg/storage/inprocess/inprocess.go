// Package inprocess opens the raw storage of a resource on an etcd server
// that runs in annex's own process (the embedded etcd) through an
// in-process client: each request is a call into the server, where
// generic.NewRawStorage would dial the server's client URL and pay for
// TLS, HTTP/2 and the protobuf encoding of every request, response and
// watch event on both sides of a loopback connection.
//
// The store is the apiserver's own etcd3 store (k8s.io/apiserver's
// etcd3.New), built as its storage factory builds one; only the client
// differs, so the upstream storage suite proves it as it proves the other
// (pkg/storage/suite, the backend embedded-etcd-in-process).
package inprocess

import (
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/utils/clock"
)

// server is a registered in-process etcd server.
type server struct {
	endpoint  string
	newClient func() *clientv3.Client

	// The compactor of every store on the server, started with the first
	// store that compacts and stopped with the last one, as the storage
	// factory keeps one per endpoint.
	mu        sync.Mutex
	compactor *compactor
}

type compactor struct {
	etcd3.Compactor
	stop func()
	refs int
}

var (
	mu      sync.RWMutex
	servers = map[string]*server{}
)

// Register has NewRawStorage open the storage of the resources whose etcd
// is endpoint alone with clients from newClient, until unregister is
// called. newClient returns a new in-process client of the server at
// endpoint, which the caller of newClient closes.
func Register(endpoint string, newClient func() *clientv3.Client) (unregister func()) {
	s := &server{endpoint: endpoint, newClient: newClient}
	mu.Lock()
	servers[endpoint] = s
	mu.Unlock()
	return func() {
		mu.Lock()
		if servers[endpoint] == s {
			delete(servers, endpoint)
		}
		mu.Unlock()
	}
}

// registered returns the in-process server of a transport, nil when there
// is none.
func registered(t storagebackend.TransportConfig) *server {
	if len(t.ServerList) != 1 {
		return nil
	}
	mu.RLock()
	defer mu.RUnlock()
	return servers[t.ServerList[0]]
}

// NewRawStorage is generic.NewRawStorage, with an in-process client when
// the transport's one server is registered.
func NewRawStorage(config *storagebackend.ConfigForResource, newFunc, newListFunc func() runtime.Object, resourcePrefix string) (storage.Interface, factory.DestroyFunc, error) {
	s := registered(config.Transport)
	if s == nil || (config.Type != storagebackend.StorageTypeUnset && config.Type != storagebackend.StorageTypeETCD3) {
		return generic.NewRawStorage(config, newFunc, newListFunc, resourcePrefix)
	}
	return s.newStore(config, newFunc, newListFunc, resourcePrefix)
}

// newStore builds the etcd3 store of one resource as the storage factory
// does (factory.newETCD3Storage), on an in-process client of its own.
func (s *server) newStore(c *storagebackend.ConfigForResource, newFunc, newListFunc func() runtime.Object, resourcePrefix string) (storage.Interface, factory.DestroyFunc, error) {
	client := s.newClient()
	// The latency of each request in etcd_request_duration_seconds, as
	// for the factory's clients.
	client.KV = etcd3.NewETCDLatencyTracker(client.KV)
	kc := KubernetesClient(client)
	// The cache's consistent reads need to know that the server answers
	// progress requests; the checker asks each endpoint of a client once,
	// and an in-process client has none of its own.
	etcdfeature.DefaultFeatureSupportChecker.CheckClient(client.Ctx(), endpointOf{client, s.endpoint}, storage.RequestWatchProgress)

	compactor, stopCompactor := s.startCompactor(c.CompactionInterval)
	transformer := c.Transformer
	if transformer == nil {
		transformer = identity.NewEncryptCheckTransformer()
	}
	versioner := storage.APIObjectVersioner{}
	decoder := etcd3.NewDefaultDecoder(c.Codec, versioner)
	unsafeDeletion := utilfeature.DefaultFeatureGate.Enabled(features.AllowUnsafeMalformedObjectDeletion)
	if unsafeDeletion {
		transformer = etcd3.WithCorruptObjErrorHandlingTransformer(transformer)
		decoder = etcd3.WithCorruptObjErrorHandlingDecoder(decoder)
	}
	store, err := etcd3.New(kc, compactor, c.Codec, newFunc, newListFunc, c.Prefix, resourcePrefix, c.GroupResource, transformer, c.LeaseManagerConfig, decoder, versioner)
	if err != nil {
		stopCompactor()
		_ = client.Close()
		return nil, nil, err
	}
	var once sync.Once
	destroy := func() {
		// Called more than once when subresources share the storage.
		once.Do(func() {
			store.Close()
			stopCompactor()
			_ = client.Close()
		})
	}
	var out storage.Interface = store
	if unsafeDeletion {
		out = etcd3.NewStoreWithUnsafeCorruptObjectDeletion(out, c.GroupResource)
	}
	return out, destroy, nil
}

// startCompactor returns the server's compactor, started if it was not,
// and the function that releases it; none when interval is zero, which
// turns the apiserver's compaction off. The stores of one annex share one
// interval (--etcd-compaction-interval); the first store's is kept.
func (s *server) startCompactor(interval time.Duration) (etcd3.Compactor, func()) {
	if interval <= 0 {
		return nil, func() {}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.compactor == nil {
		client := s.newClient()
		c := etcd3.NewCompactor(client, interval, clock.RealClock{}, nil)
		s.compactor = &compactor{Compactor: c, stop: func() { c.Stop(); _ = client.Close() }}
	}
	c := s.compactor
	c.refs++
	var once sync.Once
	return c.Compactor, func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if c.refs--; c.refs == 0 {
				c.stop()
				s.compactor = nil
			}
		})
	}
}

// KubernetesClient is etcd's Kubernetes client over a client of any kind,
// as kubernetes.New makes one over a client it dials.
func KubernetesClient(c *clientv3.Client) *kubernetes.Client {
	kc := &kubernetes.Client{Client: c}
	kc.Kubernetes = kc
	return kc
}

// endpointOf is an in-process client that names the endpoint it serves.
type endpointOf struct {
	*clientv3.Client
	endpoint string
}

func (e endpointOf) Endpoints() []string { return []string{e.endpoint} }
