//go:build integration

package rollout

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"

	"annex.dev/annex/test/integration/framework"
)

const (
	// shutdownDelay and watchGrace are the chart's defaults scaled down
	// (15 s and 30 s): the delay outlasts the load balancer's probe period by
	// far, as the chart's outlasts the kubelet's probes and endpoint propagation.
	shutdownDelay = 5 * time.Second
	watchGrace    = 10 * time.Second

	// ticketNamespace holds the hosted objects the client creates.
	ticketNamespace = "rollout"
	// warmUp and settle separate the restarts from the start and end of the
	// load, and from each other.
	warmUp = 3 * time.Second
	settle = 2 * time.Second
	// loadBudget bounds one run of load and restarts.
	loadBudget = 60 * time.Second
	// writeInterval gives about 20 creates a second; listInterval and
	// pollInterval are the lister's and the APIService poller's periods.
	writeInterval = 50 * time.Millisecond
	listInterval  = 500 * time.Millisecond
	pollInterval  = 200 * time.Millisecond
	// newConnInterval is the period of requests on new connections to the
	// Service: the aggregator's availability checks, another kube-apiserver,
	// anything that dials while a replica stops.
	newConnInterval = 50 * time.Millisecond
)

var (
	tickets = schema.GroupVersionResource{Group: "rollout.example.net", Version: "v1", Resource: "tickets"}
	leases  = "annex-controllers"

	apiServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	// apiServiceNames are annex's own APIService and the hosted type's.
	apiServiceNames = []string{framework.Version + "." + framework.Group, tickets.Version + "." + tickets.Group}
)

