//go:build integration

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"annex.dev/annex/test/process"
	"annex.dev/annex/test/storefill"
)

const (
	// stormLists is how many full LISTs run at once.
	stormLists = 20
	// stormObjects is the size of the listed type in the short version;
	// stormObjectsLong in the long one.
	stormObjects     = 15_000
	stormObjectsLong = 100_000
	// stormNamespace holds the listed type's objects.
	stormNamespace = "reports"
	// stormQuota is the embedded etcd's quota, annex's default, given to
	// annex and to the fill alike.
	stormQuota = 8 << 30
	// stormQuiet is how long the other clients work before the storm, for
	// their unloaded latency, and after it.
	stormQuiet = 5 * time.Second
)

// stormRSSLimit bounds annex's peak resident memory during the storm:
// 512 MiB at 15,000 reports, 2 GiB at 100,000 (measured: 245 MiB and
// 1.3 GiB). An annex that held each LIST's answer whole would pass neither
// (twenty copies of 43 MiB, of 286 MiB).
func stormRSSLimit() int64 {
	if long() {
		return 2 << 30
	}
	return 512 << 20
}

// stormOthersP99 bounds the p99 of the other clients' requests during the
// storm: generous on 2 shared cores, where the storm's encoding and the
// listers' decoding compete with them for CPU: 5 s at 15,000 reports, 10 s
// at 100,000 (measured: 1.2 s and 3.5 s).
func stormOthersP99() time.Duration {
	if long() {
		return 10 * time.Second
	}
	return 5 * time.Second
}

// The listed type: policy reports of about 2 KiB of JSON each, many small
// fields, as the benchmark's report shape.
var stormReports = schema.GroupVersionResource{Group: "storm.example.com", Version: "v1", Resource: "stormreports"}

const stormReportsType = `{
  "apiVersion": "annex.dev/v1alpha1",
  "kind": "HostedResource",
  "metadata": {"name": "stormreports.storm.example.com"},
  "spec": {
    "group": "storm.example.com",
    "names": {"kind": "StormReport", "plural": "stormreports"},
    "scope": "Namespaced",
    "versions": [{
      "name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "scope": {"type": "object", "properties": {"kind": {"type": "string"}, "name": {"type": "string"}}},
        "summary": {"type": "object", "properties": {
          "pass": {"type": "integer"}, "fail": {"type": "integer"}, "warn": {"type": "integer"},
          "error": {"type": "integer"}, "skip": {"type": "integer"}}},
        "results": {"type": "array", "items": {"type": "object", "properties": {
          "policy": {"type": "string"}, "rule": {"type": "string"}, "result": {"type": "string"},
          "severity": {"type": "string"}, "category": {"type": "string"}, "message": {"type": "string"},
          "timestamp": {"type": "object", "properties": {"seconds": {"type": "integer"}, "nanos": {"type": "integer"}}},
          "resources": {"type": "array", "items": {"type": "object", "properties": {
            "kind": {"type": "string"}, "name": {"type": "string"}, "namespace": {"type": "string"}}}}
        }}}
      }}}
    }]
  }
}`

func stormReportName(i int) string { return fmt.Sprintf("report-%07d", i) }

// stormReport is the report that the fill copies: eight results about one
// Deployment.
func stormReport() *unstructured.Unstructured {
	results := make([]any, 8)
	for r := range results {
		results[r] = map[string]any{
			"policy": fmt.Sprintf("require-labels-%d", r), "rule": "check-team-label", "result": "pass",
			"severity": "medium", "category": "Best Practices", "message": "validation rule 'check-team-label' passed.",
			"timestamp": map[string]any{"seconds": int64(1767225600 + r), "nanos": int64(0)},
			"resources": []any{map[string]any{"kind": "Deployment", "name": "web", "namespace": stormNamespace}},
		}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "storm.example.com/v1", "kind": "StormReport",
		"metadata": map[string]any{"name": stormReportName(0), "namespace": stormNamespace},
		"scope":    map[string]any{"kind": "Deployment", "name": "web"},
		"summary":  map[string]any{"pass": int64(8), "fail": int64(0), "warn": int64(0), "error": int64(0), "skip": int64(0)},
		"results":  results,
	}}
}

