// Package retention enforces the retention policy of hosted types
// (spec.storage.retention of a HostedResource): it periodically deletes the
// objects older than maxAge and, in each namespace, all but the
// maxObjectsPerNamespace newest.
//
// It works through annex's loopback client like any other client, so the
// deletes go through the whole request chain (admission, finalizers, watch
// events). A pass lists only the objects' metadata, page by page, deletes at
// most a batch of them at a bounded rate, and leaves the rest to the next
// pass, so that retention never crowds out users' requests.
package retention

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"annex.dev/annex/pkg/apis/annex/v1alpha1"
	"annex.dev/annex/pkg/storage/routing"
)

// Defaults of Options.
const (
	DefaultInterval         = time.Minute
	DefaultBatchSize        = 500
	DefaultDeletesPerSecond = 200
)

const (
	// pageSize is how many objects one list request returns.
	pageSize = 500
	// maxListRestarts is how many times one pass lists again from the
	// first page after its continue token expired.
	maxListRestarts = 3
	// workers is how many deletes are in flight at once; the rate limit,
	// not this, bounds the load.
	workers = 4
	// backlogDelay is how soon a pass follows one whose batch was cut.
	backlogDelay = time.Second
	// notServedDelay is how soon a pass is retried when the type, although
	// established, is not served yet (the handler lags the condition briefly).
	notServedDelay = 2 * time.Second
)

// Options say how often and how fast retention runs.
type Options struct {
	// Interval is the time between two passes over one type.
	Interval time.Duration
	// BatchSize is the most objects a pass deletes of one type; the rest
	// wait for the next pass, which comes within a second.
	BatchSize int
	// DeletesPerSecond bounds the deletes of all types together.
	DeletesPerSecond float64
}

func (o Options) withDefaults() Options {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.DeletesPerSecond <= 0 {
		o.DeletesPerSecond = DefaultDeletesPerSecond
	}
	return o
}

// Reconciler runs a retention pass over each established hosted type that
// has a retention policy, every Options.Interval.
type Reconciler struct {
	// Client reads HostedResources.
	Client client.Client
	// Metadata lists and deletes hosted objects; SetupWithManager builds it
	// from the manager's (loopback) configuration when nil.
	Metadata metadata.Interface
	Options  Options

	// now is the clock; time.Now when nil.
	now     func() time.Time
	limiter flowcontrol.RateLimiter

	mu sync.Mutex
	// passes is when each type's next pass is due, by HostedResource name.
	passes map[string]schedule
}

// schedule is when the next pass over one HostedResource's type is due.
type schedule struct {
	uid        types.UID
	generation int64
	due        time.Time
	group      string
	resource   string
}

// SetupWithManager registers the reconciler. Like every controller of the
// manager, it runs only in the elected leader.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Metadata == nil {
		cfg := rest.CopyConfig(mgr.GetConfig())
		cfg.UserAgent = "annex-retention"
		// The deletes have their own limit below; the list pages are few.
		cfg.QPS, cfg.RateLimiter = -1, nil
		md, err := metadata.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("building the retention's metadata client: %w", err)
		}
		r.Metadata = md
	}
	r.init()
	RegisterMetrics()
	return ctrl.NewControllerManagedBy(mgr).
		Named("retention").
		For(&v1alpha1.HostedResource{}).
		// One type at a time: passes share the delete rate anyway.
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
}

func (r *Reconciler) init() {
	r.Options = r.Options.withDefaults()
	if r.now == nil {
		r.now = time.Now
	}
	if r.limiter == nil {
		burst := max(1, int(r.Options.DeletesPerSecond/10))
		r.limiter = flowcontrol.NewTokenBucketRateLimiter(float32(r.Options.DeletesPerSecond), burst)
	}
	if r.passes == nil {
		r.passes = map[string]schedule{}
	}
}

// Reconcile runs a pass over one HostedResource's type when one is due, and
// asks to be called again when the next one is.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	hr := &v1alpha1.HostedResource{}
	if err := r.Client.Get(ctx, req.NamespacedName, hr); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.Name)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	t, ok := targetOf(hr)
	if !ok {
		r.forget(hr.Name)
		return reconcile.Result{}, nil
	}
	// Any change of the HostedResource, its status included, wakes this
	// reconciler; a pass runs only when due, or at once after a spec change.
	if wait := r.untilDue(hr); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	res := r.pass(ctx, t)
	next := r.Options.Interval
	switch {
	case res.notServed:
		next = min(next, notServedDelay)
	case res.cut && res.err == nil && res.done > 0:
		// The batch was cut and made progress: go on with the rest soon.
		// A pass that only failed waits the whole interval.
		next = min(next, backlogDelay)
	}
	r.mu.Lock()
	r.passes[hr.Name] = schedule{uid: hr.UID, generation: hr.Generation, due: r.now().Add(next), group: t.gvr.Group, resource: t.gvr.Resource}
	r.mu.Unlock()
	return reconcile.Result{RequeueAfter: next}, nil
}

