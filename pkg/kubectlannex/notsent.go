package kubectlannex

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"time"
)

// notSentRetries is how many times a request the cluster's aggregator did
// not send on to annex is sent again, notSentWait apart: annex starting
// again, or the cluster's check of annex's APIService failing for a
// moment, lasts seconds, and the command should ride through it.
const (
	notSentRetries = 15
	notSentWait    = time.Second
)

// retryNotSent sends again, notSentWait apart, the requests the
// kube-apiserver's aggregator answered 503 without sending them on to
// annex: its "service unavailable" (the APIService not available) and its
// proxy error of a refused connection. Such a request did nothing, so any
// request, a write included, may be sent again. Any other answer (annex's
// own 503s, with their reason, and those with Retry-After, which client-go
// follows itself) is returned as it came.
type retryNotSent struct {
	rt   http.RoundTripper
	wait time.Duration
}

func (r retryNotSent) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := r.rt.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "" ||
			attempt == notSentRetries || req.Body != nil && req.GetBody == nil {
			return resp, err
		}
		head, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if !aggregatorDidNotSend(string(head)) {
			rest := resp.Body
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(head), rest), rest}
			return resp, nil
		}
		resp.Body.Close()
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(r.wait):
		}
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

// aggregatorDidNotSend says whether a 503's body is one of the aggregator's
// answers to a request it did not send on: plain text, not a Status.
func aggregatorDidNotSend(body string) bool {
	body = strings.TrimSpace(body)
	return body == "service unavailable" || !strings.HasPrefix(body, "{") && strings.Contains(body, "connect: connection refused")
}
