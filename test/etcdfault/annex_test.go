//go:build integration

// Package etcdfault runs annex in standalone mode against a real
// three-member etcd cluster (separate etcd processes on 127.0.0.1, mutual
// TLS) and breaks the cluster under it: one member killed while clients
// write, then a quorum lost and regained. The tests check what annex's
// users notice: which requests fail and how, whether anything acknowledged
// is lost, what /readyz and /livez say, and what happens to open watches.
package etcdfault

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"annex.dev/annex/test/annexserver"
	"annex.dev/annex/test/integration/framework"
)

const (
	// group, resource and recordsPath locate the hosted type the tests write.
	group       = "fault.example.com"
	resource    = "records"
	recordsPath = "/apis/" + group + "/v1/" + resource

	records = `{
  "apiVersion": "annex.dev/v1alpha1",
  "kind": "HostedResource",
  "metadata": {"name": "records.fault.example.com"},
  "spec": {
    "group": "fault.example.com",
    "names": {"kind": "Record", "plural": "records"},
    "scope": "Cluster",
    "versions": [{
      "name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"worker": {"type": "integer"}, "seq": {"type": "integer"}}}
      }}}
    }]
  }
}`
)

// annex is one annex-apiserver process in standalone mode.
type annex struct {
	*annexserver.Server
	t      *testing.T
	base   string
	config *rest.Config
	// client sends requests as the admin, without client-go's retries, so
	// that every response annex gives is seen as it is.
	client *http.Client
}

// startAnnex runs annex in standalone mode with its data in the etcd cluster
// and waits until it is ready. Its cleanup is registered after the
// cluster's, so it runs first: annex stops before etcd does.
func startAnnex(t *testing.T, cluster *framework.EtcdCluster, extraArgs ...string) *annex {
	t.Helper()
	s := annexserver.StartT(t, &annexserver.Server{Args: append([]string{
		"--etcd-servers=" + strings.Join(cluster.ClientURLs(), ","),
		"--etcd-cafile=" + cluster.CAFile, "--etcd-certfile=" + cluster.CertFile, "--etcd-keyfile=" + cluster.KeyFile,
	}, extraArgs...)})
	a := &annex{Server: s, t: t, base: s.URL(), config: annexserver.AdminConfigT(t, s)}
	var err error
	if a.client, err = rest.HTTPClientFor(a.config); err != nil {
		t.Fatal(err)
	}
	return a
}

// response is what annex answered to one request, or the error that
// stopped the client from getting an answer.
type response struct {
	code int
	// retryAfter is the Retry-After header, which client-go obeys.
	retryAfter string
	body       []byte
	err        error
	took       time.Duration
	started    time.Time
}

// status decodes the body as a metav1.Status, as API errors carry. The 504
// that k8s.io/apiserver's timeout filter writes has no kind and apiVersion,
// so a Status is recognized by its status and code.
func (r response) status() (*metav1.Status, bool) {
	var s metav1.Status
	if err := json.Unmarshal(r.body, &s); err != nil || s.Status != metav1.StatusFailure || int(s.Code) != r.code {
		return nil, false
	}
	return &s, true
}

func (r response) ok() bool { return r.err == nil && r.code >= 200 && r.code < 300 }

// describe summarizes a failed response in one line: the code and the
// Status reason and message, or the transport error.
func (r response) describe() string {
	if r.err != nil {
		return "no response: " + r.err.Error()
	}
	if s, ok := r.status(); ok {
		d := fmt.Sprintf("%d reason=%q: %s", r.code, s.Reason, s.Message)
		if r.retryAfter != "" {
			d += " (Retry-After: " + r.retryAfter + ")"
		}
		return d
	}
	body := string(r.body)
	if len(body) > 200 {
		body = body[:200] + "..."
	}
	return fmt.Sprintf("%d %s", r.code, strings.TrimSpace(body))
}

// requestTimeout bounds a client's wait for any one response: annex's own
// request timeout (60s by default) and a margin. A request that hits it
// counts as a hang.
const requestTimeout = 75 * time.Second

// do sends one request as the admin and reads the whole response.
func (a *annex) do(ctx context.Context, method, path string, body []byte) response {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	r := response{started: time.Now()}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, bytes.NewReader(body))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		r.err, r.took = err, time.Since(r.started)
		return r
	}
	defer resp.Body.Close()
	r.code, r.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	r.body, r.err = io.ReadAll(resp.Body)
	r.took = time.Since(r.started)
	return r
}

// createRecord creates the record name.
func (a *annex) createRecord(ctx context.Context, name string, worker, seq int) response {
	body := fmt.Sprintf(`{"apiVersion":"%s/v1","kind":"Record","metadata":{"name":%q},"spec":{"worker":%d,"seq":%d}}`, group, name, worker, seq)
	return a.do(ctx, http.MethodPost, recordsPath, []byte(body))
}

// listRecords lists every record, in pages, and returns their names and the
// list's resourceVersion.
func (a *annex) listRecords(ctx context.Context) (map[string]bool, string, error) {
	names := map[string]bool{}
	cont, rv := "", ""
	for {
		path := recordsPath + "?limit=500"
		if cont != "" {
			path += "&continue=" + cont
		}
		r := a.do(ctx, http.MethodGet, path, nil)
		if !r.ok() {
			return nil, "", fmt.Errorf("listing records: %s", r.describe())
		}
		var list struct {
			Metadata metav1.ListMeta `json:"metadata"`
			Items    []struct {
				Metadata metav1.ObjectMeta `json:"metadata"`
			} `json:"items"`
		}
		if err := json.Unmarshal(r.body, &list); err != nil {
			return nil, "", err
		}
		for _, item := range list.Items {
			names[item.Metadata.Name] = true
		}
		if rv == "" {
			rv = list.Metadata.ResourceVersion
		}
		if cont = list.Metadata.Continue; cont == "" {
			return names, rv, nil
		}
	}
}

// installRecords declares the hosted type and waits until annex serves it.
func (a *annex) installRecords(ctx context.Context) {
	a.t.Helper()
	dyn, err := dynamic.NewForConfig(a.config)
	if err != nil {
		a.t.Fatal(err)
	}
	var hr unstructured.Unstructured
	if err := json.Unmarshal([]byte(records), &hr.Object); err != nil {
		a.t.Fatal(err)
	}
	if _, err := dyn.Resource(framework.HostedResources).Create(ctx, &hr, metav1.CreateOptions{}); err != nil {
		a.t.Fatalf("creating the HostedResource: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := a.do(ctx, http.MethodGet, recordsPath+"?limit=1", nil)
		if r.ok() {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("annex did not serve %s within 60s: %s", recordsPath, r.describe())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