// untilDue is how long until the next pass over hr's type is due; zero or
// less when it is due now.
func (r *Reconciler) untilDue(hr *v1alpha1.HostedResource) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.passes[hr.Name]
	if !ok || s.uid != hr.UID || s.generation != hr.Generation {
		return 0
	}
	return s.due.Sub(r.now())
}

// forget drops a type that no longer has retention, and its backlog gauge.
func (r *Reconciler) forget(name string) {
	r.mu.Lock()
	s, ok := r.passes[name]
	delete(r.passes, name)
	r.mu.Unlock()
	if ok {
		backlogObjects.DeleteLabelValues(s.group, s.resource)
	}
}

// target is a hosted type to enforce a policy on.
type target struct {
	gvr    schema.GroupVersionResource
	policy Policy
}

// targetOf returns the type and policy of a HostedResource whose objects
// retention must bound: one with a retention policy, established and not
// being deleted. It lists the storage version when it is served.
func targetOf(hr *v1alpha1.HostedResource) (target, bool) {
	r := hr.Spec.Storage.Retention
	if r == nil || !hr.DeletionTimestamp.IsZero() || !meta.IsStatusConditionTrue(hr.Status.Conditions, v1alpha1.HostedResourceEstablished) {
		return target{}, false
	}
	var p Policy
	if r.MaxAge != nil {
		p.MaxAge = r.MaxAge.Duration
	}
	if r.MaxObjectsPerNamespace != nil {
		p.MaxObjects = *r.MaxObjectsPerNamespace
	}
	version := routing.ServedVersion(hr.Spec.Versions)
	if version == "" || (p.MaxAge <= 0 && p.MaxObjects <= 0) {
		return target{}, false
	}
	gvr := schema.GroupVersionResource{Group: hr.Spec.Group, Version: version, Resource: hr.Spec.Names.Plural}
	return target{gvr: gvr, policy: p}, true
}

// passResult is what one pass did.
type passResult struct {
	listed  int
	deleted map[Reason]int
	skipped int
	failed  int
	// done counts the selected objects that are gone or being deleted now.
	done int
	// cut says whether more objects were selected than a batch holds.
	cut      bool
	backlog  int
	duration time.Duration
	// notServed is set when the type's list answered 404.
	notServed bool
	// err is the list error, or the delete error that stopped the pass.
	err error
}

// pass lists the type's objects, selects those past the policy, and deletes
// up to a batch of them, oldest first.
func (r *Reconciler) pass(ctx context.Context, t target) passResult {
	logger := ctrl.LoggerFrom(ctx).WithValues("group", t.gvr.Group, "resource", t.gvr.Resource)
	ctx = ctrl.LoggerInto(ctx, logger)
	start := time.Now()
	res := passResult{deleted: map[Reason]int{}}
	defer func() {
		res.duration = time.Since(start)
		passDuration.WithLabelValues(t.gvr.Group, t.gvr.Resource).Observe(res.duration.Seconds())
	}()
	objects, err := r.list(ctx, t.gvr)
	if err != nil {
		if apierrors.IsNotFound(err) {
			logger.V(2).Info("The type is established but not served yet; retrying soon")
			res.notServed = true
			return res
		}
		if ctx.Err() != nil {
			// annex is stopping, or this replica lost the lead.
			res.err = err
			return res
		}
		errorsTotal.WithLabelValues(t.gvr.Group, t.gvr.Resource).Inc()
		logger.Error(err, "Retention could not list the objects of the type")
		res.err = err
		return res
	}
	res.listed = len(objects)
	deletions := Select(objects, t.policy, r.now())
	batch := deletions[:min(len(deletions), r.Options.BatchSize)]
	res.cut = len(batch) < len(deletions)
	r.deleteBatch(ctx, t, batch, &res)
	res.done = res.skipped
	for _, n := range res.deleted {
		res.done += n
	}
	res.backlog = len(deletions) - res.done
	backlogObjects.WithLabelValues(t.gvr.Group, t.gvr.Resource).Set(float64(res.backlog))

	if res.done > 0 || res.backlog > 0 || res.failed > 0 {
		logger.Info("Retention pass", "listed", res.listed,
			"deletedForMaxAge", res.deleted[ReasonMaxAge], "deletedForMaxObjects", res.deleted[ReasonMaxObjects],
			"alreadyGoneOrReplaced", res.skipped, "failed", res.failed, "backlog", res.backlog, "duration", time.Since(start))
	} else {
		logger.V(4).Info("Retention pass: nothing to delete", "listed", res.listed, "duration", time.Since(start))
	}
	if res.err != nil {
		logger.Error(res.err, "Retention stopped deleting for this pass")
	}
	return res
}