// TestListStorm lists a type of 15,000 reports of about 2 KiB (100,000
// with ANNEX_FAULTS_LONG=1) twenty times at once, each LIST in full (no
// limit, no resourceVersion: what kubectl get --chunk-size=0 or an
// informer-less client sends), each over a connection of its own, while
// other clients work: one creates ledgers and reads each back, one reads
// reports one at a time, one watches the ledgers.
//
// Standalone annex has no API Priority and Fairness (there is no cluster to
// configure it), and its one user, the admin, is in system:masters, which
// the max-in-flight limits never refuse: every LIST must be served, with
// every report. It checks what an operator notices: every LIST answers 200
// with all the reports, the other clients get no error, each gets answers
// during the storm and their p99 during it stays under 5 s (10 s at
// 100,000), the watch delivers every ledger created, annex's peak resident
// memory during the storm stays under 512 MiB (2 GiB at 100,000), annex is
// still running, and afterwards every report and every ledger acknowledged
// is there. It logs the figures that docs/reliability.md records.
//
// The reports are written into annex's store while annex is stopped
// (test/storefill), not through the API, and that is not part of what is
// measured.
func TestListStorm(t *testing.T) {
	objects := stormObjects
	if long() {
		objects = stormObjectsLong
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	a := startAnnex(t, "--embedded-etcd-quota-backend-bytes="+strconv.Itoa(stormQuota))
	cfg := a.restConfig()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: stormNamespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	declareType(t, cfg, stormReports, stormReportsType)
	declareLedgers(t, cfg)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(stormReports).Namespace(stormNamespace).Create(ctx, stormReport(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	fillStormReports(ctx, t, a.Dir, a.DataDir, objects)
	a.ReadyTimeout = 5 * time.Minute
	took, err := a.start()
	if err != nil {
		t.Fatal(err)
	}
	cached := waitStormCache(ctx, t, cfg, a.Running)
	t.Logf("annex ready %s after its start on %d reports, its cache full %s after that",
		took.Round(time.Millisecond), objects, cached.Round(time.Millisecond))

	runStorm(ctx, t, stormTarget{
		lists: a.restConfig(), others: a.restConfig(), url: a.URL(),
		running: a.Running, logTail: func() string { return a.LogTail(40) },
		pids: map[string]int{"annex": a.Process().Pid()}, rssLimits: map[string]int64{"annex": stormRSSLimit()},
		othersP99: stormOthersP99(),
	}, objects)
}

// stormTarget is what a storm runs against.
type stormTarget struct {
	// lists is the LISTs' client configuration, others the other clients'
	// (which also count what is stored afterwards), url the server both
	// talk to.
	lists, others *rest.Config
	url           string
	// running says whether annex still runs, and logTail gives the end
	// of its log.
	running func() error
	logTail func() string
	// pids are the processes whose peak resident memory during the storm
	// is measured, by name, and rssLimits bound it.
	pids      map[string]int
	rssLimits map[string]int64
	// refusable allows a LIST to be refused with 429 and Retry-After (API
	// Priority and Fairness), rather than served in full; with mustRefuse
	// too, at least one must be.
	refusable, mustRefuse bool
	// othersP99 bounds the p99 of the other clients' requests during the
	// storm.
	othersP99 time.Duration
}

// runStorm starts the other clients, lets them work alone for stormQuiet,
// runs the storm, lets them work stormQuiet more, and checks and logs what
// every client got, the processes' memory, and that nothing was lost. It
// returns how many LISTs were refused with 429 and Retry-After.
func runStorm(ctx context.Context, t *testing.T, target stormTarget, objects int) (refused int) {
	t.Helper()
	others := startStormOthers(ctx, t, rest.CopyConfig(target.others), objects)
	time.Sleep(stormQuiet)

	before := map[string]map[string]float64{}
	for name, pid := range target.pids {
		status, err := process.Status(pid)
		if err != nil {
			t.Fatal(err)
		}
		before[name] = status
		if err := process.ResetPeakRSS(pid); err != nil {
			t.Fatal(err)
		}
	}
	others.mark()
	lists := listStorm(ctx, t, target.lists, target.url, objects)
	others.mark()
	peaks := map[string]int64{}
	for name, pid := range target.pids {
		peak, err := process.PeakRSS(pid)
		if err != nil {
			t.Fatal(err)
		}
		peaks[name] = peak
	}
	time.Sleep(stormQuiet)
	acked := others.acknowledged()
	if err := target.running(); err != nil {
		t.Fatalf("annex exited during the storm: %v%s", err, target.logTail())
	}

	// What the LISTs got.
	var (
		latencies, refusedIn []time.Duration
		bytes                int64
		failed               int
	)
	for i, l := range lists {
		switch {
		case target.refusable && l.refused:
			refusedIn = append(refusedIn, l.took)
		case l.err != nil:
			failed++
			t.Errorf("LIST %d: %v", i, l.err)
		case l.items != objects:
			failed++
			t.Errorf("LIST %d returned %d reports, want %d", i, l.items, objects)
		default:
			latencies = append(latencies, l.took)
			bytes += l.bytes
		}
	}
	t.Logf("storm: %d full LISTs of %d reports at once, %d served in full (%.0f MiB of JSON each); LIST p50 %s, p99 %s",
		stormLists, objects, len(latencies), float64(bytes)/float64(max(len(latencies), 1))/(1<<20),
		quantile(latencies, 0.5).Round(time.Millisecond), quantile(latencies, 0.99).Round(time.Millisecond))
	if target.refusable {
		t.Logf("storm: %d LISTs refused with 429 and Retry-After, answered in p50 %s, max %s", len(refusedIn),
			quantile(refusedIn, 0.5).Round(time.Millisecond), quantile(refusedIn, 1).Round(time.Millisecond))
		if len(latencies) == 0 {
			t.Errorf("no LIST of the storm was served")
		}
		if target.mustRefuse && len(refusedIn) == 0 {
			t.Errorf("no LIST of the storm was refused with 429 and Retry-After")
		}
	}

	// What the other clients got.
	for _, op := range others.ops() {
		quiet, storm, errs := others.latencies(op)
		t.Logf("%s: %d before and after the storm, p50 %s, p99 %s; %d during it, p50 %s, p99 %s, max %s; %d errors",
			op, len(quiet), quantile(quiet, 0.5).Round(time.Millisecond), quantile(quiet, 0.99).Round(time.Millisecond),
			len(storm), quantile(storm, 0.5).Round(time.Millisecond), quantile(storm, 0.99).Round(time.Millisecond),
			quantile(storm, 1).Round(time.Millisecond), len(errs))
		for _, err := range errs {
			t.Errorf("%s: %v", op, err)
		}
		if len(storm) == 0 {
			t.Errorf("%s: no request was answered during the storm", op)
		} else if p99 := quantile(storm, 0.99); p99 > target.othersP99 {
			t.Errorf("%s: p99 %s during the storm, above %s", op, p99.Round(time.Millisecond), target.othersP99)
		}
	}
	delivered := others.waitDelivered(acked, 30*time.Second)
	if missing := len(acked) - delivered; missing > 0 {
		t.Errorf("the watch of ledgers delivered %d of %d creates acknowledged (within 30 s of the end)", delivered, len(acked))
	}
	watchLat := others.watchLatencies()
	t.Logf("watch of ledgers: %d of %d creates delivered; delivery p50 %s, p99 %s, max %s", delivered, len(acked),
		quantile(watchLat, 0.5).Round(time.Millisecond), quantile(watchLat, 0.99).Round(time.Millisecond), quantile(watchLat, 1).Round(time.Millisecond))

	// The processes' memory.
	for name, pid := range target.pids {
		after, err := process.Status(pid)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s's RSS: %d MiB before the storm, peak %d MiB during it (limit %d MiB), %d MiB after it",
			name, int64(before[name]["VmRSS"])>>20, peaks[name]>>20, target.rssLimits[name]>>20, int64(after["VmRSS"])>>20)
		if peaks[name] > target.rssLimits[name] {
			t.Errorf("%s's peak RSS during the storm, %d MiB, is above %d MiB", name, peaks[name]>>20, target.rssLimits[name]>>20)
		}
	}

	// Nothing lost.
	dyn, err := dynamic.NewForConfig(target.others)
	if err != nil {
		t.Fatal(err)
	}
	if n := countStorm(ctx, t, dyn.Resource(stormReports).Namespace(stormNamespace)); n != objects {
		t.Errorf("after the storm, %d reports are stored, want %d", n, objects)
	}
	stored := map[string]bool{}
	list, err := dyn.Resource(ledgers).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list.Items {
		stored[l.GetName()] = true
	}
	for _, name := range acked {
		if !stored[name] {
			t.Errorf("ledger %s was acknowledged but is not stored", name)
		}
	}
	return len(refusedIn)
}

// fillStormReports writes reports 1 to objects-1 as copies of report 0,
// which annex stored, into the embedded etcd of a stopped annex whose
// --data-dir is dataDir; its log goes into dir.
func fillStormReports(ctx context.Context, t *testing.T, dir, dataDir string, objects int) {
	t.Helper()
	log, err := os.Create(filepath.Join(dir, "fill-etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	s, err := storefill.OpenEmbedded(ctx, filepath.Join(dataDir, "etcd"), stormQuota, log, 128, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	tmpl, err := s.ReadTemplate(ctx, stormNamespace, stormReportName(0), stormReports.GroupVersion().String())
	if err != nil {
		t.Fatal(err)
	}
	r := s.Fill(ctx, tmpl, stormReportName, 1, objects, 5*time.Minute, nil)
	if r.Err != nil || r.TimedOut {
		t.Fatalf("filling the store: %v (timed out: %v, %d written)", r.Err, r.TimedOut, r.Objects)
	}
	settled, err := s.Settle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fill: annex stored %s as %d bytes of JSON (%d in the store); %d copies written in %s; %s",
		tmpl.Facts().Key, tmpl.Facts().ValueBytes, tmpl.Facts().StoredBytes, r.Objects, r.Elapsed.Round(time.Millisecond), settled)
}

// waitStormCache waits until annex's cache of the reports is full: until
// it answers a LIST with resourceVersion=0 and a field selector, which it
// answers 429 while the cache fills. It returns how long that took.
func waitStormCache(ctx context.Context, t *testing.T, cfg *rest.Config, running func() error) time.Duration {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var last error
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := running(); err != nil {
			return false, err
		}
		_, last = dyn.Resource(stormReports).Namespace(stormNamespace).List(ctx, metav1.ListOptions{
			ResourceVersion: "0", FieldSelector: "metadata.name=" + stormReportName(0)})
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("annex's cache of the reports did not fill: %v; last answer: %v", err, last)
	}
	return time.Since(start)
}

// stormList is what one LIST of the storm got.
type stormList struct {
	items int
	bytes int64
	took  time.Duration
	err   error
	// refused says that the LIST was answered 429 with Retry-After.
	refused bool
}

// listStorm sends stormLists full LISTs of the reports at once, each over
// a connection of its own, and waits for their answers, which it reads as
// a stream: the reports' names, each checked once.
func listStorm(ctx context.Context, t *testing.T, cfg *rest.Config, url string, objects int) []stormList {
	t.Helper()
	tlsConfig, err := rest.TLSConfigFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := url + "/apis/" + stormReports.Group + "/" + stormReports.Version + "/namespaces/" + stormNamespace + "/" + stormReports.Resource
	out := make([]stormList, stormLists)
	var wg sync.WaitGroup
	for i := range out {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig.Clone(), ForceAttemptHTTP2: true}}
		wg.Go(func() {
			defer client.CloseIdleConnections()
			out[i] = listReports(ctx, client, path, objects)
		})
	}
	wg.Wait()
	return out
}

