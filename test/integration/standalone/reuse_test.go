//go:build integration

package standalone

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"annex.dev/annex/test/integration/framework"
)

// reuseTypes are the types of TestWrittenObjectsAnswerAsDecoded, kept lean:
// gizmos, one version with a status subresource and no defaults, whose
// creates and updates return the object they wrote; gauges, two versions
// (v1 stored) and no defaults, whose writes of v1 do and of v2 do not; and
// widgets, whose schema has a default, whose writes never do.
func reuseTypes() string {
	gizmos := hostedResource("gizmos", "{kind: Gizmo, plural: gizmos}", "Namespaced", "  storage: {backend: default, cache: Lean}\n",
		hostedVersion("v1", true, "", `type: object
properties:
  spec:
    type: object
    properties:
      size: {type: integer}
      ratio: {type: number}
      note: {type: string}
      tags: {type: array, items: {type: string}}
      extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
  status:
    type: object
    properties:
      phase: {type: string}
`))
	gizmos = strings.Replace(gizmos, "    storage: true\n", "    storage: true\n    subresources: {status: {}}\n", 1)
	gauges := hostedResource("gauges", "{kind: Gauge, plural: gauges}", "Namespaced", "  storage: {backend: default, cache: Lean}\n",
		hostedVersion("v1", true, "", sizeSpec("unit")), hostedVersion("v2", false, "", sizeSpec("unit", "label")))
	widgets := hostedResource("widgets", "{kind: Widget, plural: widgets}", "Namespaced", "  storage: {backend: default, cache: Lean}\n",
		hostedVersion("v1", true, "", "type: object\nproperties:\n  spec:\n    type: object\n    properties:\n      size: {type: integer, default: 3}\n"))
	return gizmos + "---\n" + gauges + "---\n" + widgets
}

// moments are the fields of an answer that name the moment of a write or
// of a read, which two runs of the same requests do not share.
var moments = regexp.MustCompile(`"(uid|creationTimestamp|resourceVersion|time|continue)":"[^"]*"`)