// TestRollingRestart runs two annex replicas sharing one etcd behind a load
// balancer that follows their readiness, as a Service does, and restarts them
// one at a time while a client creates, lists and watches a hosted type
// through the kube-apiserver.
func TestRollingRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	dir := filepath.Join(env.Dir, "rollout")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	etcdURL := framework.StartEtcd(t, dir)
	cert, err := framework.WriteServingCertificate(dir, "annex-serving",
		framework.ServiceName+"."+framework.Namespace+".svc", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	lb := startLoadBalancer(t, cert.CAPEM, framework.ServiceName+"."+framework.Namespace+".svc")

	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	// The Lease of leader election lives in annex's namespace.
	for _, ns := range []string{framework.Namespace, ticketNamespace} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}

	common := []string{
		"--mode=aggregated",
		"--bind-address=127.0.0.1",
		"--tls-cert-file=" + cert.CertFile,
		"--tls-private-key-file=" + cert.KeyFile,
		"--kubeconfig=" + env.KubeconfigFile,
		"--authentication-kubeconfig=" + env.KubeconfigFile,
		"--authorization-kubeconfig=" + env.KubeconfigFile,
		"--etcd-servers=" + etcdURL,
		"--leader-elect",
		"--apiservice-namespace=" + framework.Namespace,
		"--apiservice-service-name=" + framework.ServiceName,
		"--apiservice-service-port=" + strconv.Itoa(lb.Port()),
		"--apiservice-ca-bundle-file=" + cert.CAFile,
		"--shutdown-watch-termination-grace-period=" + watchGrace.String(),
	}
	replicas := []*replica{newReplica(t, "a", dir, common, cert.CAPEM), newReplica(t, "b", dir, common, cert.CAPEM)}
	// Stop the replicas together at the end: each takes the shutdown delay.
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, r := range replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := r.stop(); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	})
	for _, r := range replicas {
		if err := r.start(0); err != nil {
			t.Fatal(err)
		}
		lb.add(r.name, r.addr())
	}
	for _, r := range replicas {
		if err := r.waitReady(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := lb.waitReady(ctx, r.name, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	if err := env.RegisterAnnex(ctx, lb.Port(), cert.CAPEM); err != nil {
		t.Fatal(err)
	}
	dyn := dynamicClient(t)
	if err := waitAvailable(ctx, dyn, apiServiceNames[0]); err != nil {
		t.Fatal(err)
	}
	declareTickets(ctx, t, dyn)

	// First without the shutdown delay, to show that the checks catch a
	// replica that stops serving before the Service stops routing to it;
	// then as the chart runs annex.
	t.Run("without shutdown delay", func(t *testing.T) {
		// Whether the client notices depends on timing (one dial or one
		// request landing in a window of a few hundred milliseconds), so this
		// half runs on request, not in every CI run, where a lucky miss would
		// fail the build. When written it failed the client in 2 runs of 2:
		// 1 of 19 lists and 5 of 205 new connections; 13 of 165 creates.
		if os.Getenv("ANNEX_ROLLOUT_WITHOUT_DELAY") == "" {
			t.Skip("set ANNEX_ROLLOUT_WITHOUT_DELAY=1 to show that the checks catch a replica stopping without the shutdown delay")
		}
		res := rollOut(ctx, t, "nodelay", replicas, lb)
		failures := res.failures()
		if len(failures) == 0 {
			t.Fatal("the client noticed nothing although the replicas stopped serving as soon as they were told to stop: the test cannot tell graceful shutdown from none")
		}
		for _, f := range failures {
			t.Logf("as expected without the delay: %s", f)
		}
	})

	t.Run("graceful", func(t *testing.T) {
		for _, r := range replicas {
			if err := restart(ctx, r, lb, shutdownDelay); err != nil {
				t.Fatal(err)
			}
		}
		for _, name := range apiServiceNames {
			if err := waitAvailable(ctx, dyn, name); err != nil {
				t.Fatal(err)
			}
		}
		res := rollOut(ctx, t, "graceful", replicas, lb)
		for _, f := range res.failures() {
			t.Error(f)
		}
	})
}

// restart stops a replica, starts it with the given shutdown delay and waits
// until the load balancer routes to it again.
func restart(ctx context.Context, r *replica, lb *loadBalancer, delay time.Duration) error {
	if _, err := r.stop(); err != nil {
		return err
	}
	if err := r.start(delay); err != nil {
		return err
	}
	if err := r.waitReady(ctx, 30*time.Second); err != nil {
		return err
	}
	return lb.waitReady(ctx, r.name, 5*time.Second)
}

// dynamicClient talks to the kube-apiserver as admin with client-go's
// default behaviour (retries included); only the client-side rate limit is
// raised above the load.
func dynamicClient(t *testing.T) dynamic.Interface {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 200, 400
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return dyn
}

// declareTickets declares the hosted type Ticket and waits until the cluster
// serves it through its APIService.
func declareTickets(ctx context.Context, t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	manifest := `apiVersion: annex.dev/v1alpha1
kind: HostedResource
metadata:
  name: tickets.rollout.example.net
spec:
  group: rollout.example.net
  names: {kind: Ticket, plural: tickets}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              seq: {type: integer}
`
	hr := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &hr.Object); err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(framework.HostedResources).Create(ctx, hr, metav1.CreateOptions{}); err != nil {
		t.Fatalf("declaring Ticket: %v", err)
	}
	if err := waitAvailable(ctx, dyn, apiServiceNames[1]); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, lastErr = dyn.Resource(tickets).Namespace(ticketNamespace).List(ctx, metav1.ListOptions{Limit: 1})
		return lastErr == nil, nil
	})
	if err != nil {
		t.Fatalf("tickets are not served through the cluster: %v; last error: %v", err, lastErr)
	}
}

// waitAvailable waits until the APIService reports Available=True.
func waitAvailable(ctx context.Context, dyn dynamic.Interface, name string) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		ok, msg, err := availability(ctx, dyn, name)
		last = msg
		if err != nil {
			last = err.Error()
		}
		return ok, nil
	})
	if err != nil {
		return fmt.Errorf("APIService %s did not become Available: %w; last seen: %s", name, err, last)
	}
	return nil
}

// availability reads the APIService's Available condition.
func availability(ctx context.Context, dyn dynamic.Interface, name string) (bool, string, error) {
	svc, err := dyn.Resource(apiServiceGVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, "", err
	}
	conditions, _, _ := unstructured.NestedSlice(svc.Object, "status", "conditions")
	for _, c := range conditions {
		c, _ := c.(map[string]any)
		if c["type"] == "Available" {
			return c["status"] == "True", fmt.Sprintf("Available=%v reason=%v message=%v", c["status"], c["reason"], c["message"]), nil
		}
	}
	return false, "no Available condition", nil
}

// result is what the client saw during one rollout.
type result struct {
	mu sync.Mutex

	writes, writeErrors int
	lists, listErrors   int
	// created holds the names whose create succeeded, in order.
	created []string
	// added counts the ADDED events of each name.
	added map[string]int
	// newConns counts the requests sent on new connections straight to the
	// Service, and newConnErrors those that failed.
	newConns, newConnErrors int
	// watchErrors counts the informer's watch errors (each one a relist or a
	// rewatch), with the first messages in watchErrorMessages.
	watchErrors        int
	watchErrorMessages []string
	// otherEvents are watch events other than ADDED and BOOKMARK.
	otherEvents []string
	checks      int
	// unavailable are the times an APIService was not Available.
	unavailable []string
	// errs are the client's errors, with their times.
	errs []string
	// restartErrs are failures of the harness itself.
	restartErrs []string
}

