//go:build integration

package standalone

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"

	"annex.dev/annex/test/integration/framework"
)

// protobufPrefix starts every body in Kubernetes' protobuf encoding.
var protobufPrefix = []byte{0x6b, 0x38, 0x73, 0x00}

// recorded is what annex answered to one request.
type recorded struct {
	name string
	body []byte
}

// leanRequests reads a version of a namespaced type of example.com, whose
// objects are g1 to g3 in the namespace default with labels tier=gold or
// silver, in every way the lean cache serves differently from the watch
// cache (lists, paged lists, selectors, tables, metadata lists, gets,
// watch-lists), and returns the bodies with the fields that name the
// moment of the read (a list's resourceVersion and continue token, the
// watch's closing bookmark) replaced by placeholders.
func leanRequests(ctx context.Context, t *testing.T, a *annex, version, resource string) []recorded {
	t.Helper()
	cfg := a.restConfig()
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, accept string) []byte {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v\n%s", path, resp.StatusCode, err, body)
		}
		return body
	}
	// normalize replaces the list's own resourceVersion and continue token.
	// The test writes after the objects, so no object's resourceVersion is
	// the list's.
	normalize := func(body []byte) []byte {
		var list struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
				Continue        string `json:"continue"`
			} `json:"metadata"`
		}
		if bytes.HasPrefix(body, protobufPrefix) {
			// A list of metadata in protobuf, encoded again with the
			// placeholder: one encoder writes both answers, so equal
			// lists are equal bytes.
			var unknown runtime.Unknown
			var meta metav1.PartialObjectMetadataList
			if err := unknown.Unmarshal(body[len(protobufPrefix):]); err != nil {
				t.Fatal(err)
			}
			if err := meta.Unmarshal(unknown.Raw); err != nil {
				t.Fatal(err)
			}
			if meta.ResourceVersion != "" {
				meta.ResourceVersion = "LIST"
			}
			raw, err := meta.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			unknown.Raw = raw
			out, err := unknown.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			return append(bytes.Clone(protobufPrefix), out...)
		}
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatalf("%v\n%s", err, body)
		}
		if rv := list.Metadata.ResourceVersion; rv != "" {
			// Compact or pretty-printed.
			for _, sep := range []string{":", ": "} {
				body = bytes.ReplaceAll(body, []byte(`"resourceVersion"`+sep+`"`+rv+`"`), []byte(`"resourceVersion"`+sep+`"LIST"`))
			}
		}
		if c := list.Metadata.Continue; c != "" {
			body = bytes.ReplaceAll(body, []byte(c), []byte("CONTINUE"))
		}
		return body
	}
	base := "/apis/example.com/" + version + "/" + resource
	inDefault := "/apis/example.com/" + version + "/namespaces/default/" + resource
	const table = "application/json;as=Table;v=v1;g=meta.k8s.io"
	const metadataList = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
	var out []recorded
	for _, r := range []struct{ name, path, accept string }{
		{"list", base, ""},
		{"list accepting anything", base, "*/*"},
		{"list accepting JSON or anything", base, "application/json, */*"},
		{"list in a namespace", inDefault, "application/json"},
		{"list in an empty namespace", "/apis/example.com/" + version + "/namespaces/after-the-objects/" + resource, "application/json"},
		{"list from any resourceVersion", base + "?resourceVersion=0", ""},
		{"a page from any resourceVersion", base + "?resourceVersion=0&limit=1", ""},
		{"label selector", base + "?labelSelector=tier%3Dgold", ""},
		{"label selector, a page", base + "?labelSelector=tier%3Dgold&limit=1", ""},
		{"no match", base + "?labelSelector=tier%3Dnone", ""},
		{"pretty", base + "?pretty=true", ""},
		{"field selector", base + "?fieldSelector=metadata.name%3Dg2", ""},
		{"table", base, table},
		{"metadata list", base, metadataList},
		{"metadata list in a namespace, a page", inDefault + "?limit=1", metadataList},
		{"metadata list in an empty namespace", "/apis/example.com/" + version + "/namespaces/after-the-objects/" + resource, metadataList},
		{"metadata list with a label selector", base + "?labelSelector=tier%3Dgold", metadataList},
		{"metadata list, pretty", base + "?pretty=true", metadataList},
		// What client-go's metadata client asks for.
		{"metadata list in protobuf", base, "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1," + metadataList + ",application/json"},
		{"get", inDefault + "/g1", ""},
		{"get from any resourceVersion", inDefault + "/g1?resourceVersion=0", ""},
		{"get a table", inDefault + "/g1", table},
	} {
		out = append(out, recorded{r.name, normalize(get(r.path, r.accept))})
	}
	// The first page and, with its continue token, the second.
	page := get(base+"?limit=2", "")
	var first struct {
		Metadata struct {
			Continue string `json:"continue"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(page, &first); err != nil || first.Metadata.Continue == "" {
		t.Fatalf("a first page of 2 of 3 gadgets has no continue token (%v):\n%s", err, page)
	}
	out = append(out, recorded{"first page", normalize(page)},
		recorded{"second page", normalize(get(base+"?limit=2&continue="+first.Metadata.Continue, ""))})

	// A watch-list: the initial events, then the bookmark that ends them.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		cfg.Host+base+"?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	scanner := bufio.NewScanner(resp.Body)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Bytes()
		if bytes.HasPrefix(line, []byte(`{"type":"BOOKMARK"`)) {
			if !bytes.Contains(line, []byte(`"k8s.io/initial-events-end":"true"`)) {
				t.Fatalf("the watch-list's bookmark does not end the initial events: %s", line)
			}
			out = append(out, recorded{"watch-list end", []byte("BOOKMARK")})
			return out
		}
		out = append(out, recorded{"watch-list event", bytes.Clone(line)})
	}
	t.Fatalf("the watch-list ended without its bookmark: %v", scanner.Err())
	return nil
}

// TestLeanCacheAnswersAsTheWatchCache serves one type with the watch cache,
// then, after a restart, with the lean cache: every read answers the same
// bytes, apart from the fields that name the moment of the read.
func TestLeanCacheAnswersAsTheWatchCache(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port)
	namespaced := strings.NewReplacer("  scope: Cluster\n", "  scope: Namespaced\n", "{backend: default}", "{backend: default, cache: WatchCache}").
		Replace(hostedType("gadgets", "Gadget", "default"))
	a.declare(write(t, dir, "type.yaml", namespaced), 60*time.Second, "gadgets.example.com")
	var objects strings.Builder
	for i, tier := range []string{"gold", "silver", "gold"} {
		fmt.Fprintf(&objects, "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g%d, labels: {tier: %s}}\nspec: {size: %d}\n---\n", i+1, tier, i+1)
	}
	// Server-side apply, so that the objects carry managedFields.
	a.kubectl("apply", "--server-side", "--field-manager=lean-test", "-f", write(t, dir, "objects.yaml", objects.String()))
	a.kubectl("label", "gadget", "g3", "size=large")
	// A write after the objects: a list's resourceVersion is then none of theirs.
	a.kubectl("create", "namespace", "after-the-objects")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	watchCache := leanRequests(ctx, t, a, "v1", "gadgets")

	a = a.restartWithLeanCache("gadgets.example.com")
	lean := leanRequests(ctx, t, a, "v1", "gadgets")
	same(t, "the lean cache", lean, "the watch cache", watchCache)
	m := a.metrics(ctx)
	if n := m.value("apiserver_watch_cache_initializations_total", "example.com", "gadgets", ""); n < 1 {
		t.Errorf("the lean cache of gadgets was initialized %v times, want at least once", n)
	}
	// Plain JSON lists were written from the cache's encodings, and lists
	// of metadata from their metadata; tables and pretty JSON went to the
	// upstream handler.
	if n := m.sum("annex_lean_list_requests_total", `resource="gadgets"`, `answer="encoded"`); n < 10 {
		t.Errorf("%v lists of gadgets were written from the lean cache's encodings, want at least 10\n%s", n, m["annex_lean_list_requests_total"])
	}
	if n := m.sum("annex_lean_list_requests_total", `resource="gadgets"`, `answer="metadata"`); n != 6 {
		t.Errorf("%v lists of gadgets' metadata were answered from the lean cache, want 6\n%s", n, m["annex_lean_list_requests_total"])
	}
	// The restarted cache kept the stored objects as stored, and decoded
	// them all in the background (or on their first reads).
	if len(m["annex_lean_deferred_objects"]) == 0 {
		t.Error("annex exports no annex_lean_deferred_objects")
	} else if n := m.sum("annex_lean_deferred_objects", `resource="gadgets"`); n != 0 {
		t.Errorf("%v gadgets are still waiting to be decoded after every read", n)
	}
	if n := m.sum("annex_lean_list_requests_total", `resource="gadgets"`, `answer="media-type"`); n != 2 {
		t.Errorf("%v lists of gadgets went to the upstream handler for their media type, want 2 (table, pretty)\n%s", n, m["annex_lean_list_requests_total"])
	}
	// A get of the latest state is written from the cache's encoding once
	// the cache has received the store's revision (at once, unless
	// something else was written since its last event); the other gets
	// (from any resourceVersion, a table) went to the upstream handler.
	encodedGets := func() float64 {
		return a.metrics(ctx).sum("annex_lean_get_requests_total", `resource="gadgets"`, `answer="encoded"`)
	}
	for deadline := time.Now().Add(10 * time.Second); encodedGets() == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		a.kubectl("get", "--raw", "/apis/example.com/v1/namespaces/default/gadgets/g1")
	}
	if encodedGets() == 0 {
		t.Errorf("no get of a gadget was written from the lean cache's encoding\n%s", a.metrics(ctx)["annex_lean_get_requests_total"])
	}
	if n := m.sum("annex_lean_get_requests_total", `resource="gadgets"`, `answer="options"`); n != 1 {
		t.Errorf("%v gets of gadgets went to the upstream handler for their options, want 1 (from any resourceVersion)\n%s", n, m["annex_lean_get_requests_total"])
	}

	// The way back: every list through the upstream handler answers the same.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	a = start(t, dir, port, "--lean-encoded-lists=false", "--lean-encoded-gets=false")
	a.kubectl("create", "namespace", "after-the-second-restart")
	upstream := leanRequests(ctx, t, a, "v1", "gadgets")
	same(t, "the lean cache with --lean-encoded-lists=false --lean-encoded-gets=false", upstream, "the watch cache", watchCache)
	if n := a.metrics(ctx).sum("annex_lean_list_requests_total"); n != 0 {
		t.Errorf("with --lean-encoded-lists=false, %v lists were answered or counted by the encoded lists", n)
	}
	if n := a.metrics(ctx).sum("annex_lean_get_requests_total"); n != 0 {
		t.Errorf("with --lean-encoded-gets=false, %v gets were answered or counted by the encoded gets", n)
	}
}

// same reports every answer of got that is not the answer of want.
func same(t *testing.T, gotName string, got []recorded, wantName string, want []recorded) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d answers with %s, %d with %s", len(got), gotName, len(want), wantName)
	}
	for i := range got {
		if !bytes.Equal(got[i].body, want[i].body) {
			t.Errorf("%s: %s answers\n%s\n%s answered\n%s", got[i].name, gotName, got[i].body, wantName, want[i].body)
		}
	}
}

// sum is the sum of the samples of a metric whose lines hold every one of
// labels (each written as name="value").
func (m metricSamples) sum(name string, labels ...string) float64 {
	var total float64
	for _, line := range m[name] {
		matches := true
		for _, l := range labels {
			matches = matches && strings.Contains(line, l)
		}
		if !matches {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64); err == nil {
			total += v
		}
	}
	return total
}

// twoVersionWidgets has two versions and no conversion: v2 prunes v1's
// color, so each version's cache holds the objects as that version shows
// them. Its printer columns leave out the default column Age, which
// changes between reads.
var twoVersionWidgets = hostedResource("widgets", "{kind: Widget, plural: widgets}", "Namespaced", "  storage: {backend: default, cache: WatchCache}\n",
	hostedVersion("v1", true, sizeColumn, sizeSpec("color")),
	hostedVersion("v2", false, sizeColumn, sizeSpec()))

// TestLeanCacheServesEachVersion reads both versions of a type whose
// versions prune and default differently, with the watch cache and then
// with the lean cache: every answer of each version is the same bytes.
func TestLeanCacheServesEachVersion(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port)
	a.declare(write(t, dir, "type.yaml", twoVersionWidgets), 60*time.Second, "widgets.example.com")
	a.applyTiered(t, dir, "Widget")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	watchCache := leanRequestsOfEachVersion(ctx, t, a, "widgets")
	// The versions differ as their schemas say.
	if v1, v2 := watchCache["v1"][0].body, watchCache["v2"][0].body; !bytes.Contains(v1, []byte(`"spec":{"color":"red","size":1}`)) ||
		!bytes.Contains(v2, []byte(`"spec":{"size":1}`)) {
		t.Fatalf("the two versions do not prune as their schemas say:\nv1 %s\nv2 %s", v1, v2)
	}

	a = a.restartWithLeanCache("widgets.example.com")
	sameForEachVersion(ctx, t, a, "widgets", watchCache)
	m := a.metrics(ctx)
	for _, version := range []string{"v1", "v2"} {
		if n := m.sum("annex_lean_list_requests_total", `resource="widgets"`, `version="`+version+`"`, `answer="encoded"`); n < 10 {
			t.Errorf("%v lists of widgets %s were written from the lean cache's encodings, want at least 10", n, version)
		}
	}
}
