//go:build integration

package standalone

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"annex.dev/annex/test/integration/framework"
)

// schemaChange is what a watcher of a type sees when the type's schema
// changes under it.
type schemaChange struct {
	// rewatch is the first event of a watch resumed from before the
	// change, its resourceVersion and the object's fields taken out.
	rewatch string
}

// TestSchemaChangeUnderWatch changes the schema of a type (a new field
// with a default) while it is watched, with the watch cache and with the
// lean cache: the open watch ends, a watch resumed from before the change
// is told to list again, a list shows every object with the new default,
// and a new watch sees a new object with it. Both caches answer alike.
func TestSchemaChangeUnderWatch(t *testing.T) {
	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	got := map[string]schemaChange{}
	for _, c := range []struct{ cache, plural, kind string }{{"WatchCache", "dials", "Dial"}, {"Lean", "knobs", "Knob"}} {
		t.Run(c.cache, func(t *testing.T) {
			got[c.cache] = changeSchemaUnderWatch(ctx, t, a, dir, c.cache, c.plural, c.kind)
		})
	}
	if got["Lean"] != got["WatchCache"] {
		t.Errorf("a watch resumed from before the change got, with the lean cache:\n%s\nwith the watch cache:\n%s", got["Lean"].rewatch, got["WatchCache"].rewatch)
	}
}

func changeSchemaUnderWatch(ctx context.Context, t *testing.T, a *annex, dir, cache, plural, kind string) schemaChange {
	hr := strings.Replace(hostedType(plural, kind, "default"), "{backend: default}", "{backend: default, cache: "+cache+"}", 1)
	name := plural + ".example.com"
	a.kubectl("apply", "-f", write(t, dir, plural+".yaml", hr))
	a.kubectl("wait", "--for=condition=Established", "--timeout=60s", "hostedresource/"+name)
	var objects strings.Builder
	for i := range 3 {
		fmt.Fprintf(&objects, "apiVersion: example.com/v1\nkind: %s\nmetadata: {name: o%d}\nspec: {size: %d}\n---\n", kind, i+1, i+1)
	}
	a.kubectl("apply", "-f", write(t, dir, plural+"-objects.yaml", objects.String()))
	base := "/apis/example.com/v1/" + plural
	before := listResourceVersion(ctx, t, a, base)
	open := watchLines(ctx, t, a, base+"?watch=1&resourceVersion="+before)

	// A new field with a default, in the served and stored version.
	a.kubectl("patch", "hostedresource/"+name, "--type=json", "-p",
		`[{"op":"add","path":"/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/shade","value":{"type":"string","default":"plain"}}]`)
	generation := a.kubectl("get", "hostedresource/"+name, "-o", "jsonpath={.metadata.generation}")
	a.kubectl("wait", "--for=jsonpath={.status.observedGeneration}="+generation, "--timeout=60s", "hostedresource/"+name)

	// The watch on the old schema ends.
	deadline := time.After(60 * time.Second)
	for ended := false; !ended; {
		select {
		case line, ok := <-open:
			if !ok {
				ended = true
				break
			}
			t.Logf("the open watch got %s", line)
		case <-deadline:
			t.Fatal("the watch opened before the schema change was still open 60s after it")
		}
	}

	// A watch from before the change: the new schema's cache starts after it.
	rewatch := watchLines(ctx, t, a, base+"?watch=1&resourceVersion="+before)
	first := readEvent(ctx, t, rewatch)
	var ev struct {
		Type   string         `json:"type"`
		Object map[string]any `json:"object"`
	}
	if err := json.Unmarshal(first, &ev); err != nil {
		t.Fatalf("%v: %s", err, first)
	}
	if ev.Type != "ERROR" || ev.Object["code"] != float64(410) {
		t.Errorf("a watch from before the schema change got %s, want a 410 to list again", first)
	}

	// A list shows the new default on every object.
	list := a.kubectl("get", plural, "-o", `jsonpath={range .items[*]}{.metadata.name}={.spec.shade} {end}`)
	if want := "o1=plain o2=plain o3=plain "; list != want {
		t.Errorf("after the schema change, a list of %s shows %q, want %q", plural, list, want)
	}
	// A new watch sees a new object with it.
	after := listResourceVersion(ctx, t, a, base)
	events := watchLines(ctx, t, a, base+"?watch=1&resourceVersion="+after)
	a.kubectl("apply", "-f", write(t, dir, plural+"-o4.yaml", fmt.Sprintf("apiVersion: example.com/v1\nkind: %s\nmetadata: {name: o4}\nspec: {size: 4}\n", kind)))
	if added := readEvent(ctx, t, events); !bytes.HasPrefix(added, []byte(`{"type":"ADDED"`)) || !bytes.Contains(added, []byte(`"shade":"plain"`)) {
		t.Errorf("a watch after the schema change got, for a new object:\n%s", added)
	}
	return schemaChange{rewatch: ev.Type + " " + fmt.Sprint(ev.Object["code"], ev.Object["reason"])}
}

// listResourceVersion lists path and returns the list's resourceVersion.
func listResourceVersion(ctx context.Context, t *testing.T, a *annex, path string) string {
	t.Helper()
	code, body := a.get(ctx, path)
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil || list.Metadata.ResourceVersion == "" {
		t.Fatalf("GET %s: %d %v\n%s", path, code, err, body)
	}
	return list.Metadata.ResourceVersion
}