// list returns the metadata of every object of the type, page by page:
// every request asks for at most pageSize objects. When the store has
// compacted the revision a continue token points at (410 Gone, paging took
// longer than the store keeps history), the list starts again from the
// first page, paged still, up to maxListRestarts times; then the pass fails
// and the next one tries again. A list that ends in an error returns no
// objects: retention never selects from part of a type.
func (r *Reconciler) list(ctx context.Context, gvr schema.GroupVersionResource) ([]Object, error) {
	var objects []Object
	// Namespace names repeat for every object; keep one copy of each.
	namespaces := map[string]string{}
	opts := metav1.ListOptions{Limit: pageSize}
	restarts := 0
	for {
		page, err := r.Metadata.Resource(gvr).List(ctx, opts)
		if err != nil {
			if apierrors.IsResourceExpired(err) && opts.Continue != "" && restarts < maxListRestarts {
				restarts++
				listRestarts.WithLabelValues(gvr.Group, gvr.Resource).Inc()
				ctrl.LoggerFrom(ctx).V(2).Info("The continue token expired while paging; listing again from the first page",
					"restart", restarts, "listedBefore", len(objects))
				objects, opts = objects[:0], metav1.ListOptions{Limit: pageSize}
				continue
			}
			return nil, err
		}
		for i := range page.Items {
			m := &page.Items[i].ObjectMeta
			ns, ok := namespaces[m.Namespace]
			if !ok {
				ns = m.Namespace
				namespaces[ns] = ns
			}
			objects = append(objects, Object{
				Namespace:   ns,
				Name:        m.Name,
				UID:         m.UID,
				Created:     m.CreationTimestamp.Time,
				Terminating: m.DeletionTimestamp != nil,
			})
		}
		if page.Continue == "" {
			return objects, nil
		}
		opts.Continue = page.Continue
	}
}

// deleteBatch deletes batch at the shared rate, each delete on the
// condition that the object is still the one listed (same UID). It stops at
// the first error that is not about the object itself, such as a server
// error or throttling: the next pass retries.
func (r *Reconciler) deleteBatch(ctx context.Context, t target, batch []Deletion, res *passResult) {
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	logger := ctrl.LoggerFrom(ctx)
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan Deletion)
	for range min(workers, len(batch)) {
		wg.Go(func() {
			for d := range work {
				if r.limiter.Wait(ctx) != nil {
					return
				}
				uid := d.UID
				err := r.Metadata.Resource(t.gvr).Namespace(d.Namespace).Delete(ctx, d.Name,
					metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
				mu.Lock()
				switch {
				case err == nil:
					res.deleted[d.Reason]++
					deletedObjects.WithLabelValues(t.gvr.Group, t.gvr.Resource, string(d.Reason)).Inc()
				case apierrors.IsNotFound(err):
					res.skipped++
					skippedObjects.WithLabelValues(t.gvr.Group, t.gvr.Resource, "NotFound").Inc()
				case apierrors.IsConflict(err):
					// The UID precondition failed: the object was deleted
					// and another one created with its name.
					res.skipped++
					skippedObjects.WithLabelValues(t.gvr.Group, t.gvr.Resource, "Conflict").Inc()
				case ctx.Err() != nil:
					// Another delete stopped the pass, or annex is stopping.
				default:
					res.failed++
					errorsTotal.WithLabelValues(t.gvr.Group, t.gvr.Resource).Inc()
					if aboutTheObject(err) {
						logger.Error(err, "Retention could not delete an object", "namespace", d.Namespace, "name", d.Name)
					} else if res.err == nil {
						res.err = err
						cancel()
					}
				}
				mu.Unlock()
			}
		})
	}
feed:
	for _, d := range batch {
		select {
		case work <- d:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
}

// aboutTheObject says whether a delete error concerns only the object
// deleted, such as an admission webhook refusing it, so that the pass can
// go on with the others; throttling, server errors and timeouts stop it.
func aboutTheObject(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	code := int(status.Status().Code)
	return code >= 400 && code < 500 && code != http.StatusTooManyRequests
}
