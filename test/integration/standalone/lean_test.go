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
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"annex.dev/annex/test/integration/framework"
)

// recorded is what annex answered to one request.
type recorded struct {
	name string
	body []byte
}

// leanRequests reads a type in every way the lean cache serves differently
// from the watch cache (lists, paged lists, selectors, tables, metadata
// lists, gets, watch-lists), and returns the bodies with the fields that
// name the moment of the read (a list's resourceVersion and continue
// token, the watch's closing bookmark) replaced by placeholders.
func leanRequests(ctx context.Context, t *testing.T, a *annex) []recorded {
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
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatalf("%v\n%s", err, body)
		}
		if rv := list.Metadata.ResourceVersion; rv != "" {
			body = bytes.ReplaceAll(body, []byte(`"resourceVersion":"`+rv+`"`), []byte(`"resourceVersion":"LIST"`))
		}
		if c := list.Metadata.Continue; c != "" {
			body = bytes.ReplaceAll(body, []byte(c), []byte("CONTINUE"))
		}
		return body
	}
	const base = "/apis/example.com/v1/gadgets"
	const table = "application/json;as=Table;v=v1;g=meta.k8s.io"
	const metadataList = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
	var out []recorded
	for _, r := range []struct{ name, path, accept string }{
		{"list", base, ""},
		{"list from any resourceVersion", base + "?resourceVersion=0", ""},
		{"label selector", base + "?labelSelector=tier%3Dgold", ""},
		{"field selector", base + "?fieldSelector=metadata.name%3Dg2", ""},
		{"table", base, table},
		{"metadata list", base, metadataList},
		{"get", base + "/g1", ""},
		{"get from any resourceVersion", base + "/g1?resourceVersion=0", ""},
		{"get a table", base + "/g1", table},
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
	a.kubectl("apply", "-f", write(t, dir, "type.yaml", hostedType("gadgets", "Gadget", "default")))
	a.kubectl("wait", "--for=condition=Established", "--timeout=60s", "hostedresource/gadgets.example.com")
	var objects strings.Builder
	for i, tier := range []string{"gold", "silver", "gold"} {
		fmt.Fprintf(&objects, "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g%d, labels: {tier: %s}}\nspec: {size: %d}\n---\n", i+1, tier, i+1)
	}
	// Server-side apply, so that the objects carry managedFields.
	a.kubectl("apply", "--server-side", "--field-manager=lean-test", "-f", write(t, dir, "objects.yaml", objects.String()))
	a.kubectl("label", "gadget", "g3", "size=large")
	// A write after the objects: a list's resourceVersion is then none of theirs.
	a.kubectl("create", "namespace", "after-the-gadgets")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	watchCache := leanRequests(ctx, t, a)

	a.kubectl("patch", "hostedresource/gadgets.example.com", "--type=merge", "-p", `{"spec":{"storage":{"cache":"Lean"}}}`)
	// Once the controller has seen the change, the type's CRD records it.
	generation := a.kubectl("get", "hostedresource/gadgets.example.com", "-o", "jsonpath={.metadata.generation}")
	a.kubectl("wait", "--for=jsonpath={.status.observedGeneration}="+generation, "--timeout=60s", "hostedresource/gadgets.example.com")
	if err := a.proc.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	a = start(t, dir, port)
	a.kubectl("create", "namespace", "after-the-restart")
	lean := leanRequests(ctx, t, a)

	if len(lean) != len(watchCache) {
		t.Fatalf("%d answers with the lean cache, %d with the watch cache", len(lean), len(watchCache))
	}
	for i := range lean {
		if !bytes.Equal(lean[i].body, watchCache[i].body) {
			t.Errorf("%s: the lean cache answers\n%s\nthe watch cache answered\n%s", lean[i].name, lean[i].body, watchCache[i].body)
		}
	}
	m := a.metrics(ctx)
	if n := m.value("apiserver_watch_cache_initializations_total", "example.com", "gadgets", ""); n < 1 {
		t.Errorf("the lean cache of gadgets was initialized %v times, want at least once", n)
	}
}
