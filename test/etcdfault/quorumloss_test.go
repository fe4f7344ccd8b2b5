//go:build integration

package etcdfault

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"annex.dev/annex/test/integration/framework"
)

// TestQuorumLoss kills two etcd members of three, so that the cluster has no
// quorum, and checks what annex's users see until the members come back:
// every create, get and list is answered within its timeout with an error a
// client can act on, /readyz fails naming etcd, nothing acknowledged is lost,
// annex serves again as soon as the quorum is back, and the watch a client
// had open ends so that the client can resume it.
//
// As measured (etcd v3.6.8 defaults, k8s.io/apiserver v0.36.3):
//   - A create in flight when the quorum goes fails after etcd's request
//     timeout (7s): 500 "etcdserver: request timed out". Later creates wait:
//     the member left drops no proposal but never commits it, and the etcd
//     client resends a write that etcd never took into its log. They end with
//     504 Timeout at the request's timeout (34s for a create by default).
//   - Gets and lists wait the same way (the etcd client retries reads) and
//     end with 504 at their timeout (60s, --request-timeout, by default).
//     k8s.io/apiserver's timeout filter races with the handler's own error at
//     that deadline; when the handler has begun its answer, the filter resets
//     the HTTP/2 stream instead (filters/timeout.go), so a client may see
//     "stream error: INTERNAL_ERROR" instead of the 504.
//   - /readyz answers 500 with "[-]etcd-readiness failed" from about 2s after
//     the loss; /livez answers 500 with "[-]etcd failed" too, so a liveness
//     probe on /livez restarts annex during a long etcd outage.
//   - After about 30s without a leader, the watch cache re-initializes: open
//     watches end (a clean end of the stream, no ERROR event) and lists
//     answer 429 "storage is (re)initializing" with Retry-After at once.
//     Resuming from the last resourceVersion seen after the quorum is back
//     answers 410 Expired ("too old resource version"): the client relists,
//     as client-go's reflector does.
//   - Requests waiting when the quorum comes back succeed; /readyz answers
//     200 within milliseconds of the cluster's recovery.
//
// The clients send ?timeout=15s, as kubectl --request-timeout=15s and
// client-go with a Timeout do, to keep the test short.
func TestQuorumLoss(t *testing.T) {
	const (
		before = 50
		after  = 10
		// timeout is what the clients ask annex to give up after.
		timeout = 15 * time.Second
		// bound is how long a client waits for any answer before the test
		// calls it a hang.
		bound = timeout + 5*time.Second
		// The outage lasts at least minOutage and until every probe has
		// been answered twice and annex has ended the open watch, or at most
		// maxOutage.
		minOutage = 15 * time.Second
		maxOutage = 50 * time.Second
	)
	cluster := framework.StartEtcdCluster(t, 3)
	a := startAnnex(t, cluster)
	ctx := context.Background()
	a.installRecords(ctx)

	var acked []string
	for i := range before {
		name := fmt.Sprintf("before-%03d", i)
		r := a.createRecord(ctx, name, 0, i)
		if !r.ok() {
			t.Fatalf("creating %s with the cluster whole: %s", name, r.describe())
		}
		acked = append(acked, name)
	}
	_, listRV, err := a.listRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := a.watchRecords(listRV)
	defer w.stop()

	leader, err := cluster.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var follower *framework.EtcdMember
	for _, m := range cluster.Members {
		if m != leader {
			follower = m
			break
		}
	}
	killed := time.Now()
	for _, m := range []*framework.EtcdMember{leader, follower} {
		if err := m.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("killed the leader %s and the follower %s; %s is alone", leader.Name, follower.Name, survivor(cluster, leader, follower).Name)

	q := fmt.Sprintf("timeout=%ds", int(timeout.Seconds()))
	probes := []struct {
		name string
		send func(i int) response
	}{
		{"create", func(i int) response {
			return a.do(ctx, http.MethodPost, recordsPath+"?"+q, fmt.Appendf(nil,
				`{"apiVersion":"%s/v1","kind":"Record","metadata":{"name":"during-%03d"},"spec":{"worker":1,"seq":%d}}`, group, i, i))
		}},
		{"get", func(int) response { return a.do(ctx, http.MethodGet, recordsPath+"/before-000?"+q, nil) }},
		{"list", func(int) response { return a.do(ctx, http.MethodGet, recordsPath+"?"+q, nil) }},
		{"readyz", func(int) response { return a.do(ctx, http.MethodGet, "/readyz?verbose", nil) }},
		{"livez", func(int) response { return a.do(ctx, http.MethodGet, "/livez?verbose", nil) }},
	}
	var mu sync.Mutex
	results := map[string][]response{}
	answers := func(name string) []response {
		mu.Lock()
		defer mu.Unlock()
		return append([]response(nil), results[name]...)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopProbes := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopProbes()
	for _, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				r := p.send(i)
				mu.Lock()
				results[p.name] = append(results[p.name], r)
				mu.Unlock()
				select {
				case <-stop:
					return
				case <-time.After(250 * time.Millisecond):
				}
			}
		}()
	}
	for {
		time.Sleep(100 * time.Millisecond)
		enough := true
		for _, p := range probes {
			enough = enough && len(answers(p.name)) >= 2
		}
		ended, _, _ := w.ended()
		if time.Since(killed) > maxOutage || (time.Since(killed) > minOutage && enough && ended) {
			break
		}
	}
	restarted := time.Now()
	for _, m := range []*framework.EtcdMember{leader, follower} {
		if err := m.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = cluster.WaitHealthy(wctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	healthy := time.Now()
	t.Logf("restarted both members %s after the kill; the cluster had a leader and had caught up %s later",
		restarted.Sub(killed).Round(time.Millisecond), healthy.Sub(restarted).Round(time.Millisecond))

	// Recovery, as a user sees it: /readyz, a create and a list succeed.
	var readyAt, createdAt, listedAt time.Time
	for i := 0; readyAt.IsZero() || createdAt.IsZero() || listedAt.IsZero(); i++ {
		if time.Since(healthy) > 60*time.Second {
			t.Fatalf("annex did not recover within 60s of the cluster: ready %v, created %v, listed %v",
				!readyAt.IsZero(), !createdAt.IsZero(), !listedAt.IsZero())
		}
		if readyAt.IsZero() && a.do(ctx, http.MethodGet, "/readyz", nil).code == http.StatusOK {
			readyAt = time.Now()
		}
		if createdAt.IsZero() {
			name := fmt.Sprintf("recovery-%03d", i)
			if a.createRecord(ctx, name, 2, i).ok() {
				createdAt = time.Now()
				acked = append(acked, name)
			}
		}
		if listedAt.IsZero() {
			if _, _, err := a.listRecords(ctx); err == nil {
				listedAt = time.Now()
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopProbes()
	t.Logf("after the cluster recovered: /readyz 200 after %s, first create after %s, first list after %s",
		readyAt.Sub(healthy).Round(time.Millisecond), createdAt.Sub(healthy).Round(time.Millisecond), listedAt.Sub(healthy).Round(time.Millisecond))

	// What the clients saw during the outage.
	for _, p := range probes {
		var during []response
		for _, r := range answers(p.name) {
			if r.started.Before(restarted) {
				during = append(during, r)
			}
		}
		t.Logf("%s during the outage:%s", p.name, summarize(during, killed))
	}
	aborted := 0
	for _, name := range []string{"create", "get", "list"} {
		for _, r := range answers(name) {
			if !r.started.Before(restarted) {
				break
			}
			answered := r.started.Add(r.took)
			switch {
			case abortedAtTimeout(r, timeout):
				// k8s.io/apiserver's timeout filter and the handler's own
				// error race at the deadline; when the handler has begun its
				// answer, the filter resets the stream (filters/timeout.go).
				aborted++
			case r.err != nil:
				t.Errorf("%s sent at +%s got no answer: %v", name, r.started.Sub(killed).Round(time.Millisecond), r.err)
			case r.took > bound:
				t.Errorf("%s sent at +%s took %s, more than %s", name, r.started.Sub(killed).Round(time.Millisecond), r.took, bound)
			case r.ok() && answered.Before(restarted):
				t.Errorf("%s sent at +%s succeeded without a quorum: %s", name, r.started.Sub(killed).Round(time.Millisecond), oneLine(r))
			case r.ok():
				// Sent during the outage, answered once the quorum was back.
			case !clearFailure(r):
				t.Errorf("%s sent at +%s failed without a clear Status: %s", name, r.started.Sub(killed).Round(time.Millisecond), r.describe())
			}
		}
	}

	if aborted > 0 {
		t.Logf("%d requests were cut off at their %s timeout with a reset stream instead of a 504", aborted, timeout)
	}

	// /readyz fails, naming etcd; /livez is recorded.
	var firstUnready time.Time
	for _, r := range answers("readyz") {
		if r.started.After(restarted) {
			break
		}
		if r.took > bound {
			t.Errorf("/readyz sent at +%s took %s", r.started.Sub(killed).Round(time.Millisecond), r.took)
		}
		if r.code != http.StatusOK && firstUnready.IsZero() {
			firstUnready = r.started.Add(r.took)
			if !strings.Contains(string(r.body), "[-]etcd") {
				t.Errorf("/readyz failed without naming etcd:\n%s", r.body)
			}
		}
		// A /readyz sent before the members' restart may be answered
		// after it, with the quorum back: only an answer before the
		// restart is one without a quorum.
		if r.code == http.StatusOK && r.started.After(killed.Add(10*time.Second)) && r.started.Add(r.took).Before(restarted) {
			t.Errorf("/readyz sent at +%s answered 200 after %s, without a quorum", r.started.Sub(killed).Round(time.Millisecond), r.took.Round(time.Millisecond))
		}
	}
	if firstUnready.IsZero() {
		t.Errorf("/readyz never failed during the outage")
	} else {
		t.Logf("/readyz failed %s after the kill", firstUnready.Sub(killed).Round(time.Millisecond))
	}
	for _, r := range answers("livez") {
		if r.code != http.StatusOK && r.started.Before(restarted) {
			t.Logf("/livez failed %s after the kill (it includes the etcd check): %s", r.started.Add(r.took).Sub(killed).Round(time.Millisecond), failedChecks(r))
			break
		}
	}

	// Nothing acknowledged is lost; creates answered with an error during
	// the outage are reported if they were stored anyway.
	for i := range after {
		name := fmt.Sprintf("after-%03d", i)
		if r := a.createRecord(ctx, name, 3, i); !r.ok() {
			t.Errorf("creating %s after recovery: %s", name, r.describe())
		} else {
			acked = append(acked, name)
		}
	}
	stored, _, err := a.listRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lost []string
	for _, n := range acked {
		if !stored[n] {
			lost = append(lost, n)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d acknowledged records are missing after the outage: %v", len(lost), lost)
	}
	// The creates sent during the outage: acknowledged ones are stored (the
	// check above), and failed ones that were stored anyway are reported.
	var ackedDuring, failedStored []string
	for i, r := range answers("create") {
		name := fmt.Sprintf("during-%03d", i)
		switch {
		case r.ok():
			ackedDuring = append(ackedDuring, name)
			if !stored[name] {
				t.Errorf("the create of %s was acknowledged (sent +%s) but it is missing", name, r.started.Sub(killed).Round(time.Millisecond))
			}
		case stored[name]:
			failedStored = append(failedStored, name)
		}
	}
	t.Logf("%d records stored; creates sent during the outage: %d acknowledged (answered after the restart) %v; failed but stored anyway: %v",
		len(stored), len(ackedDuring), ackedDuring, failedStored)

	// The watch opened before the outage either still delivers, or it has
	// ended and a client resumes it as a reflector does: from the last
	// resourceVersion it saw, relisting if annex answers 410 Expired.
	var wantEvents []string
	for n := range stored {
		if !strings.HasPrefix(n, "before-") {
			wantEvents = append(wantEvents, n)
		}
	}
	sort.Strings(wantEvents)
	if ended, _, _ := w.ended(); !ended {
		missing := w.waitFor(wantEvents, 15*time.Second)
		if ended, how, at := w.ended(); ended {
			t.Logf("the watch opened before the outage ended %s after the kill, after the restart: %s", at.Sub(killed).Round(time.Millisecond), how)
		} else if len(missing) > 0 {
			t.Errorf("the watch opened before the outage is still open but missed %v", missing)
		} else {
			t.Logf("the watch opened before the outage stayed open and delivered every create made after the list")
		}
	}
	if ended, how, at := w.ended(); ended {
		events := w.snapshot()
		for _, e := range events {
			if e.Type == "ERROR" {
				t.Logf("the watch delivered an ERROR event: %s", e.Object)
			}
		}
		resumeRV := lastRV(events)
		if resumeRV == "" {
			resumeRV = listRV
		}
		t.Logf("the watch opened before the outage ended %s after the kill, with %d events: %s; resuming from resourceVersion %s",
			at.Sub(killed).Round(time.Millisecond), len(events), how, resumeRV)
		resumed := a.watchRecords(resumeRV)
		defer resumed.stop()
		missing := resumed.waitFor(wantEvents, 15*time.Second)
		if s := watchError(resumed.snapshot()); s != nil && s.Code == http.StatusGone {
			t.Logf("resuming from %s: %d %s %q: the client relists and watches from the list", resumeRV, s.Code, s.Reason, s.Message)
			names, rv, err := a.listRecords(ctx)
			if err != nil {
				t.Fatalf("relisting after 410: %v", err)
			}
			for _, n := range acked {
				if !names[n] {
					t.Errorf("the relist misses acknowledged %s", n)
				}
			}
			rewatch := a.watchRecords(rv)
			defer rewatch.stop()
			if r := a.createRecord(ctx, "relisted-000", 4, 0); !r.ok() {
				t.Fatalf("creating relisted-000: %s", r.describe())
			}
			if missing := rewatch.waitFor([]string{"relisted-000"}, 15*time.Second); len(missing) > 0 {
				t.Errorf("the watch from the relist's resourceVersion %s did not deliver relisted-000", rv)
			}
		} else {
			if ended, how, _ := resumed.ended(); ended {
				t.Errorf("the watch resumed from %s ended: %s", resumeRV, how)
			}
			if len(missing) > 0 {
				t.Errorf("the watch resumed from %s missed %v", resumeRV, missing)
			}
			t.Logf("the watch resumed from %s delivered every create made after it", resumeRV)
		}
		for _, e := range resumed.snapshot() {
			if name, _ := e.meta(); strings.HasPrefix(name, "before-") {
				t.Errorf("the watch resumed from %s replayed %s %s, which the client had seen", resumeRV, e.Type, name)
			}
		}
	}
}

// clearFailure says whether r is a failure a client can act on: a Status
// with a 5xx code, or 429 with Retry-After, which client-go retries.
func clearFailure(r response) bool {
	s, ok := r.status()
	if !ok || r.err != nil {
		return false
	}
	switch r.code {
	case http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return s.Code == int32(r.code)
	case http.StatusTooManyRequests:
		return r.retryAfter != ""
	}
	return false
}

// abortedAtTimeout says whether the server reset the stream of r at the
// timeout the client asked for.
func abortedAtTimeout(r response, timeout time.Duration) bool {
	if r.err == nil || !strings.Contains(r.err.Error(), "INTERNAL_ERROR") {
		return false
	}
	return r.took > timeout-time.Second && r.took < timeout+time.Second
}

// oneLine is a short description of a response.
func oneLine(r response) string {
	if r.ok() {
		return fmt.Sprint(r.code)
	}
	if _, isStatus := r.status(); !isStatus && r.err == nil {
		return fmt.Sprintf("%d %s", r.code, failedChecks(r))
	}
	return r.describe()
}

// failedChecks lists the failed checks of a verbose health response.
func failedChecks(r response) string {
	var failed []string
	for _, line := range strings.Split(string(r.body), "\n") {
		if strings.HasPrefix(line, "[-]") {
			failed = append(failed, line)
		}
	}
	return strings.Join(failed, ", ")
}

// summarize groups responses by what they said: how many, when the first
// and last were sent (after the kill), and how long they took.
func summarize(rs []response, killed time.Time) string {
	type group struct {
		n                int
		first, last      time.Duration
		fastest, slowest time.Duration
	}
	groups := map[string]*group{}
	var order []string
	for _, r := range rs {
		what := oneLine(r)
		g, ok := groups[what]
		if !ok {
			g = &group{first: r.started.Sub(killed), fastest: r.took}
			groups[what] = g
			order = append(order, what)
		}
		g.n++
		g.last = r.started.Sub(killed)
		g.fastest, g.slowest = min(g.fastest, r.took), max(g.slowest, r.took)
	}
	var b strings.Builder
	for _, what := range order {
		g := groups[what]
		fmt.Fprintf(&b, "\n    %3d x %s\n          sent +%s to +%s, took %s to %s", g.n, what,
			g.first.Round(time.Millisecond), g.last.Round(time.Millisecond), g.fastest.Round(time.Millisecond), g.slowest.Round(time.Millisecond))
	}
	return b.String()
}

func survivor(c *framework.EtcdCluster, dead ...*framework.EtcdMember) *framework.EtcdMember {
	for _, m := range c.Members {
		alive := true
		for _, d := range dead {
			alive = alive && m != d
		}
		if alive {
			return m
		}
	}
	return nil
}
