//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"

	"annex.dev/annex/test/integration/framework"
)

const aggregatedDiscoveryAccept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

// discoveryTimeout bounds how long the aggregator may take to merge annex's
// discovery and OpenAPI after the APIService became Available.
const discoveryTimeout = 30 * time.Second

var groupVersion = framework.Group + "/" + framework.Version

// wantResource is what discovery must say about one of annex's resources.
type wantResource struct {
	name, kind, shortName string
}

var annexResources = []wantResource{
	{name: "hostedresources", kind: "HostedResource", shortName: "hr"},
	{name: "storagebackends", kind: "StorageBackend", shortName: "sb"},
}

func TestDiscovery(t *testing.T) {
	t.Run("legacy discovery lists annex.dev", func(t *testing.T) {
		dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		_, lists, err := dc.ServerGroupsAndResources()
		if err != nil {
			t.Fatalf("ServerGroupsAndResources: %v", err)
		}
		var list *metav1.APIResourceList
		for _, l := range lists {
			if l.GroupVersion == groupVersion {
				list = l
			}
		}
		if list == nil {
			t.Fatalf("discovery has no %s", groupVersion)
		}
		byName := map[string]metav1.APIResource{}
		for _, r := range list.APIResources {
			byName[r.Name] = r
		}
		for _, want := range annexResources {
			r, ok := byName[want.name]
			if !ok {
				t.Errorf("%s has no resource %s; it has %v", groupVersion, want.name, mapsKeys(byName))
				continue
			}
			if r.Kind != want.kind || r.Namespaced || !slices.Equal(r.ShortNames, []string{want.shortName}) || !slices.Contains(r.Categories, "annex") {
				t.Errorf("%s: got kind=%s namespaced=%t shortNames=%v categories=%v; want kind=%s, cluster-scoped, shortNames=[%s], category annex",
					want.name, r.Kind, r.Namespaced, r.ShortNames, r.Categories, want.kind, want.shortName)
			}
			for _, verb := range []string{"create", "delete", "get", "list", "patch", "update", "watch"} {
				if !slices.Contains(r.Verbs, verb) {
					t.Errorf("%s: verbs %v lack %s", want.name, r.Verbs, verb)
				}
			}
			if _, ok := byName[want.name+"/status"]; !ok {
				t.Errorf("%s has no %s/status subresource", groupVersion, want.name)
			}
		}
	})

	t.Run("aggregated discovery lists annex.dev", func(t *testing.T) {
		var last string
		err := wait.PollUntilContextTimeout(testContext(t), time.Second, discoveryTimeout, true, func(context.Context) (bool, error) {
			resp := doRaw(t, http.MethodGet, "/apis", http.Header{"Accept": {aggregatedDiscoveryAccept}}, nil)
			if resp.Code != http.StatusOK || !strings.Contains(resp.ContentType, "as=APIGroupDiscoveryList") {
				last = "status " + http.StatusText(resp.Code) + ", content type " + resp.ContentType
				return false, nil
			}
			var groups apidiscoveryv2.APIGroupDiscoveryList
			if err := json.Unmarshal(resp.Body, &groups); err != nil {
				last = "decoding: " + err.Error()
				return false, nil
			}
			last = aggregatedProblem(groups)
			return last == "", nil
		})
		if err != nil {
			t.Fatalf("aggregated discovery of /apis never listed annex.dev correctly: %v; last: %s", err, last)
		}
	})

	t.Run("kubectl api-resources", func(t *testing.T) {
		out, _, err := env.Kubectl(testContext(t), "api-resources", "--api-group="+framework.Group, "--no-headers")
		if err != nil {
			t.Fatal(err)
		}
		rows := map[string][]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				rows[f[0]] = f
			}
		}
		for _, want := range annexResources {
			wantRow := []string{want.name, want.shortName, groupVersion, "false", want.kind}
			if got := rows[want.name]; !slices.Equal(got, wantRow) {
				t.Errorf("kubectl api-resources row for %s: got %q, want %q\nfull output:\n%s", want.name, got, wantRow, out)
			}
		}
	})

	t.Run("kubectl explain", func(t *testing.T) {
		hrOut := kubectlEventually(t, "explain", "hostedresource.spec")
		for _, field := range []string{"group", "names", "versions", "storage"} {
			if !regexp.MustCompile(`(?m)^\s+` + field + `\s+<`).MatchString(hrOut) {
				t.Errorf("kubectl explain hostedresource.spec does not list field %q:\n%s", field, hrOut)
			}
		}
		sbOut := kubectlEventually(t, "explain", "storagebackends.spec.type")
		if !regexp.MustCompile(`FIELD:\s+type\s+<string>`).MatchString(sbOut) {
			t.Errorf("kubectl explain storagebackends.spec.type does not describe a string field type:\n%s", sbOut)
		}
	})

	t.Run("kubectl get storagebackends", func(t *testing.T) {
		name := uniqueName("kubectl-get")
		create(t, adminClient(t), framework.StorageBackends, storageBackend(name, "Embedded", nil))
		out, _, err := env.Kubectl(testContext(t), "get", "storagebackends")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if header := strings.Fields(lines[0]); !slices.Equal(header, []string{"NAME", "TYPE", "READY", "OBJECTS", "SIZE", "AGE"}) {
			t.Errorf("kubectl get storagebackends header: got %q, want NAME TYPE READY OBJECTS SIZE AGE", lines[0])
		}
		if !hasRow(lines[1:], name, "Embedded") {
			t.Errorf("kubectl get storagebackends has no row starting %q %q:\n%s", name, "Embedded", out)
		}
		// The short name resolves too.
		if out, _, err := env.Kubectl(testContext(t), "get", "sb", name, "--no-headers"); err != nil || !hasRow([]string{out}, name, "Embedded") {
			t.Errorf("kubectl get sb %s: %v\n%s", name, err, out)
		}
	})

	t.Run("kubectl get hostedresources", func(t *testing.T) {
		group := uniqueName("kubectl") + ".example.com"
		create(t, adminClient(t), framework.HostedResources, widgetHostedResource(group))
		out, _, err := env.Kubectl(testContext(t), "get", "hostedresources")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		wantHeader := []string{"NAME", "GROUP", "KIND", "SCOPE", "VERSIONS", "BACKEND", "ESTABLISHED", "OBJECTS", "AGE"}
		if header := strings.Fields(lines[0]); !slices.Equal(header, wantHeader) {
			t.Errorf("kubectl get hostedresources header: got %q, want %q", lines[0], wantHeader)
		}
		// The Versions cell may mark the storage version (v1*); the rest is exact.
		row := strings.ReplaceAll(findRow(lines[1:], "widgets."+group), "*", "")
		if !hasRow([]string{row}, "widgets."+group, group, "Widget", "Namespaced", "v1", "default") {
			t.Errorf("kubectl get hostedresources has no row for widgets.%s with its group, kind, scope, versions and backend:\n%s", group, out)
		}
	})
}

