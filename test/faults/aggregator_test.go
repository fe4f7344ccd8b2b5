//go:build integration

package faults

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
	"annex.dev/annex/test/integration/framework"
	"annex.dev/annex/test/process"
)

// TestKillAnnexThroughTheAggregator is TestKillAnnexUnderWrites with the
// clients and watchers talking to a real kube-apiserver, whose aggregator
// proxies the hosted type to annex through its APIService, as every client
// of a cluster does. annex (with its embedded etcd) is killed with SIGKILL
// and started again on its data; meanwhile the aggregator answers the
// clients itself: 503 "service unavailable" when it did not send a request
// on (refused), its proxy error otherwise (of unknown outcome when the
// connection was lost during the request). The history must check, and
// writes must be acknowledged through the aggregator again after each kill.
func TestKillAnnexThroughTheAggregator(t *testing.T) {
	kills, between := 2, 4*time.Second
	if long() {
		kills, between = 6, 15*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := startCluster(ctx, t)
	cfg := env.Config
	declareLedgers(t, cfg)

	r := startRun(t, 10*time.Second, cfg)
	for i := 1; i <= kills; i++ {
		time.Sleep(between)
		r.fault("kill -9 annex behind the aggregator (%d of %d)", i, kills)
		took, err := env.KillAndRestartAnnex(ctx, time.Minute)
		if err != nil {
			t.Fatalf("after kill %d: %v", i, err)
		}
		r.recovered("annex ready again, %s after its start", took.Round(time.Millisecond))
		through, err := r.servesWrites(60 * time.Second)
		if err != nil {
			t.Fatalf("after kill %d, through the aggregator: %v", i, err)
		}
		t.Logf("kill %d: annex ready again %s after its start; a write acknowledged through the aggregator %s later",
			i, took.Round(time.Millisecond), through.Round(time.Millisecond))
	}
	r.finish(between, fmt.Sprintf("%d kills of annex behind the aggregator", kills))
}

// TestStopAnnexThroughTheAggregator is TestStopAnnex with the clients and
// watchers on a real kube-apiserver, whose aggregator proxies the hosted
// type to annex: while annex is stopped, the requests the aggregator sent
// on wait, and the clients give up on them; once the aggregator finds annex
// unavailable it answers the clients itself.
func TestStopAnnexThroughTheAggregator(t *testing.T) {
	longOnly(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := startCluster(ctx, t)
	declareLedgers(t, env.Config)
	stopAnnexUnderWrites(t, env.Config, env.SignalAnnex, "annex behind the aggregator")
}

// TestKillPostgresThroughTheAggregator is TestKillPostgres with annex
// aggregated into a real kube-apiserver on PostgreSQL, the clients, the
// watchers and the probes on the kube-apiserver: annex's 503s, with their
// Retry-After, reach the clients through the aggregator unchanged.
func TestKillPostgresThroughTheAggregator(t *testing.T) {
	longOnly(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pg := postgrestest.Start(t)
	env := startCluster(ctx, t, "--postgres-dsn-file="+writeDSNFile(t, pg))
	declareLedgers(t, env.Config)
	killPostgresUnderWrites(t, pg, env.Config, strings.TrimSuffix(env.Config.Host, "/"), annexExited(env))
}

// annexExited says whether the annex of env exited, and how.
func annexExited(env *framework.Environment) func() (bool, error) {
	return func() (bool, error) {
		err := env.AnnexRunning()
		return err != nil, err
	}
}

// TestKillEtcdLeaderThroughTheAggregator is TestKillEtcdLeader with annex
// aggregated into a real kube-apiserver, on an external etcd cluster of
// three members, and the clients and watchers on the kube-apiserver.
func TestKillEtcdLeaderThroughTheAggregator(t *testing.T) {
	longOnly(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cluster := framework.StartEtcdCluster(t, 3)
	env := startCluster(ctx, t, etcdClusterFlags(cluster)...)
	declareLedgers(t, env.Config)
	killEtcdLeaderUnderWrites(t, cluster, env.Config, annexExited(env))
}

// longOnly skips a test outside make test-faults (ANNEX_FAULTS_LONG=1):
// make test-integration runs one fault through the aggregator
// (TestKillAnnexThroughTheAggregator), to keep its faults within about
// five minutes; the others each start a control plane of their own.
func longOnly(t *testing.T) {
	t.Helper()
	if !long() {
		t.Skip("runs in make test-faults (ANNEX_FAULTS_LONG=1); make test-integration runs TestKillAnnexThroughTheAggregator")
	}
}

// startCluster starts a kube-apiserver with annex aggregated into it, and
// stops both when the test ends, keeping their files if it failed.
func startCluster(ctx context.Context, t *testing.T, annexArgs ...string) *framework.Environment {
	t.Helper()
	env, err := framework.Start(ctx, annexArgs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			env.KeepDir = true
			t.Logf("annex's log: %s; the kube-apiserver's: %s", env.AnnexLog, env.APIServerLog)
		}
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	return env
}

// TestListStormThroughTheAggregator is TestListStorm behind a real
// kube-apiserver, as a cluster's users meet it: the storm's LISTs and the
// other clients go to the kube-apiserver, whose aggregator proxies them to
// annex, each as a user of its own with no privileged group, so that API
// Priority and Fairness applies to them, in the kube-apiserver and in
// annex (which reads the cluster's FlowSchemas). A LIST may be refused with
// 429 and Retry-After; every other must be served in full. The other
// clients must get no error and a p99 under the same bound, the peak
// resident memory of annex and of the kube-apiserver (which streams each
// LIST's answer through) must stay under theirs, and nothing may be lost.
func TestListStormThroughTheAggregator(t *testing.T) {
	longOnly(t)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	c := startStormCluster(ctx, t)
	runStorm(ctx, t, c.target, c.objects)
	logFlowControl(ctx, t, c.env)
}

// The users of a storm through the aggregator: stormLister sends the
// LISTs, stormWorker is the other clients.
const (
	stormLister = "storm-lister"
	stormWorker = "storm-worker"
)

// stormCluster is a kube-apiserver with annex aggregated into it, ready
// for a storm through the aggregator.
type stormCluster struct {
	env *framework.Environment
	// cs is the cluster's admin client.
	cs kubernetes.Interface
	// objects is how many reports annex serves.
	objects int
	// target is the storm through the aggregator: its LISTs as the user
	// storm-lister, its other clients as storm-worker, each allowed the
	// two types and nothing else.
	target stormTarget
}

// startStormCluster starts a kube-apiserver with annex aggregated into it,
// on stormObjects reports (stormObjectsLong with ANNEX_FAULTS_LONG=1) and
// the ledgers, and waits until annex's cache of the reports is full.
func startStormCluster(ctx context.Context, t *testing.T) *stormCluster {
	t.Helper()
	objects := stormObjects
	if long() {
		objects = stormObjectsLong
	}
	env := startCluster(ctx, t)
	admin := env.Config
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: stormNamespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	declareType(t, admin, stormReports, stormReportsType)
	declareLedgers(t, admin)
	dyn, err := dynamic.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(stormReports).Namespace(stormNamespace).Create(ctx, stormReport(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The lister and the other clients: users of their own, allowed the
	// two types and nothing else.
	lister, err := env.NewUser(stormLister)
	if err != nil {
		t.Fatal(err)
	}
	worker, err := env.NewUser(stormWorker)
	if err != nil {
		t.Fatal(err)
	}
	allowStormUsers(ctx, t, cs, stormLister, stormWorker)

	took, err := env.RestartAnnexAfter(ctx, 5*time.Minute, func() error {
		fillStormReports(ctx, t, env.Dir, env.AnnexDataDir(), objects)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cached := waitStormCache(ctx, t, admin, env.AnnexRunning)
	t.Logf("annex ready %s after its start on %d reports, its cache full %s after that (through the aggregator)",
		took.Round(time.Millisecond), objects, cached.Round(time.Millisecond))
	kubeAPIServer, err := env.APIServerPid()
	if err != nil {
		t.Fatal(err)
	}
	return &stormCluster{env: env, cs: cs, objects: objects, target: stormTarget{
		lists: lister, others: worker, url: strings.TrimSuffix(admin.Host, "/"),
		running: env.AnnexRunning, logTail: func() string { return process.FileTail(env.AnnexLog, 40) },
		pids:      map[string]int{"annex": env.AnnexPid(), "kube-apiserver": kubeAPIServer},
		rssLimits: map[string]int64{"annex": stormRSSLimit(), "kube-apiserver": stormAPIServerRSSLimit()},
		refusable: true,
		// Twice the bound straight to annex: every request also passes
		// through the kube-apiserver, which proxies the storm's answers on
		// the same two cores (measured: 9.4 s, with a build beside it).
		othersP99: 2 * stormOthersP99(),
	}}
}

// logFlowControl logs, from annex's /metrics, what API Priority and
// Fairness did in annex for each flow schema that dispatched or rejected
// a request: the requests dispatched and rejected, and the seats their
// work was estimated at.
func logFlowControl(ctx context.Context, t *testing.T, env *framework.Environment) {
	t.Helper()
	families, err := env.AnnexMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	flows := flowControlFigures(families)
	for _, key := range slices.Sorted(maps.Keys(flows)) {
		f := flows[key]
		t.Logf("annex's API Priority and Fairness, flow schema %s: %.0f requests dispatched, %.0f rejected, %.1f seats estimated per request",
			key, f.dispatched, f.rejected, f.seatsPerRequest())
	}
}

// flowFigures are what API Priority and Fairness did with the requests of
// a flow schema: how many it dispatched and rejected, and the seats their
// work was estimated at, in all.
type flowFigures struct {
	dispatched, rejected, seats float64
}

// seatsPerRequest is the seats estimated per request.
func (f flowFigures) seatsPerRequest() float64 { return f.seats / max(f.dispatched+f.rejected, 1) }

// flowControlFigures are a server's API Priority and Fairness figures,
// from its parsed /metrics, by "flow schema (priority level level)".
func flowControlFigures(families map[string]*dto.MetricFamily) map[string]*flowFigures {
	flows := map[string]*flowFigures{}
	of := func(m *dto.Metric) *flowFigures {
		var level, schema string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "priority_level":
				level = l.GetValue()
			case "flow_schema":
				schema = l.GetValue()
			}
		}
		key := schema + " (priority level " + level + ")"
		if flows[key] == nil {
			flows[key] = &flowFigures{}
		}
		return flows[key]
	}
	for _, m := range families["apiserver_flowcontrol_dispatched_requests_total"].GetMetric() {
		of(m).dispatched += m.GetCounter().GetValue()
	}
	for _, m := range families["apiserver_flowcontrol_rejected_requests_total"].GetMetric() {
		of(m).rejected += m.GetCounter().GetValue()
	}
	for _, m := range families["apiserver_flowcontrol_work_estimated_seats"].GetMetric() {
		of(m).seats += m.GetHistogram().GetSampleSum()
	}
	return flows
}

// stormAPIServerRSSLimit bounds the kube-apiserver's peak resident memory
// during a storm through its aggregator, which passes each answer on as it
// comes: 1 GiB at 15,000 reports, 2 GiB at 100,000. One that held the
// answers would pass neither (twenty copies of 43 MiB, of 286 MiB, beside
// its own few hundred MiB).
func stormAPIServerRSSLimit() int64 {
	if long() {
		return 2 << 30
	}
	return 1 << 30
}

// allowStormUsers lets users do anything with the storm's reports and the
// ledgers, and nothing else.
func allowStormUsers(ctx context.Context, t *testing.T, cs kubernetes.Interface, users ...string) {
	t.Helper()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "storm"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{stormReports.Group, ledgers.Group},
			Resources: []string{"*"},
			Verbs:     []string{"*"},
		}},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "storm"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "storm"},
	}
	for _, u := range users {
		binding.Subjects = append(binding.Subjects, rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: u})
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
