//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"annex.dev/annex/test/integration/framework"
	"annex.dev/annex/test/process"
)

const (
	// overloadClients each have a priority level of their own, with the
	// smallest share of annex's seats (a few) and no queue: a request beyond
	// them is refused at once with 429.
	overloadClients = 3
	// overloadFactor is how many times the sustainable rate is offered.
	overloadFactor = 10
	// overloadPhase is how long each phase drives annex.
	overloadPhase = 10 * time.Second
	// overloadRSSLimit bounds annex's peak resident memory over the test.
	overloadRSSLimit = 2 << 30
)

// TestOverload drives annex with ten times the create rate it sustains,
// from three clients that API Priority and Fairness, configured in the
// cluster as annex's operators configure it, puts in priority levels of
// their own. It checks what the clients and annex's operator notice: the
// excess is refused with 429 and a Retry-After, nothing else fails, every
// client still gets creates through, annex's memory stays bounded, and
// every create acknowledged is stored. It logs the latency of the admitted
// requests against the sustainable rate's.
func TestOverload(t *testing.T) {
	ctx := testContext(t)
	ns := createNamespace(t, "overload")
	gvr := serveHostedType(t, "Burst", "bursts", uniqueName("overload")+".example.com", ns)
	users := configureOverloadLevels(t, ctx)
	execution := func() histogram { return apfExecution(t, ctx, users) }
	seats := apfSeats(t, ctx, users)

	base := env.AnnexURL() + "/apis/" + gvr.Group + "/" + gvr.Version + "/namespaces/" + ns + "/" + gvr.Resource
	clients := make([]*overloadClient, overloadClients)
	for i, user := range users {
		hc, err := rest.HTTPClientFor(env.AnnexFrontProxyConfig(user, "system:authenticated"))
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = &overloadClient{user: user, http: hc, url: base, kind: "Burst", apiVersion: gvr.GroupVersion().String()}
	}

	beforeSustained := execution()
	// Sustainable: each client keeps each seat of its priority level busy,
	// one request after another, so that nothing is refused: the work
	// annex admits under overload, without the excess.
	sustained := runOverloadPhase(ctx, clients, func(c *overloadClient, r *overloadResult, stop <-chan struct{}) {
		var wg sync.WaitGroup
		for range seats[c.user] {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					c.create(ctx, r)
				}
			})
		}
		wg.Wait()
	})
	if sustained.refused.Load() > 0 || sustained.failed() > 0 {
		t.Fatalf("at the sustainable rate: %d refused, other failures %v", sustained.refused.Load(), sustained.errors())
	}
	afterSustained := execution()
	rate := float64(sustained.created()) / overloadPhase.Seconds()
	baseP99 := afterSustained.minus(beforeSustained).quantile(0.99)
	t.Logf("sustainable: %d creates in %s (%.0f/s); p99 %s as the clients saw it, %s in annex's flow control (execution)",
		sustained.created(), overloadPhase, rate, sustained.p99(), baseP99)
	if rate < 1 {
		t.Fatalf("annex sustained %.1f creates/s", rate)
	}

	// Overload: each client offers its share of ten times that rate, on a
	// clock, whatever annex answers.
	interval := time.Duration(float64(time.Second) * overloadClients / (overloadFactor * rate))
	overloaded := runOverloadPhase(ctx, clients, func(c *overloadClient, r *overloadResult, stop <-chan struct{}) {
		var wg sync.WaitGroup
		defer wg.Wait()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.create(ctx, r)
				}()
			}
		}
	})
	overP99 := execution().minus(afterSustained).quantile(0.99)
	offered := overloaded.created() + int(overloaded.refused.Load()) + overloaded.failed()
	t.Logf("overload: %d offered (%.0f/s), %d created, %d refused with 429, %d other failures; admitted p99 %s in annex's flow control (execution), "+
		"%s as the clients saw it; 429 p99 %s as the clients saw it",
		offered, float64(offered)/overloadPhase.Seconds(), overloaded.created(), overloaded.refused.Load(), overloaded.failed(),
		overP99, overloaded.p99(), overloaded.refusedP99())

	if overloaded.refused.Load() == 0 {
		t.Errorf("no request was refused with 429 at %dx the sustainable rate", overloadFactor)
	}
	if n := overloaded.noRetryAfter.Load(); n > 0 {
		t.Errorf("%d responses with 429 had no Retry-After header", n)
	}
	if overloaded.failed() > 0 {
		t.Errorf("answers other than 201 and 429: %v", overloaded.errors())
	}
	for _, c := range clients {
		if got := overloaded.perUser(c.user); got == 0 {
			t.Errorf("client %s got no create through: its priority level did not protect it", c.user)
		}
	}
	// The goal is an admitted p99 within twice the sustainable one. It is
	// not met where the clients share annex's cores: refusing the excess
	// costs CPU (TLS, HTTP/2, authentication, classification) that the
	// admitted requests then wait for, in annex and in the clients. The
	// figures are logged and kept in docs/reliability.md, not asserted.
	t.Logf("admitted p99 in annex under overload / sustainable: %.1fx (goal <= 2x); admitted creates/s under overload / sustainable: %.2f",
		float64(overP99)/float64(max(baseP99, time.Microsecond)), float64(overloaded.created())/float64(max(sustained.created(), 1)))
	if peak := annexPeakRSS(t); peak > overloadRSSLimit {
		t.Errorf("annex's peak RSS %d MiB is above %d MiB", peak>>20, overloadRSSLimit>>20)
	} else {
		t.Logf("annex's peak RSS: %d MiB", peak>>20)
	}

	// Nothing acknowledged is lost.
	stored := listOverloadNames(t, ctx, clients[0])
	for _, r := range []*overloadResult{sustained, overloaded} {
		for _, name := range r.names() {
			if !stored[name] {
				t.Errorf("%s was acknowledged (201) but is not stored", name)
			}
		}
	}
}