// writeRequests makes every kind of write of reuseTypes' objects in the
// namespace default, and the reads of their state afterwards, and returns
// the answers with the moments replaced by placeholders.
func writeRequests(ctx context.Context, t *testing.T, a *annex) []recorded {
	t.Helper()
	const (
		gizmos = "/apis/example.com/v1/namespaces/default/gizmos"
		gauges = "/apis/example.com/%s/namespaces/default/gauges"
	)
	var out []recorded
	// send makes a request and records its answer; it returns the answer's
	// resourceVersion, for the update that follows.
	send := func(name, method, path, contentType, body string, code int) string {
		t.Helper()
		r := a.do(ctx, method, path, contentType, []byte(body))
		if r.code != code {
			t.Fatalf("%s: %d %s, want %d", name, r.code, r.body, code)
		}
		out = append(out, recorded{name, moments.ReplaceAll(r.body, []byte(`"$1":"-"`))})
		var answer struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(r.body, &answer); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return answer.Metadata.ResourceVersion
	}
	const jsonType, mergeType, applyType = "application/json", "application/merge-patch+json", "application/apply-patch+yaml"
	gizmo := func(name, resourceVersion, spec string) string {
		return `{"apiVersion":"example.com/v1","kind":"Gizmo","metadata":{"name":"` + name + `","resourceVersion":"` + resourceVersion +
			`","labels":{"tier":"gold"},"annotations":{"note":"x"}},"spec":` + spec + `}`
	}

	// A create whose body the request's decoding changes: an integer
	// written 1.0, an unknown field (pruned), an empty list and string,
	// nulls kept and dropped.
	rv := send("create", "POST", gizmos, jsonType,
		gizmo("g1", "", `{"size":1.0,"ratio":2.5,"note":"","tags":[],"bogus":true,"extra":{"a":null,"b":{"c":[1,2.5,"x"]}}}`), 201)
	rv = send("update", "PUT", gizmos+"/g1", jsonType, gizmo("g1", rv, `{"size":2,"ratio":1e21,"tags":["a","b"],"extra":{}}`), 200)
	rv = send("update changing nothing", "PUT", gizmos+"/g1", jsonType, gizmo("g1", rv, `{"size":2,"ratio":1e21,"tags":["a","b"],"extra":{}}`), 200)
	status := `{"apiVersion":"example.com/v1","kind":"Gizmo","metadata":{"name":"g1","resourceVersion":"` + rv + `"},"status":{"phase":"Ready"}}`
	send("update of the status", "PUT", gizmos+"/g1/status", jsonType, status, 200)
	send("update with a stale resourceVersion", "PUT", gizmos+"/g1", jsonType, gizmo("g1", rv, `{"size":3}`), 409)
	send("merge patch", "PATCH", gizmos+"/g1", mergeType, `{"metadata":{"labels":{"tier":null}},"spec":{"size":4,"note":null}}`, 200)
	send("server-side apply creating", "PATCH", gizmos+"/g2?fieldManager=tester", applyType,
		"apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: g2, labels: {}}\nspec: {size: 5, tags: [], extra: {a: null}}\n", 201)
	send("server-side apply", "PATCH", gizmos+"/g2?fieldManager=tester", applyType,
		"apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: g2}\nspec: {size: 6}\n", 200)
	send("dry-run create", "POST", gizmos+"?dryRun=All", jsonType, gizmo("g3", "", `{"size":7}`), 201)
	send("create with a field manager", "POST", gizmos+"?fieldManager=other", jsonType, gizmo("g4", "", `{"size":8,"extra":{"z":1}}`), 201)
	send("create of the stored version", "POST", fmt.Sprintf(gauges, "v1"), jsonType,
		`{"apiVersion":"example.com/v1","kind":"Gauge","metadata":{"name":"m1"},"spec":{"size":1,"unit":"kg"}}`, 201)
	send("create of the other version", "POST", fmt.Sprintf(gauges, "v2"), jsonType,
		`{"apiVersion":"example.com/v2","kind":"Gauge","metadata":{"name":"m2"},"spec":{"size":2,"unit":"kg","label":"l"}}`, 201)
	send("create of a type with a default", "POST", "/apis/example.com/v1/namespaces/default/widgets", jsonType,
		`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w1"},"spec":{}}`, 201)

	// What the cache holds of those writes, which it took from them.
	for _, path := range []string{gizmos, gizmos + "?resourceVersion=0", gizmos + "/g1", fmt.Sprintf(gauges, "v1"), fmt.Sprintf(gauges, "v2"),
		"/apis/example.com/v1/namespaces/default/widgets?resourceVersion=0"} {
		send("read "+path, "GET", path, "", "", 200)
	}
	return out
}

// TestWrittenObjectsAnswerAsDecoded makes the same writes with annex's
// creates and updates returning the object they wrote, and with
// --lean-reuse-written-objects=false, which decodes every write again: the
// answers, and what the cache then serves, are the same bytes, apart from
// the moments of the writes.
func TestWrittenObjectsAnswerAsDecoded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := func(args ...string) ([]recorded, metricSamples) {
		dir := t.TempDir()
		port, err := framework.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		a := start(t, dir, port, args...)
		defer func() {
			if err := a.Stop(); err != nil {
				t.Error(err)
			}
		}()
		a.declare(write(t, dir, "types.yaml", reuseTypes()), 60*time.Second, "gizmos.example.com", "gauges.example.com", "widgets.example.com")
		return writeRequests(ctx, t, a), a.metrics(ctx)
	}
	decoded, off := run("--lean-reuse-written-objects=false")
	reused, on := run()
	same(t, "returning the written objects", reused, "decoding every write", decoded)

	if n := off.sum("annex_lean_written_objects_reused_total"); n != 0 {
		t.Errorf("with --lean-reuse-written-objects=false, %v writes returned their object", n)
	}
	// The creates of g1 and g4, the three updates and that of the status;
	// not the dry run, the patches nor the conflict.
	for _, tc := range []struct {
		resource string
		want     float64
	}{{"gizmos", 5}, {"gauges", 1}, {"widgets", 0}} {
		if n := on.sum("annex_lean_written_objects_reused_total", `resource="`+tc.resource+`"`); n != tc.want {
			t.Errorf("%v writes of %s returned their object, want %v\n%s", n, tc.resource, tc.want, on["annex_lean_written_objects_reused_total"])
		}
	}
}
