//go:build integration

package standalone

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"annex.dev/annex/test/integration/framework"
)

// tintsWithWebhook has two versions that name a field differently, and a
// conversion webhook between them.
var tintsWithWebhook = hostedResource("tints", "{kind: Tint, plural: tints}", "Namespaced", `  storage: {backend: default, cache: WatchCache}
  conversion:
    strategy: Webhook
    webhook:
      conversionReviewVersions: [v1]
      clientConfig: {url: "URL", caBundle: "CABUNDLE"}
`,
	hostedVersion("v1", true, sizeColumn, sizeSpec("color")),
	hostedVersion("v2", false, sizeColumn, sizeSpec("colour")))

// TestLeanCacheWithAConversionWebhook reads both versions of a type with a
// conversion webhook, with the watch cache and then with the lean cache:
// every answer of each version is the same bytes, the converted version
// included; and a watch of the version that is not stored gets each new
// object converted.
func TestLeanCacheWithAConversionWebhook(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	converter := &framework.FieldConverter{Fields: map[string]string{"example.com/v1": "color", "example.com/v2": "colour"}}
	url, caBundle := framework.StartWebhookServer(t, converter)
	url += "/convert"
	tints := strings.NewReplacer("URL", url, "CABUNDLE", base64.StdEncoding.EncodeToString(caBundle)).Replace(tintsWithWebhook)

	a := start(t, dir, port)
	a.declare(write(t, dir, "type.yaml", tints), 60*time.Second, "tints.example.com")
	a.applyTiered(t, dir, "Tint")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	watchCache := leanRequestsOfEachVersion(ctx, t, a, "tints")
	if v1, v2 := watchCache["v1"][0].body, watchCache["v2"][0].body; !bytes.Contains(v1, []byte(`"spec":{"color":"red","size":1}`)) ||
		!bytes.Contains(v2, []byte(`"spec":{"colour":"red","size":1}`)) {
		t.Fatalf("the webhook did not convert v1 to v2:\nv1 %s\nv2 %s", v1, v2)
	}

	a = a.restartWithLeanCache("tints.example.com")
	before := converter.Calls()
	sameForEachVersion(ctx, t, a, "tints", watchCache)
	if converter.Calls() == before {
		t.Error("the lean cache answered v2 without calling the conversion webhook")
	}
	if n := a.metrics(ctx).sum("annex_lean_list_requests_total", `resource="tints"`, `version="v2"`, `answer="encoded"`); n < 10 {
		t.Errorf("%v lists of tints v2 were written from the lean cache's encodings, want at least 10", n)
	}

	// A watch of v2 gets an object created through v1, converted.
	events := watchLines(ctx, t, a, "/apis/example.com/v2/namespaces/default/tints?watch=1&resourceVersion=0&allowWatchBookmarks=false")
	for range 3 {
		// The initial ADDED events of g1 to g3.
		readEvent(ctx, t, events)
	}
	a.kubectl("apply", "--server-side", "--field-manager=lean-test", "-f",
		write(t, dir, "g4.yaml", "apiVersion: example.com/v1\nkind: Tint\nmetadata: {name: g4}\nspec: {size: 4, color: blue}\n"))
	ev := readEvent(ctx, t, events)
	if !bytes.HasPrefix(ev, []byte(`{"type":"ADDED"`)) || !bytes.Contains(ev, []byte(`"apiVersion":"example.com/v2"`)) ||
		!bytes.Contains(ev, []byte(`"spec":{"colour":"blue","size":4}`)) {
		t.Errorf("a watch of tints v2 got, for g4 created as v1:\n%s", ev)
	}
}

// watchLines opens a watch on path and returns its events, one line each;
// the channel is closed when the watch ends.
func watchLines(ctx context.Context, t *testing.T, a *annex, path string) <-chan []byte {
	t.Helper()
	cfg := a.restConfig()
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	// As clients do, retry while the type's cache fills (429).
	var resp *http.Response
	for tries := 0; ; tries++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp, err = client.Do(req); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusTooManyRequests || tries == 30 {
			break
		}
		resp.Body.Close()
		time.Sleep(time.Second)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("watch %s: %s", path, resp.Status)
	}
	lines := make(chan []byte)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		defer close(lines)
		defer resp.Body.Close()
		scanner := bufio.NewScanner(resp.Body)
		scanner.Buffer(make([]byte, 1<<20), 1<<20)
		for scanner.Scan() {
			select {
			case lines <- bytes.Clone(scanner.Bytes()):
			case <-ctx.Done():
				return
			}
		}
	}()
	return lines
}

func readEvent(ctx context.Context, t *testing.T, events <-chan []byte) []byte {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("the watch ended")
		}
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no watch event within 30s")
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	return nil
}
