package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// memory is what a server's /metrics says about its memory.
type memory struct {
	// RSS is process_resident_memory_bytes.
	RSS float64 `json:"rssBytes"`
	// HeapInuse is go_memstats_heap_inuse_bytes right after a forced GC.
	HeapInuse float64 `json:"heapInuseBytes"`
	// HeapLive is go_gc_heap_live_bytes: the heap marked live by the last GC.
	HeapLive float64 `json:"heapLiveBytes"`
}

// memory reads the server's memory figures after a GC, samples times gap
// apart, and keeps the minimum of each. A GET of
// /debug/pprof/heap?gc=1 makes the Go runtime collect before it writes the
// profile; both the kube-apiserver and annex serve it (--profiling is on by
// default), so neither needs a GC endpoint of its own. The minimum over a few
// samples drops the garbage that requests in flight leave between the GC and
// the read of /metrics.
func (s *server) memory(ctx context.Context, samples int, gap time.Duration) (memory, error) {
	m := memory{RSS: math.Inf(1), HeapInuse: math.Inf(1), HeapLive: math.Inf(1)}
	for i := range samples {
		if i > 0 {
			time.Sleep(gap)
		}
		if _, err := s.get(ctx, "/debug/pprof/heap?gc=1"); err != nil {
			return memory{}, fmt.Errorf("forcing a GC on %s: %w", s.Name, err)
		}
		body, err := s.get(ctx, "/metrics")
		if err != nil {
			return memory{}, err
		}
		vals := parseMetrics(body, "process_resident_memory_bytes", "go_memstats_heap_inuse_bytes", "go_gc_heap_live_bytes")
		m.RSS = math.Min(m.RSS, vals["process_resident_memory_bytes"])
		m.HeapInuse = math.Min(m.HeapInuse, vals["go_memstats_heap_inuse_bytes"])
		m.HeapLive = math.Min(m.HeapLive, vals["go_gc_heap_live_bytes"])
	}
	return m, nil
}

// etcdState is what the cluster's etcd says about its size.
type etcdState struct {
	// DBSize is etcd_mvcc_db_total_size_in_bytes: the bbolt file, which
	// grows with what the cluster stores (and never shrinks without a defrag).
	DBSize float64 `json:"dbSizeBytes"`
	// DBInUse is etcd_mvcc_db_total_size_in_use_in_bytes.
	DBInUse float64 `json:"dbInUseBytes"`
	// Keys is etcd_debugging_mvcc_keys_total.
	Keys float64 `json:"keys"`
	RSS  float64 `json:"rssBytes"`
}

func (s *server) etcdState(ctx context.Context) (etcdState, error) {
	body, err := s.get(ctx, "/metrics")
	if err != nil {
		return etcdState{}, err
	}
	v := parseMetrics(body, "etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes", "etcd_debugging_mvcc_keys_total", "process_resident_memory_bytes")
	return etcdState{
		DBSize:  v["etcd_mvcc_db_total_size_in_bytes"],
		DBInUse: v["etcd_mvcc_db_total_size_in_use_in_bytes"],
		Keys:    v["etcd_debugging_mvcc_keys_total"],
		RSS:     v["process_resident_memory_bytes"],
	}, nil
}

// parseMetrics returns the values of the named unlabelled metrics in a
// Prometheus text exposition; a missing one is NaN.
func parseMetrics(body []byte, names ...string) map[string]float64 {
	return parseLabelledMetrics(body, nil, names...)
}

// parseLabelledMetrics returns the values of the named metrics in a
// Prometheus text exposition, each the sample whose labels are exactly
// labels; a missing one is NaN, and so is every one of a body that does not
// parse.
func parseLabelledMetrics(body []byte, labels map[string]string, names ...string) map[string]float64 {
	out := make(map[string]float64, len(names))
	for _, n := range names {
		out[n] = math.NaN()
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return out
	}
	for _, name := range names {
		family, ok := families[name]
		if !ok {
			continue
		}
		for _, m := range family.GetMetric() {
			if !sameLabels(m.GetLabel(), labels) {
				continue
			}
			switch {
			case m.GetGauge() != nil:
				out[name] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[name] = m.GetCounter().GetValue()
			case m.GetUntyped() != nil:
				out[name] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

// sumByLabel sums the samples of the named counter by the value of one of
// their labels, over all their other labels; nil for a body that does not
// parse or lacks the counter.
func sumByLabel(body []byte, name, label string) map[string]float64 {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil || families[name] == nil {
		return nil
	}
	out := map[string]float64{}
	for _, m := range families[name].GetMetric() {
		for _, pair := range m.GetLabel() {
			if pair.GetName() == label {
				out[pair.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// sameLabels says that pairs are exactly want.
func sameLabels(pairs []*dto.LabelPair, want map[string]string) bool {
	if len(pairs) != len(want) {
		return false
	}
	for _, pair := range pairs {
		if v, ok := want[pair.GetName()]; !ok || v != pair.GetValue() {
			return false
		}
	}
	return true
}

// version asks a server its version: gitVersion from an API server,
// etcdserver from etcd.
func (s *server) version(ctx context.Context) string {
	body, err := s.get(ctx, "/version")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	var v struct {
		GitVersion string `json:"gitVersion"`
		Etcd       string `json:"etcdserver"`
		GoVersion  string `json:"goVersion"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return "unknown"
	}
	if v.Etcd != "" {
		return v.Etcd
	}
	if v.GoVersion != "" {
		return v.GitVersion + " (" + v.GoVersion + ")"
	}
	return v.GitVersion
}

// saveProfile GETs a /debug/pprof path from the server into file.
func (s *server) saveProfile(ctx context.Context, path, file string) error {
	body, err := s.get(ctx, path)
	if err != nil {
		return err
	}
	return os.WriteFile(file, body, 0o644)
}

// pprofTop summarises a profile with `go tool pprof -top`: the header and
// the first n functions by flat value.
func pprofTop(file string, n int, extra ...string) string {
	args := append([]string{"tool", "pprof", "-top", "-nodecount=" + strconv.Itoa(n)}, extra...)
	args = append(args, file)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(go tool pprof failed: %v: %s)", err, out)
	}
	return strings.TrimSpace(string(out))
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) float64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			total += fi.Size()
		}
		return nil
	})
	return float64(total)
}
