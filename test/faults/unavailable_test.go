//go:build integration

package faults

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// probe is one request sent to annex while its store is down, and what the
// test wants of the answer.
type probe struct {
	what, method, path, body string
	// retryAfter: the answer must carry Retry-After (the request may be
	// sent again).
	retryAfter bool
}

// storeDownProbes read and write ledgers while the store is down: none of
// them can be applied, so each must get a 503 with Retry-After. The create
// is of a name the clients never use.
func storeDownProbes() []probe {
	base := "/apis/" + ledgers.Group + "/" + ledgers.Version + "/" + ledgers.Resource
	return []probe{
		{what: "get", method: http.MethodGet, path: base + "/l0", retryAfter: true},
		{what: "list", method: http.MethodGet, path: base, retryAfter: true},
		{what: "create", method: http.MethodPost, path: base, retryAfter: true,
			body: `{"apiVersion":"history.example.com/v1","kind":"Ledger","metadata":{"name":"probe-store-down"},"spec":{"note":"never"}}`},
		{what: "delete", method: http.MethodDelete, path: base + "/probe-absent", retryAfter: true},
	}
}

// probeResult is what a probe got.
type probeResult struct {
	probe
	code       int
	retryAfter string
	body       string
	took       time.Duration
	err        error
}

// send sends p once with a plain HTTP client (client-go would resend a
// request answered with Retry-After by itself).
func (p probe) send(cfg *rest.Config, host string, timeout time.Duration) probeResult {
	res := probeResult{probe: p}
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		res.err = err
		return res
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var body io.Reader
	if p.body != "" {
		body = bytes.NewBufferString(p.body)
	}
	req, err := http.NewRequestWithContext(ctx, p.method, host+p.path, body)
	if err != nil {
		res.err = err
		return res
	}
	req.Header.Set("Accept", "application/json")
	if p.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	started := time.Now()
	resp, err := client.Do(req)
	res.took = time.Since(started)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	res.code, res.retryAfter, res.body = resp.StatusCode, resp.Header.Get("Retry-After"), string(raw)
	return res
}

// probeStoreDown sends each probe, again until it is answered 503 with
// Retry-After or until deadline, and says what is wrong with the answers:
// an answer that is not a 503, a 5xx whose body names one of secrets, a
// probe never answered with Retry-After. The first requests after the
// store went down may find their connection to it lost during the request
// (503 without Retry-After: a write may have been applied); those that
// follow find no connection (503 with Retry-After).
func probeStoreDown(cfg *rest.Config, host string, deadline time.Time, secrets []string) (answers []probeResult, problems []string) {
	for _, p := range storeDownProbes() {
		for {
			res := p.send(cfg, host, 10*time.Second)
			answers = append(answers, res)
			switch {
			case res.err != nil:
				problems = append(problems, fmt.Sprintf("%s: %v", p.what, res.err))
			case res.code != http.StatusServiceUnavailable:
				problems = append(problems, fmt.Sprintf("%s: %d, want 503: %s", p.what, res.code, res.body))
			}
			if res.code >= 500 {
				for _, s := range secrets {
					if strings.Contains(res.body, s) {
						problems = append(problems, fmt.Sprintf("%s: the %d names %q: %s", p.what, res.code, s, res.body))
					}
				}
			}
			if res.code == http.StatusServiceUnavailable && (res.retryAfter != "") == p.retryAfter {
				break
			}
			if time.Now().After(deadline) {
				problems = append(problems, fmt.Sprintf("%s: never answered 503 with Retry-After while the store was down (last: %d, Retry-After %q: %s)",
					p.what, res.code, res.retryAfter, res.body))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return answers, problems
}