// configureOverloadLevels makes, in the cluster, a priority level with
// the smallest share of seats and no queue for each of overloadClients users, and
// a FlowSchema that puts the user in it; it returns the users once annex
// applies the levels (its /debug/api_priority_and_fairness dump names them).
func configureOverloadLevels(t *testing.T, ctx context.Context) []string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for i := range overloadClients {
		name := uniqueName(fmt.Sprintf("overload-%d", i))
		users = append(users, name)
		remove, err := framework.CreateRejectingLevel(ctx, cs, name, name, 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(remove)
	}
	// The test's users may create the type's objects.
	bindOverloadUsers(t, ctx, cs, users)

	admin, err := env.AnnexAdminConfig("overload-admin")
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(admin)
	if err != nil {
		t.Fatal(err)
	}
	var dump string
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, env.AnnexURL()+"/debug/api_priority_and_fairness/dump_priority_levels", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false, nil
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		dump = string(body)
		for _, u := range users {
			if !strings.Contains(dump, u) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("annex did not apply the test's priority levels: %v\n%s", err, dump)
	}
	return users
}

// bindOverloadUsers lets users create and list any object, through the
// cluster's RBAC, which annex asks.
func bindOverloadUsers(t *testing.T, ctx context.Context, cs kubernetes.Interface, users []string) {
	t.Helper()
	name := uniqueName("overload-writers")
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{Verbs: []string{"create", "get", "list"}, APIGroups: []string{"*"}, Resources: []string{"*"}}},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
	}
	for _, u := range users {
		binding.Subjects = append(binding.Subjects, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: u})
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = cs.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// overloadClient creates objects as one user, straight to annex (so that
// only annex's flow control stands between it and the store), with no
// client-side rate limit and no retry.
type overloadClient struct {
	user, url, kind, apiVersion string
	http                        *http.Client
	seq                         atomic.Int64
}

// overloadResult is what one phase's requests got.
type overloadResult struct {
	mu           sync.Mutex
	latencies    []time.Duration // of creates answered 201
	refusedLats  []time.Duration // of 429s
	acknowledged []string
	byUser       map[string]int
	other        map[string]int // other answers and errors, by text

	refused      atomic.Int64
	noRetryAfter atomic.Int64
}

func (c *overloadClient) create(ctx context.Context, r *overloadResult) {
	name := fmt.Sprintf("%s-%d", c.user, c.seq.Add(1))
	body, _ := json.Marshal(map[string]any{
		"apiVersion": c.apiVersion, "kind": c.kind,
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"size": 1},
	})
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		r.note(err.Error())
		return
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := c.http.Do(req)
	took := time.Since(start)
	if err != nil {
		r.note(err.Error())
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusCreated:
		r.mu.Lock()
		r.latencies = append(r.latencies, took)
		r.acknowledged = append(r.acknowledged, name)
		r.byUser[c.user]++
		r.mu.Unlock()
	case http.StatusTooManyRequests:
		r.refused.Add(1)
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
			r.noRetryAfter.Add(1)
		}
		r.mu.Lock()
		r.refusedLats = append(r.refusedLats, took)
		r.mu.Unlock()
	default:
		r.note(resp.Status)
	}
}

func (r *overloadResult) note(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.other[what]++
}

func (r *overloadResult) created() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.acknowledged)
}

func (r *overloadResult) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.acknowledged)
}

