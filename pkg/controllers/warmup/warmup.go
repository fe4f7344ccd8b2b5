// Package warmup makes every annex replica open the storage of every hosted
// type as soon as the type is established, instead of on the first request
// for it.
//
// The embedded apiextensions server creates a type's storage, and with it
// the watch cache, lazily. A replica that has not served a type yet starts
// its watch cache at the current revision when the first request comes; a
// client that fails over to it and resumes a watch from an earlier
// resourceVersion then gets 410 Gone and must relist everything. Warming the
// caches at start, on every replica (not only the leader), gives each one the
// history a failing-over watch needs.
package warmup

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	apiextensionshelpers "k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apiextensionsinformers "k8s.io/apiextensions-apiserver/pkg/client/informers/externalversions"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/storage/routing"
)

// Warmer opens the storage of each established hosted type once.
type Warmer struct {
	// Available, when set, says why a type's storage cannot open now;
	// errors that wrap routing.ErrStarting pass by themselves. A type whose
	// backend is unavailable is left to its first request, so that it does
	// not hold the replica's readiness.
	Available func(group, resource string) error

	crds     apiextensionsclient.Interface
	metadata metadata.Interface

	mu     sync.Mutex
	warmed map[types.UID]bool
	// ready is set once every type established at start has been warmed.
	ready atomic.Bool
}

// New returns a Warmer that talks to annex through loopback.
func New(loopback *rest.Config) (*Warmer, error) {
	crds, err := apiextensionsclient.NewForConfig(loopback)
	if err != nil {
		return nil, err
	}
	md, err := metadata.NewForConfig(loopback)
	if err != nil {
		return nil, err
	}
	return &Warmer{crds: crds, metadata: md, warmed: map[types.UID]bool{}}, nil
}

// Name is the name of the readiness check.
func (w *Warmer) Name() string { return "hosted-type-storage" }

// Check fails until the types established at start have their storage open,
// so that a replica takes traffic only with its watch caches running.
func (w *Warmer) Check(*http.Request) error {
	if !w.ready.Load() {
		return fmt.Errorf("opening the storage of the hosted types")
	}
	return nil
}

// Run warms every established type, then each type that becomes established,
// until ctx is done.
func (w *Warmer) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("warmup")
	factory := apiextensionsinformers.NewSharedInformerFactory(w.crds, 0)
	informer := factory.Apiextensions().V1().CustomResourceDefinitions().Informer()
	handler := func(obj interface{}) {
		if crd, ok := obj.(*apiextensionsv1.CustomResourceDefinition); ok {
			w.warm(ctx, logger, crd)
		}
	}
	registration, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handler,
		UpdateFunc: func(_, obj interface{}) { handler(obj) },
	})
	if err != nil {
		logger.Error(err, "Cannot watch the hosted types")
		return
	}
	factory.Start(ctx.Done())
	// The registration has synced once the handler has seen, and warmed,
	// every type of the initial list.
	if !cache.WaitForCacheSync(ctx.Done(), registration.HasSynced) {
		return
	}
	w.ready.Store(true)
	<-ctx.Done()
	factory.Shutdown()
}

func (w *Warmer) warm(ctx context.Context, logger klog.Logger, crd *apiextensionsv1.CustomResourceDefinition) {
	if !apiextensionshelpers.IsCRDConditionTrue(crd, apiextensionsv1.Established) || crd.DeletionTimestamp != nil {
		return
	}
	w.mu.Lock()
	done := w.warmed[crd.UID]
	w.warmed[crd.UID] = true
	w.mu.Unlock()
	if done {
		return
	}
	for _, v := range crd.Spec.Versions {
		if !v.Served {
			continue
		}
		gvr := schema.GroupVersionResource{Group: crd.Spec.Group, Version: v.Name, Resource: crd.Spec.Names.Plural}
		// A one-item list through annex opens the storage and starts the
		// watch cache of this version. The handler answers 404 for a moment
		// after a type is established: retry briefly.
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			if w.Available != nil {
				if err := w.Available(gvr.Group, gvr.Resource); err != nil && !errors.Is(err, routing.ErrStarting) {
					return false, err
				}
			}
			_, err := w.metadata.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
			return err == nil, nil
		})
		if err != nil {
			logger.Info("Could not open the storage of a hosted type ahead of its first request", "resource", gvr.String(), "err", err)
			continue
		}
		logger.V(2).Info("Opened the storage of a hosted type", "resource", gvr.String())
	}
}
