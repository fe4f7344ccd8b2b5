package kubectlannex

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A request the aggregator did not send on is sent again, its body
// included, until annex answers; annex's own 503 is returned at once.
func TestRetryNotSent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		unsent    string // the 503's body for the first two requests
		header    string // a Retry-After on the 503
		wantCalls int32
		wantCode  int
	}{
		{"the APIService not available", "service unavailable\n", "", 3, http.StatusOK},
		{"annex's port refusing connections", "dial tcp 127.0.0.1:8443: connect: connection refused\n", "", 3, http.StatusOK},
		{"annex's own 503", `{"kind":"Status","code":503,"message":"the store of x is unavailable"}`, "", 1, http.StatusServiceUnavailable},
		{"a 503 with Retry-After", "service unavailable\n", "1", 1, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				body, _ := io.ReadAll(req.Body)
				if string(body) != `{"spec":{}}` {
					t.Errorf("request %d came with body %q", calls.Load()+1, body)
				}
				if calls.Add(1) <= 2 {
					if tc.header != "" {
						w.Header().Set("Retry-After", tc.header)
					}
					w.WriteHeader(http.StatusServiceUnavailable)
					io.WriteString(w, tc.unsent)
					return
				}
				io.WriteString(w, "{}")
			}))
			defer srv.Close()
			client := &http.Client{Transport: retryNotSent{rt: http.DefaultTransport, wait: time.Millisecond}}
			resp, err := client.Post(srv.URL, "application/json", strings.NewReader(`{"spec":{}}`))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode || calls.Load() != tc.wantCalls {
				t.Fatalf("answered %d after %d requests, want %d after %d", resp.StatusCode, calls.Load(), tc.wantCode, tc.wantCalls)
			}
			if tc.wantCode == http.StatusServiceUnavailable && string(body) != tc.unsent {
				t.Errorf("the 503's body came back as %q, want %q", body, tc.unsent)
			}
		})
	}
}