func (r *result) note(list *[]string, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(*list) < 20 {
		*list = append(*list, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	}
}

// failures lists every way in which the client noticed the rollout.
func (r *result) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	out = append(out, r.restartErrs...)
	if r.writeErrors > 0 || r.listErrors > 0 || r.newConnErrors > 0 {
		out = append(out, fmt.Sprintf("%d of %d creates, %d of %d lists and %d of %d requests on new connections to the Service failed: %s",
			r.writeErrors, r.writes, r.listErrors, r.lists, r.newConnErrors, r.newConns, strings.Join(r.errs, "; ")))
	}
	var missing, duplicated []string
	for _, name := range r.created {
		switch r.added[name] {
		case 1:
		case 0:
			missing = append(missing, name)
		default:
			duplicated = append(duplicated, fmt.Sprintf("%s (%d times)", name, r.added[name]))
		}
	}
	created := map[string]bool{}
	for _, name := range r.created {
		created[name] = true
	}
	var unexpected []string
	for name := range r.added {
		if !created[name] {
			unexpected = append(unexpected, name)
		}
	}
	sort.Strings(unexpected)
	if len(missing) > 0 {
		out = append(out, fmt.Sprintf("the watch missed the ADDED event of %d of %d created objects: %s", len(missing), len(r.created), abbreviate(missing)))
	}
	if len(duplicated) > 0 {
		out = append(out, fmt.Sprintf("the watch delivered ADDED more than once for %s", abbreviate(duplicated)))
	}
	if len(unexpected) > 0 {
		out = append(out, fmt.Sprintf("the watch delivered ADDED for objects whose create failed: %s", abbreviate(unexpected)))
	}
	if len(r.otherEvents) > 0 {
		out = append(out, fmt.Sprintf("the watch delivered unexpected events: %s", strings.Join(r.otherEvents, "; ")))
	}
	if len(r.unavailable) > 0 {
		out = append(out, fmt.Sprintf("an APIService was not Available: %s", strings.Join(r.unavailable, "; ")))
	}
	return out
}

func abbreviate(names []string) string {
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
	}
	return strings.Join(names, ", ")
}