// aggregatedProblem returns what is wrong with annex.dev in an aggregated
// discovery document, or "" if nothing is.
func aggregatedProblem(groups apidiscoveryv2.APIGroupDiscoveryList) string {
	for _, g := range groups.Items {
		if g.Name != framework.Group {
			continue
		}
		for _, v := range g.Versions {
			if v.Version != framework.Version {
				continue
			}
			if v.Freshness == apidiscoveryv2.DiscoveryFreshnessStale {
				return "annex.dev/v1alpha1 is marked Stale"
			}
			var got []string
			for _, r := range v.Resources {
				got = append(got, r.Resource)
			}
			for _, want := range annexResources {
				if !slices.Contains(got, want.name) {
					return "annex.dev/v1alpha1 lacks " + want.name + "; has " + strings.Join(got, ",")
				}
			}
			return ""
		}
		return "annex.dev has no version v1alpha1"
	}
	return "no group annex.dev"
}

// kubectlEventually retries a kubectl command until it succeeds, because the
// aggregator merges annex's OpenAPI asynchronously.
func kubectlEventually(t *testing.T, args ...string) string {
	t.Helper()
	var out string
	var lastErr error
	err := wait.PollUntilContextTimeout(testContext(t), time.Second, discoveryTimeout, true, func(ctx context.Context) (bool, error) {
		out, _, lastErr = env.Kubectl(ctx, args...)
		return lastErr == nil, nil
	})
	if err != nil {
		t.Fatalf("kubectl %s never succeeded: %v", strings.Join(args, " "), lastErr)
	}
	return out
}

// findRow returns the line of a kubectl table whose first cell is name.
func findRow(lines []string, name string) string {
	for _, line := range lines {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return line
		}
	}
	return ""
}

// hasRow reports whether a line of a kubectl table starts with the given cells.
func hasRow(lines []string, cells ...string) bool {
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) >= len(cells) && slices.Equal(f[:len(cells)], cells) {
			return true
		}
	}
	return false
}

func mapsKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