func listReports(ctx context.Context, client *http.Client, path string, objects int) (l stormList) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
	if err != nil {
		return stormList{err: err}
	}
	req.Header.Set("Accept", "application/json")
	start := time.Now()
	defer func() { l.took = time.Since(start) }()
	resp, err := client.Do(req)
	if err != nil {
		return stormList{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		retryAfter := resp.Header.Get("Retry-After")
		return stormList{err: fmt.Errorf("%s (Retry-After %q): %s", resp.Status, retryAfter, body),
			refused: resp.StatusCode == http.StatusTooManyRequests && retryAfter != ""}
	}
	counted := &countingReader{r: resp.Body}
	seen := make([]bool, objects)
	dec := json.NewDecoder(counted)
	err = walkItems(dec, func(dec *json.Decoder) error {
		var item struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := dec.Decode(&item); err != nil {
			return err
		}
		var i int
		if _, err := fmt.Sscanf(item.Metadata.Name, "report-%07d", &i); err != nil || i < 0 || i >= objects || seen[i] {
			return fmt.Errorf("item %d of the list is %q: not a report, or listed twice", l.items, item.Metadata.Name)
		}
		seen[i] = true
		l.items++
		return nil
	})
	l.bytes = counted.n
	l.err = err
	return l
}

// walkItems reads a list object from dec and calls item for each element
// of its items, which item decodes; the other fields are skipped.
func walkItems(dec *json.Decoder, item func(*json.Decoder) error) error {
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("the list does not start with an object: %v %v", tok, err)
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return err
		}
		if key != "items" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return err
			}
			continue
		}
		if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
			return fmt.Errorf("items is not an array: %v %v", tok, err)
		}
		for dec.More() {
			if err := item(dec); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return err
		}
	}
	_, err := dec.Token()
	return err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// stormOthers are the clients that work beside the storm: a writer that
