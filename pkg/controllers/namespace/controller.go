// Package namespace finalizes namespaces in standalone mode, as the
// kube-controller-manager's namespace controller does in a cluster: once a
// namespace is being deleted, it deletes everything in it, waits until
// nothing remains, then removes the "kubernetes" finalizer so that the
// namespace goes.
package namespace

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// resync re-examines every namespace now and then, in case an event was missed.
const resync = 5 * time.Minute

// errContentRemaining requeues a namespace whose content is still going.
var errContentRemaining = errors.New("content remains in the namespace")

// Controller finalizes terminating namespaces.
type Controller struct {
	client    kubernetes.Interface
	metadata  metadata.Interface
	discovery discovery.DiscoveryInterface
	lister    corelisters.NamespaceLister
	synced    cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string]
}

// Run finalizes terminating namespaces with the given number of workers,
// talking to the server cfg points at, until ctx is done. It also creates the
// "default" namespace if it is missing, since kubectl uses it when no
// namespace is given.
func Run(ctx context.Context, cfg *rest.Config, workers int) error {
	logger := klog.FromContext(ctx).WithValues("controller", "namespace")
	ctx = klog.NewContext(ctx, logger)

	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	metadataClient, err := metadata.NewForConfig(cfg)
	if err != nil {
		return err
	}
	discoveryClient, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(client, resync)
	c, err := New(client, metadataClient, discoveryClient, factory)
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()

	if err := ensureNamespace(ctx, client, metav1.NamespaceDefault); err != nil {
		return err
	}
	c.Run(ctx, workers)
	return nil
}

// New returns a controller that watches namespaces through factory, which
// the caller starts.
func New(client kubernetes.Interface, metadataClient metadata.Interface, discoveryClient discovery.DiscoveryInterface, factory informers.SharedInformerFactory) (*Controller, error) {
	informer := factory.Core().V1().Namespaces()
	c := &Controller{
		client:    client,
		metadata:  metadataClient,
		discovery: discoveryClient,
		lister:    informer.Lister(),
		synced:    informer.Informer().HasSynced,
		// Content usually goes within seconds: poll closely at first.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "namespace"}),
	}
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj interface{}) { c.enqueue(obj) },
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Controller) enqueue(obj interface{}) {
	ns, ok := obj.(*corev1.Namespace)
	if ok && ns.DeletionTimestamp != nil && slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
		c.queue.Add(ns.Name)
	}
}

// Run processes namespaces with workers goroutines until ctx is done.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.queue.ShutDown()
	logger := klog.FromContext(ctx)
	logger.Info("Starting")
	defer logger.Info("Stopped")
	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.synced) {
		return
	}
	for range workers {
		go wait.UntilWithContext(ctx, func(ctx context.Context) {
			for c.processNext(ctx) {
			}
		}, time.Second)
	}
	<-ctx.Done()
}

func (c *Controller) processNext(ctx context.Context) bool {
	name, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(name)
	logger := klog.FromContext(ctx).WithValues("namespace", name)
	err := c.sync(klog.NewContext(ctx, logger), name)
	switch {
	case err == nil:
		c.queue.Forget(name)
	case errors.Is(err, errContentRemaining):
		logger.V(2).Info("Waiting for the namespace's content to go")
		c.queue.AddRateLimited(name)
	default:
		logger.Error(err, "Finalizing the namespace failed; retrying")
		c.queue.AddRateLimited(name)
	}
	return true
}

// sync deletes the content of a terminating namespace and, once it is all
// gone, removes the "kubernetes" finalizer.
func (c *Controller) sync(ctx context.Context, name string) error {
	ns, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.DeletionTimestamp == nil || !slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
		return nil
	}

	result := c.deleteContent(ctx, name)
	if err := c.updateConditions(ctx, ns, result.conditions()); err != nil {
		return err
	}
	if err := result.err(); err != nil {
		return err
	}

	ns = ns.DeepCopy()
	ns.Spec.Finalizers = slices.DeleteFunc(ns.Spec.Finalizers, func(f corev1.FinalizerName) bool { return f == corev1.FinalizerKubernetes })
	if _, err := c.client.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing the %q finalizer: %w", corev1.FinalizerKubernetes, err)
	}
	klog.FromContext(ctx).Info("Finalized the namespace")
	return nil
}

// updateConditions writes the conditions if they differ from the namespace's.
func (c *Controller) updateConditions(ctx context.Context, ns *corev1.Namespace, conditions []corev1.NamespaceCondition) error {
	updated := ns.DeepCopy()
	changed := false
	for _, want := range conditions {
		i := slices.IndexFunc(updated.Status.Conditions, func(c corev1.NamespaceCondition) bool { return c.Type == want.Type })
		if i < 0 {
			want.LastTransitionTime = metav1.Now()
			updated.Status.Conditions = append(updated.Status.Conditions, want)
			changed = true
			continue
		}
		have := &updated.Status.Conditions[i]
		if have.Status == want.Status && have.Reason == want.Reason && have.Message == want.Message {
			continue
		}
		if have.Status != want.Status {
			have.LastTransitionTime = metav1.Now()
		}
		have.Status, have.Reason, have.Message = want.Status, want.Reason, want.Message
		changed = true
	}
	if !changed {
		return nil
	}
	_, err := c.client.CoreV1().Namespaces().UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// ensureNamespace creates a namespace unless it exists, retrying until the
// server answers or ctx is done.
func ensureNamespace(ctx context.Context, client kubernetes.Interface, name string) error {
	return wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			return true, nil
		}
		klog.FromContext(ctx).V(2).Info("Creating a namespace failed; retrying", "name", name, "err", err)
		return false, nil
	})
}
