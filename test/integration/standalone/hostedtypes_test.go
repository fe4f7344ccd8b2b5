//go:build integration

package standalone

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// hostedResource is the YAML of the HostedResource of plural.example.com in
// the group example.com: names is its spec.names, scope its spec.scope, spec
// more lines of its spec (storage, conversion), each indented by two spaces,
// and versions the items of its spec.versions, as hostedVersion writes them.
func hostedResource(plural, names, scope, spec string, versions ...string) string {
	return "apiVersion: annex.dev/v1alpha1\nkind: HostedResource\nmetadata:\n  name: " + plural + ".example.com\n" +
		"spec:\n  group: example.com\n  names: " + names + "\n  scope: " + scope + "\n" + spec +
		"  versions:\n" + strings.Join(versions, "")
}

// sizeColumn is a printer column for a hosted type's spec.size.
const sizeColumn = "- {name: Size, type: integer, jsonPath: .spec.size}"

// hostedVersion is the YAML of one served version of a hosted type, an item
// of a HostedResource's spec.versions: stored when storage; columns, when
// not empty, its additionalPrinterColumns; schema its openAPIV3Schema.
// columns and schema are YAML without indentation.
func hostedVersion(name string, storage bool, columns, schema string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n    served: true\n    storage: %t\n", name, storage)
	if columns != "" {
		b.WriteString("    additionalPrinterColumns:\n" + indent(columns, "    "))
	}
	b.WriteString("    schema:\n      openAPIV3Schema:\n" + indent(schema, "        "))
	return b.String()
}

// sizeSpec is the openAPIV3Schema of a type whose spec holds an integer size
// and a string of each name in fields.
func sizeSpec(fields ...string) string {
	s := "type: object\nproperties:\n  spec:\n    type: object\n    properties:\n      size: {type: integer}\n"
	for _, field := range fields {
		s += "      " + field + ": {type: string}\n"
	}
	return s
}

// indent puts prefix before each line of text, and ends it with a newline.
func indent(text, prefix string) string {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}

// declare applies the HostedResources of the file at path and waits up to
// timeout for each type of names to be established.
func (a *annex) declare(path string, timeout time.Duration, names ...string) {
	a.t.Helper()
	a.kubectl("apply", "-f", path)
	for _, name := range names {
		a.kubectl("wait", "--for=condition=Established", "--timeout="+timeout.String(), "hostedresource/"+name)
	}
}

// applyTiered creates, with server-side apply, three objects of kind in the
// namespace default, g1 to g3 of tiers gold, silver and gold, with spec.size
// 1 to 3 and spec.color red; then the namespace after-the-objects, a write
// after the objects, so that a list's resourceVersion is none of theirs.
func (a *annex) applyTiered(t *testing.T, dir, kind string) {
	t.Helper()
	var objects strings.Builder
	for i, tier := range []string{"gold", "silver", "gold"} {
		fmt.Fprintf(&objects, "apiVersion: example.com/v1\nkind: %s\nmetadata: {name: g%d, labels: {tier: %s}}\nspec: {size: %d, color: red}\n---\n", kind, i+1, tier, i+1)
	}
	a.kubectl("apply", "--server-side", "--field-manager=lean-test", "-f", write(t, dir, "objects.yaml", objects.String()))
	a.kubectl("create", "namespace", "after-the-objects")
}

// leanRequestsOfEachVersion makes leanRequests of versions v1 and v2 of
// resource and returns what each answered, by version.
func leanRequestsOfEachVersion(ctx context.Context, t *testing.T, a *annex, resource string) map[string][]recorded {
	t.Helper()
	answers := map[string][]recorded{}
	for _, version := range []string{"v1", "v2"} {
		answers[version] = leanRequests(ctx, t, a, version, resource)
	}
	return answers
}

// sameForEachVersion makes leanRequests of versions v1 and v2 of resource
// again and checks that each answers as before, by version.
func sameForEachVersion(ctx context.Context, t *testing.T, a *annex, resource string, before map[string][]recorded) {
	t.Helper()
	for _, version := range []string{"v1", "v2"} {
		same(t, "the lean cache of "+version, leanRequests(ctx, t, a, version, resource), "its watch cache", before[version])
	}
}

// useLeanCache has the HostedResource name keep its type with the lean cache,
// and waits until the controller has seen the change: the type's CRD then
// records it.
func (a *annex) useLeanCache(name string) {
	a.t.Helper()
	a.kubectl("patch", "hostedresource/"+name, "--type=merge", "-p", `{"spec":{"storage":{"cache":"Lean"}}}`)
	generation := a.kubectl("get", "hostedresource/"+name, "-o", "jsonpath={.metadata.generation}")
	a.kubectl("wait", "--for=jsonpath={.status.observedGeneration}="+generation, "--timeout=60s", "hostedresource/"+name)
}