// creates ledgers and reads each back, a reader of single reports, and a
// watch of the ledgers.
type stormOthers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// marks are when the storm started and ended.
	marks []time.Time
	calls []stormCall
	// created is when each ledger's create was acknowledged; watched when
	// the watch delivered it.
	created map[string]time.Time
	acked   []string
	watched map[string]time.Time
	seq     atomic.Int64
}

type stormCall struct {
	op    string
	start time.Time
	took  time.Duration
	err   error
}

func startStormOthers(ctx context.Context, t *testing.T, cfg *rest.Config, objects int) *stormOthers {
	t.Helper()
	// No client-side rate limit: the clients wait for annex alone.
	cfg.QPS, cfg.Burst = 1000, 1000
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	o := &stormOthers{cancel: cancel, created: map[string]time.Time{}, watched: map[string]time.Time{}}
	t.Cleanup(func() { o.cancel(); o.wg.Wait() })

	list, err := dyn.Resource(ledgers).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := dyn.Resource(ledgers).Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}
	o.wg.Go(func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.ResultChan():
				if !ok {
					o.record("watch", time.Now(), fmt.Errorf("the watch of ledgers ended"))
					return
				}
				if e.Type == watch.Added {
					if obj, ok := e.Object.(*unstructured.Unstructured); ok {
						o.mu.Lock()
						o.watched[obj.GetName()] = time.Now()
						o.mu.Unlock()
					}
				} else if e.Type == watch.Error {
					o.record("watch", time.Now(), fmt.Errorf("watch error: %v", e.Object))
				}
			}
		}
	})
	o.wg.Go(func() {
		for ctx.Err() == nil {
			name := fmt.Sprintf("storm-%d", o.seq.Add(1))
			obj := ledger(name)
			obj.SetName(name)
			start := time.Now()
			_, err := dyn.Resource(ledgers).Create(ctx, obj, metav1.CreateOptions{})
			if ctx.Err() != nil {
				return
			}
			o.record("create ledger", start, err)
			if err != nil {
				continue
			}
			o.mu.Lock()
			o.created[name] = time.Now()
			o.acked = append(o.acked, name)
			o.mu.Unlock()
			start = time.Now()
			_, err = dyn.Resource(ledgers).Get(ctx, name, metav1.GetOptions{})
			if ctx.Err() != nil {
				return
			}
			o.record("get ledger", start, err)
			time.Sleep(20 * time.Millisecond)
		}
	})
	o.wg.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		for ctx.Err() == nil {
			start := time.Now()
			_, err := dyn.Resource(stormReports).Namespace(stormNamespace).Get(ctx, stormReportName(rng.IntN(objects)), metav1.GetOptions{})
			if ctx.Err() != nil {
				return
			}
			o.record("get report", start, err)
			time.Sleep(20 * time.Millisecond)
		}
	})
	return o
}

