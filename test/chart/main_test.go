//go:build integration

// Package chart tests the Helm chart charts/annex against a real
// kube-apiserver: lint, rendering of every storage mode and TLS source,
// server-side dry-run of what it renders, install and uninstall, and annex run
// with exactly the configuration the chart gives its pod.
package chart

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"annex.dev/annex/test/integration/framework"
)

// env is the control plane shared by the tests: a kube-apiserver with the
// aggregation layer and no annex; each test installs what it needs.
var env *framework.Environment

// chartDir is charts/annex, found from this file so that `go test` works from
// any directory.
var chartDir = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "charts", "annex")
}()

// testImage is the image the tests render with; no pod ever pulls it.
const testImage = "annex.test/annex-apiserver"

func TestMain(m *testing.M) {
	os.Exit(framework.RunTests(m, framework.StartControlPlane, func(e *framework.Environment) { env = e }))
}

func testContext(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// helmTemplate renders the chart as release name in namespace with the given
// --set values (and any extra helm flags), and returns helm's error as is so
// that tests can check refusals.
func helmTemplate(ctx context.Context, name, namespace string, sets []string, extra ...string) (string, error) {
	args := []string{"template", name, chartDir, "--namespace", namespace}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	args = append(args, extra...)
	out, _, err := env.Helm(ctx, args...)
	return out, err
}

// decodeManifests splits a multi-document YAML stream into objects,
// skipping empty documents.
func decodeManifests(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	for {
		obj := map[string]any{}
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("decoding rendered manifests: %v", err)
		}
		if len(obj) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: obj})
	}
}

// find returns the one object of kind (and name, unless empty) in objs.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %q in the rendered manifests, found %d", kind, name, len(found))
	}
	return found[0]
}

// encode writes objs as a YAML stream of JSON documents, for kubectl.
func encode(t *testing.T, objs []*unstructured.Unstructured) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	for _, o := range objs {
		data, err := o.MarshalJSON()
		if err != nil {
			t.Fatalf("encoding %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		buf.WriteString("---\n")
		buf.Write(data)
		buf.WriteString("\n")
	}
	return &buf
}
