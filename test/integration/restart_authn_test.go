//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"annex.dev/annex/test/integration/framework"
)

// restartProbe lists HostedResources over and over as one client and tallies
// what it gets.
type restartProbe struct {
	name string
	dyn  dynamic.Interface

	mu sync.Mutex
	// outcomes counts each kind of answer: "200", "503 ServiceUnavailable",
	// "no answer" (the connection failed), ...
	outcomes map[string]int
	// forbidden holds the 403s, with when they came after the restart began.
	forbidden []string
	// succeeded is when the last list succeeded.
	succeeded time.Time
}

func newRestartProbe(t *testing.T, name string, cfg *rest.Config) *restartProbe {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = 10 * time.Second
	return &restartProbe{name: name, dyn: dynamicFor(t, cfg), outcomes: map[string]int{}}
}

// run lists until ctx is done, as fast as annex answers.
func (p *restartProbe) run(ctx context.Context, began time.Time) {
	for ctx.Err() == nil {
		_, err := p.dyn.Resource(framework.HostedResources).List(ctx, metav1.ListOptions{Limit: 1})
		if ctx.Err() != nil {
			return
		}
		p.record(err, time.Since(began))
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *restartProbe) record(err error, at time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var status apierrors.APIStatus
	switch {
	case err == nil:
		p.outcomes["200"]++
		p.succeeded = time.Now()
	case errors.As(err, &status) && status.Status().Code != 0:
		s := status.Status()
		p.outcomes[fmt.Sprintf("%d %s", s.Code, s.Reason)]++
		if s.Code == http.StatusForbidden {
			p.forbidden = append(p.forbidden, fmt.Sprintf("%s after the restart began: %s", at.Round(time.Millisecond), s.Message))
		}
	default:
		p.outcomes["no answer"]++
	}
}

func (p *restartProbe) tally() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for outcome, n := range p.outcomes {
		parts = append(parts, fmt.Sprintf("%s: %d", outcome, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// ready says whether annex's /readyz answers 200 to client.
func ready(ctx context.Context, client *http.Client) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.AnnexAnonymousConfig().Host+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestRestartAuthenticatesFromTheStart kills annex and starts it again
// while clients list HostedResources as admins: through the kube-apiserver,
// straight to annex as the aggregator does (the front-proxy certificate and
// X-Remote-User), and straight to annex with a client certificate of the
// cluster's client CA. From the moment annex's new process accepts a
// connection, it must know who sends it: while annex is down or starting,
// a client may get no answer or a 503, never a 403 for system:anonymous.
func TestRestartAuthenticatesFromTheStart(t *testing.T) {
	ctx := testContext(t)
	certAdmin, err := env.AnnexAdminConfig(uniqueName("restart-cert-admin"))
	if err != nil {
		t.Fatal(err)
	}
	probes := []*restartProbe{
		newRestartProbe(t, "through the kube-apiserver", env.Config),
		newRestartProbe(t, "straight to annex as the aggregator", env.AnnexFrontProxyConfig("restart-front-proxy-admin", "system:masters")),
		newRestartProbe(t, "straight to annex with a client certificate", certAdmin),
	}
	for _, p := range probes {
		if _, err := p.dyn.Resource(framework.HostedResources).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
			t.Fatalf("%s, before the restart: %v", p.name, err)
		}
	}

	probing, stopProbing := context.WithCancel(ctx)
	defer stopProbing()
	var running sync.WaitGroup
	began := time.Now()
	for _, p := range probes {
		running.Go(func() { p.run(probing, began) })
	}
	// When annex's new process first reports ready (once the old one is
	// gone), to tell whether a 403 came before or after.
	readyz, err := rest.HTTPClientFor(env.AnnexAnonymousConfig())
	if err != nil {
		t.Fatal(err)
	}
	var firstReady time.Duration
	running.Go(func() {
		down := false
		for probing.Err() == nil {
			at := time.Since(began)
			switch ok := ready(probing, readyz); {
			case !ok:
				down = true
			case down:
				firstReady = at
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	took, err := env.KillAndRestartAnnex(ctx, 2*time.Minute)
	if err != nil {
		stopProbing()
		running.Wait()
		t.Fatalf("killing annex and starting it again: %v", err)
	}
	restarted := time.Now()
	t.Logf("annex ready again %s after its new process started", took.Round(time.Millisecond))
	// Every client gets through again, the aggregator too.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		for _, p := range probes {
			p.mu.Lock()
			ok := p.succeeded.After(restarted)
			p.mu.Unlock()
			if !ok {
				return false, nil
			}
		}
		return true, nil
	})
	stopProbing()
	running.Wait()
	t.Logf("annex's /readyz first answered 200 %s after the restart began", firstReady.Round(time.Millisecond))
	for _, p := range probes {
		t.Logf("%s: %s", p.name, p.tally())
		if !p.succeeded.After(restarted) {
			t.Errorf("%s: no list succeeded within a minute of annex being ready again (%v)", p.name, err)
		}
		if n := len(p.forbidden); n > 0 {
			t.Errorf("%s: %d lists refused with 403 around the restart, want none (no answer or 503 while annex starts); the first %s; the last %s",
				p.name, n, p.forbidden[0], p.forbidden[n-1])
		}
	}
}