func (o *stormOthers) record(op string, start time.Time, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, stormCall{op: op, start: start, took: time.Since(start), err: err})
}

// mark notes the start, then the end, of the storm.
func (o *stormOthers) mark() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.marks = append(o.marks, time.Now())
}

// acknowledged are the names of the ledgers whose creates were
// acknowledged so far.
func (o *stormOthers) acknowledged() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.acked)
}

func (o *stormOthers) ops() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ops []string
	for _, c := range o.calls {
		if !slices.Contains(ops, c.op) {
			ops = append(ops, c.op)
		}
	}
	slices.Sort(ops)
	return ops
}

// latencies are the latencies of op's answered requests outside the storm
// and during it (sent while it ran), and op's errors.
func (o *stormOthers) latencies(op string) (quiet, storm []time.Duration, errs []error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, c := range o.calls {
		switch {
		case c.op != op:
		case c.err != nil:
			errs = append(errs, fmt.Errorf("%s after the start of the test's clients: %w", c.start.Format(time.RFC3339Nano), c.err))
		case len(o.marks) == 2 && !c.start.Before(o.marks[0]) && c.start.Before(o.marks[1]):
			storm = append(storm, c.took)
		default:
			quiet = append(quiet, c.took)
		}
	}
	return quiet, storm, errs
}