// rollOut puts load on the hosted type through the kube-apiserver and
// restarts each replica in turn, then returns what the client saw. Object
// names start with prefix.
func rollOut(ctx context.Context, t *testing.T, prefix string, replicas []*replica, lb *loadBalancer) *result {
	t.Helper()
	dyn := dynamicClient(t)
	objects := dyn.Resource(tickets).Namespace(ticketNamespace)
	res := &result{added: map[string]int{}}
	forwardedBefore, droppedBefore := lb.stats()

	// The watcher is an informer, started and synced before the first
	// create, so it must deliver an ADDED event for every one of them. On a
	// watch error (410 Gone included) its reflector relists, as every
	// client-go informer and controller does.
	informer := dynamicinformer.NewFilteredDynamicInformer(dyn, tickets, ticketNamespace, 0, cache.Indexers{}, nil).Informer()
	if err := informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		res.mu.Lock()
		res.watchErrors++
		res.mu.Unlock()
		res.note(&res.watchErrorMessages, "%v", err)
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			u, ok := obj.(*unstructured.Unstructured)
			if !ok || !strings.HasPrefix(u.GetName(), prefix+"-") {
				return // objects of an earlier run
			}
			res.mu.Lock()
			res.added[u.GetName()]++
			res.mu.Unlock()
		},
		DeleteFunc: func(obj any) { res.note(&res.otherEvents, "DELETED %v", obj) },
	}); err != nil {
		t.Fatal(err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		informer.RunWithContext(watchCtx)
	}()
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		t.Fatal("the informer on tickets did not sync")
	}

	loadCtx, stopLoad := context.WithTimeout(ctx, loadBudget)
	defer stopLoad()
	var wg sync.WaitGroup
	every := func(interval time.Duration, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ticker := time.NewTicker(interval)
			defer ticker.Stop()
			for {
				select {
				case <-loadCtx.Done():
					return
				case <-ticker.C:
					f()
				}
			}
		}()
	}
	// Requests run under ctx, not loadCtx, so that the end of the load
	// never cancels one in flight and counts as its failure.
	request := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 30*time.Second) }
	seq := 0
	every(writeInterval, func() {
		seq++
		name := fmt.Sprintf("%s-%05d", prefix, seq)
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": tickets.GroupVersion().String(),
			"kind":       "Ticket",
			"metadata":   map[string]any{"name": name},
			"spec":       map[string]any{"seq": int64(seq)},
		}}
		rctx, cancel := request()
		defer cancel()
		_, err := objects.Create(rctx, obj, metav1.CreateOptions{})
		res.mu.Lock()
		res.writes++
		if err == nil {
			res.created = append(res.created, name)
		} else {
			res.writeErrors++
		}
		res.mu.Unlock()
		if err != nil {
			res.note(&res.errs, "create %s: %v", name, err)
		}
	})
	every(listInterval, func() {
		rctx, cancel := request()
		defer cancel()
		_, err := objects.List(rctx, metav1.ListOptions{})
		res.mu.Lock()
		res.lists++
		if err != nil {
			res.listErrors++
		}
		res.mu.Unlock()
		if err != nil {
			res.note(&res.errs, "list: %v", err)
		}
	})
	every(pollInterval, func() {
		for _, name := range apiServiceNames {
			rctx, cancel := request()
			ok, msg, err := availability(rctx, dyn, name)
			cancel()
			res.mu.Lock()
			res.checks++
			res.mu.Unlock()
			switch {
			case err != nil:
				res.note(&res.unavailable, "reading APIService %s: %v", name, err)
			case !ok:
				res.note(&res.unavailable, "APIService %s: %s", name, msg)
			}
		}
	})

	every(newConnInterval, func() {
		rctx, cancel := request()
		defer cancel()
		err := lb.checkNewConnection(rctx)
		res.mu.Lock()
		res.newConns++
		if err != nil {
			res.newConnErrors++
		}
		res.mu.Unlock()
		if err != nil {
			res.note(&res.errs, "new connection to the Service: %v", err)
		}
	})

	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	leader := func() string {
		lease, err := cs.CoordinationV1().Leases(framework.Namespace).Get(ctx, leases, metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil {
			return fmt.Sprintf("unknown (%v)", err)
		}
		return *lease.Spec.HolderIdentity
	}
	pause := func(d time.Duration) bool {
		select {
		case <-loadCtx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	restarts := 0
	if pause(warmUp) {
		for _, r := range replicas {
			before := leader()
			start := time.Now()
			took, err := r.stop()
			if err == nil {
				err = r.start(r.shutdownDelay)
			}
			if err == nil {
				err = r.waitReady(loadCtx, 30*time.Second)
			}
			if err == nil {
				err = lb.waitReady(loadCtx, r.name, 5*time.Second)
			}
			if err != nil {
				res.note(&res.restartErrs, "restarting annex %s: %v", r.name, err)
				break
			}
			restarts++
			t.Logf("%s restarted annex %s (--shutdown-delay-duration=%s): it exited %s after SIGTERM and was back in rotation %s after it; leader before: %s, now: %s",
				time.Now().Format("15:04:05.000"), r.name, r.shutdownDelay, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), before, leader())
			if !pause(settle) {
				break
			}
		}
	}
	if restarts != len(replicas) {
		res.note(&res.restartErrs, "only %d of %d replicas were restarted within %s", restarts, len(replicas), loadBudget)
	}
	stopLoad()
	wg.Wait()

	// Give the watch time to deliver the last creates, then stop it.
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
		res.mu.Lock()
		defer res.mu.Unlock()
		for _, name := range res.created {
			if res.added[name] == 0 {
				return false, nil
			}
		}
		return true, nil
	})
	stopWatch()
	<-watchDone

	forwarded, dropped := lb.stats()
	for name := range forwarded {
		forwarded[name] -= forwardedBefore[name]
	}
	dropped -= droppedBefore
	res.mu.Lock()
	t.Logf("%s: %d restarts; %d creates (%d failed), %d lists (%d failed), %d ADDED events for %d created objects, %d watch errors %q, %d APIService checks (%d not Available), %d requests on new connections (%d failed); load balancer: connections forwarded %v, dropped %d",
		prefix, restarts, res.writes, res.writeErrors, res.lists, res.listErrors, sumValues(res.added), len(res.created), res.watchErrors, res.watchErrorMessages,
		res.checks, len(res.unavailable), res.newConns, res.newConnErrors, forwarded, dropped)
	res.mu.Unlock()
	return res
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