func (r *overloadResult) perUser(user string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byUser[user]
}

func (r *overloadResult) failed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.other {
		n += c
	}
	return n
}

func (r *overloadResult) errors() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.other)
}

func (r *overloadResult) p99() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return percentile99(r.latencies)
}

func (r *overloadResult) refusedP99() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return percentile99(r.refusedLats)
}

func percentile99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)*99)/100]
}

// runOverloadPhase runs drive for each client for overloadPhase and waits
// until every request it sent is answered.
func runOverloadPhase(ctx context.Context, clients []*overloadClient, drive func(*overloadClient, *overloadResult, <-chan struct{})) *overloadResult {
	r := &overloadResult{byUser: map[string]int{}, other: map[string]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			drive(c, r, stop)
		}()
	}
	select {
	case <-time.After(overloadPhase):
	case <-ctx.Done():
	}
	close(stop)
	wg.Wait()
	return r
}

// annexPeakRSS reads annex's peak resident memory (VmHWM) since it started.
func annexPeakRSS(t *testing.T) int64 {
	t.Helper()
	peak, err := process.PeakRSS(env.AnnexPid())
	if err != nil {
		t.Fatal(err)
	}
	return peak
}

// listOverloadNames lists the type's objects in pages, as c's user.
func listOverloadNames(t *testing.T, ctx context.Context, c *overloadClient) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	cont := ""
	for {
		var list struct {
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
			Items []struct {
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			} `json:"items"`
		}
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"?limit=500&continue="+url.QueryEscape(cont), nil)
			resp, err := c.http.Do(req)
			if err != nil {
				return false, nil
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false, nil
			}
			return true, json.NewDecoder(resp.Body).Decode(&list)
		})
		if err != nil {
			t.Fatalf("listing the created objects: %v", err)
		}
		for _, item := range list.Items {
			names[item.Metadata.Name] = true
		}
		if cont = list.Metadata.Continue; cont == "" {
			return names
		}
	}
}

// histogram is a Prometheus histogram's cumulative counts by upper bound.
type histogram map[float64]float64

func (h histogram) minus(earlier histogram) histogram {
	out := histogram{}
	for le, n := range h {
		out[le] = n - earlier[le]
	}
	return out
}

// quantile estimates the q-quantile as Prometheus's histogram_quantile does:
// linearly within the bucket that holds it.
func (h histogram) quantile(q float64) time.Duration {
	bounds := slices.Sorted(maps.Keys(h))
	if len(bounds) == 0 || h[bounds[len(bounds)-1]] == 0 {
		return 0
	}
	rank := q * h[bounds[len(bounds)-1]]
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		if h[le] >= rank {
			if math.IsInf(le, 1) {
				return time.Duration(lower * float64(time.Second))
			}
			frac := (rank - below) / (h[le] - below)
			return time.Duration((lower + (le-lower)*frac) * float64(time.Second))
		}
		lower, below = le, h[le]
	}
	return time.Duration(lower * float64(time.Second))
}

// apfSeats reads from annex's /metrics how many seats each of the given
// priority levels has (they neither lend nor borrow).
func apfSeats(t *testing.T, ctx context.Context, levels []string) map[string]int {
	t.Helper()
	seats := map[string]int{}
	for _, m := range annexMetrics(t, ctx)["apiserver_flowcontrol_nominal_limit_seats"].GetMetric() {
		if level := labelValue(m, "priority_level"); slices.Contains(levels, level) {
			seats[level] = int(m.GetGauge().GetValue())
		}
	}
	for _, level := range levels {
		if seats[level] < 1 {
			t.Fatalf("annex's /metrics gives priority level %s %d seats", level, seats[level])
		}
	}
	t.Logf("seats of the test's priority levels in annex: %v", seats)
	return seats
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// annexMetrics reads and parses annex's /metrics.
func annexMetrics(t *testing.T, ctx context.Context) map[string]*dto.MetricFamily {
	t.Helper()
	families, err := env.AnnexMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// apfExecution reads from annex's /metrics the histogram of how long
// requests of the given priority levels held their seats, summed.
func apfExecution(t *testing.T, ctx context.Context, levels []string) histogram {
	t.Helper()
	h := histogram{}
	for _, m := range annexMetrics(t, ctx)["apiserver_flowcontrol_request_execution_seconds"].GetMetric() {
		if !slices.Contains(levels, labelValue(m, "priority_level")) {
			continue
		}
		hasInf := false
		for _, b := range m.GetHistogram().GetBucket() {
			h[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			hasInf = hasInf || math.IsInf(b.GetUpperBound(), 1)
		}
		if !hasInf {
			h[math.Inf(1)] += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return h
}