// waitDelivered waits up to timeout until the watch has delivered every
// ledger of names, then stops the clients; it returns how many it
// delivered.
func (o *stormOthers) waitDelivered(names []string, timeout time.Duration) int {
	delivered := func() int {
		o.mu.Lock()
		defer o.mu.Unlock()
		n := 0
		for _, name := range names {
			if _, ok := o.watched[name]; ok {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(timeout); delivered() < len(names) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	o.cancel()
	o.wg.Wait()
	return delivered()
}

// watchLatencies are, for each ledger delivered, the time from its
// create's acknowledgement to its delivery (negative when the watch was
// first).
func (o *stormOthers) watchLatencies() []time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []time.Duration
	for name, created := range o.created {
		if watched, ok := o.watched[name]; ok {
			out = append(out, watched.Sub(created))
		}
	}
	return out
}

// countStorm counts the objects of r, listed in pages of 1,000.
func countStorm(ctx context.Context, t *testing.T, r dynamic.ResourceInterface) int {
	t.Helper()
	n, cont := 0, ""
	for {
		list, err := r.List(ctx, metav1.ListOptions{Limit: 1000, Continue: cont})
		if err != nil {
			t.Fatalf("counting after the storm: %v", err)
		}
		n += len(list.Items)
		if cont = list.GetContinue(); cont == "" {
			return n
		}
	}
}

// quantile is the q-quantile of d (the largest for q = 1), 0 for none.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(int(float64(len(s))*q), len(s)-1)]
}
