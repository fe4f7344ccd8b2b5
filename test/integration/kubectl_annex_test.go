//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"annex.dev/annex/pkg/kubectlannex"
	"annex.dev/annex/test/integration/framework"
)

// snapshotsType is a namespaced type with a status subresource, whose
// objects the kubectl annex tests export and import.
func snapshotsType(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	return namespacedType(t, "backup.example.com", "snapshots", "{kind: Snapshot, plural: snapshots, singular: snapshot, shortNames: [snap]}", `type: object
required: [source]
properties:
  source: {type: string}
  size: {type: integer}
  retain: {type: boolean, default: true}
`, `type: object
properties:
  phase: {type: string}
  bytes: {type: integer}
`)
}

// kubectlAnnex runs `kubectl annex args...` as a user does: the test's
// kubectl finds the plugin bin/kubectl-annex (built by make build beside
// annex-apiserver) on the PATH, and the cluster through KUBECONFIG.
func kubectlAnnex(t *testing.T, stdin []byte, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return kubectlAnnexWith(t, env.KubeconfigFile, stdin, args...)
}

// kubectlAnnexWith is kubectlAnnex against the cluster of kubeconfig.
func kubectlAnnexWith(t *testing.T, kubeconfig string, stdin []byte, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	pluginDir := filepath.Dir(os.Getenv(framework.AnnexBinEnv))
	if _, err := os.Stat(filepath.Join(pluginDir, "kubectl-annex")); err != nil {
		t.Fatalf("the plugin is not beside %s (make build builds both): %v", os.Getenv(framework.AnnexBinEnv), err)
	}
	cmd := exec.CommandContext(testContext(t), filepath.Join(os.Getenv(framework.AssetsEnv), "kubectl"), append([]string{"annex"}, args...)...)
	cmd.Env = append(os.Environ(),
		"PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"KUBECONFIG="+kubeconfig,
	)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		t.Fatalf("running kubectl annex %s: %v", strings.Join(args, " "), err)
	}
	return code, out.String(), errOut.String()
}

// kubectlAnnexOK runs kubectl annex and fails the test unless it succeeds.
func kubectlAnnexOK(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	code, stdout, stderr := kubectlAnnex(t, nil, args...)
	if code != 0 {
		t.Fatalf("kubectl annex %s: exit code %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout, stderr
}

// statusCell returns the cell of column in the row of name in the table
// kubectl annex status prints, read at the column's offset in the header
// (cells such as sizes hold spaces).
func statusCell(t *testing.T, table, name, column string) string {
	t.Helper()
	lines := strings.Split(table, "\n")
	start := strings.Index(lines[0], column)
	if start < 0 {
		t.Fatalf("kubectl annex status has no column %s:\n%s", column, table)
	}
	for _, line := range lines[1:] {
		if fields := strings.Fields(line); len(fields) > 0 && fields[0] == name && len(line) > start {
			rest := line[start:]
			if end := strings.Index(rest, "   "); end >= 0 {
				rest = rest[:end]
			}
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("kubectl annex status has no row %s:\n%s", name, table)
	return ""
}

// snapshot is the i-th object of the export test, with everything a user
// would expect back: labels, annotations, spec and status.
func snapshot(ns string, i int) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "backup.example.com/v1",
		"kind":       "Snapshot",
		"metadata": map[string]any{
			"name":        fmt.Sprintf("snap-%03d", i),
			"namespace":   ns,
			"labels":      map[string]any{"app": "db", "shard": fmt.Sprint(i % 7)},
			"annotations": map[string]any{"example.com/note": fmt.Sprintf("taken by job %d", i)},
		},
		"spec":   map[string]any{"source": fmt.Sprintf("pvc-%d", i), "size": int64(i * 1024), "retain": i%2 == 0},
		"status": map[string]any{"phase": "Done", "bytes": int64(i * 1000)},
	}}
	return obj
}

// TestKubectlAnnex backs a type of a few hundred objects up with kubectl
// annex export, deletes them, restores them with kubectl annex import, and
// checks that every object is back with its labels, annotations, spec and
// status, and that kubectl annex status counts them all along.
func TestKubectlAnnex(t *testing.T) {
	const perNamespace = 150
	nsA, nsB := createNamespace(t, "snap-a"), createNamespace(t, "snap-b")
	gvr := serveHostedResource(t, snapshotsType(t), nsA, "")
	const name = "snapshots.backup.example.com"
	admin := adminClient(t)
	ctx := testContext(t)

	want := map[string]*unstructured.Unstructured{}
	for _, ns := range []string{nsA, nsB} {
		for i := range perNamespace {
			obj := snapshot(ns, i)
			created, err := admin.Resource(gvr).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("creating %s/%s: %v", ns, obj.GetName(), err)
			}
			created.Object["status"] = obj.Object["status"]
			if _, err := admin.Resource(gvr).Namespace(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				t.Fatalf("writing the status of %s/%s: %v", ns, obj.GetName(), err)
			}
			want[ns+"/"+obj.GetName()] = created
		}
	}
	total := 2 * perNamespace

	t.Run("status counts the objects", func(t *testing.T) {
		out, _ := kubectlAnnexOK(t, "status")
		for column, wantCell := range map[string]string{
			"OBJECTS": fmt.Sprint(total), "BACKEND": "default", "BACKEND READY": "True", "APISERVICE": "True", "KIND": "Snapshot",
		} {
			if got := statusCell(t, out, name, column); got != wantCell {
				t.Errorf("kubectl annex status: %s of %s is %q, want %q:\n%s", column, name, got, wantCell, out)
			}
		}
		out, _ = kubectlAnnexOK(t, "status", "-o", "json")
		var report kubectlannex.StatusReport
		if err := json.Unmarshal([]byte(out), &report); err != nil {
			t.Fatalf("kubectl annex status -o json: %v\n%s", err, out)
		}
		found := false
		for _, item := range report.Items {
			if item.Name != name {
				continue
			}
			found = true
			if item.ObjectCount == nil || *item.ObjectCount != int64(total) || item.Kind != "Snapshot" || item.Backend.Ready.Status != metav1.ConditionTrue ||
				len(item.APIServices) != 1 || item.APIServices[0].Name != "v1.backup.example.com" || item.APIServices[0].Available.Status != metav1.ConditionTrue {
				t.Errorf("kubectl annex status -o json: %s is %+v", name, item)
			}
		}
		if !found {
			t.Errorf("kubectl annex status -o json has no item %s:\n%s", name, out)
		}
	})

	dir := t.TempDir()
	backup := filepath.Join(dir, "snapshots.yaml")
	t.Run("export writes every object", func(t *testing.T) {
		// Pages of 40: the export crosses several pages of one list.
		out, stderr := kubectlAnnexOK(t, "export", "snap", "-A", "-f", backup, "--chunk-size=40", "--progress=always")
		if out != "" {
			t.Errorf("export -f wrote to standard output: %q", out)
		}
		for _, w := range []string{fmt.Sprintf("(%d/%d, ", total, total), "objects/s", fmt.Sprintf("exported %d objects of %s (version v1) to %s", total, name, backup)} {
			if !strings.Contains(stderr, w) {
				t.Errorf("export's standard error lacks %q:\n%s", w, stderr)
			}
		}
		data, err := os.ReadFile(backup)
		if err != nil {
			t.Fatal(err)
		}
		if docs := strings.Count("\n"+string(data), "\nkind: Snapshot\n"); docs != total {
			t.Errorf("the export holds %d Snapshots, want %d", docs, total)
		}
		if strings.Contains(string(data), "resourceVersion:") || strings.Contains(string(data), "uid:") || strings.Contains(string(data), "managedFields:") {
			t.Errorf("the export holds fields the server assigns (resourceVersion, uid, managedFields)")
		}
		// The namespace alone, as YAML to standard output.
		out, _ = kubectlAnnexOK(t, "export", "snapshots.backup.example.com", "-n", nsB, "-o", "json")
		var list struct {
			Kind  string                      `json:"kind"`
			Items []unstructured.Unstructured `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("export -o json is not a JSON document: %v", err)
		}
		if list.Kind != "List" || len(list.Items) != perNamespace {
			t.Errorf("export -n %s -o json: a %s of %d items, want a List of %d", nsB, list.Kind, len(list.Items), perNamespace)
		}
	})

	t.Run("import restores the deleted objects", func(t *testing.T) {
		for _, ns := range []string{nsA, nsB} {
			if err := admin.Resource(gvr).Namespace(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
				t.Fatalf("deleting the snapshots of %s: %v", ns, err)
			}
		}
		out, _ := kubectlAnnexOK(t, "status")
		if got := statusCell(t, out, name, "OBJECTS"); got != "0" {
			t.Fatalf("kubectl annex status after deleting every snapshot: OBJECTS %q, want 0:\n%s", got, out)
		}

		_, stderr := kubectlAnnexOK(t, "import", "-f", backup)
		if w := fmt.Sprintf("imported %d of %d objects from %s", total, total, backup); !strings.Contains(stderr, w) {
			t.Errorf("import's standard error lacks %q:\n%s", w, stderr)
		}
		for key, orig := range want {
			ns, objName, _ := strings.Cut(key, "/")
			got, err := admin.Resource(gvr).Namespace(ns).Get(ctx, objName, metav1.GetOptions{})
			if err != nil {
				t.Errorf("%s after import: %v", key, err)
				continue
			}
			for _, field := range []string{"spec", "status"} {
				if !equality.Semantic.DeepEqual(got.Object[field], orig.Object[field]) {
					t.Errorf("%s after import: %s %v, want %v", key, field, got.Object[field], orig.Object[field])
				}
			}
			if !equality.Semantic.DeepEqual(got.GetLabels(), orig.GetLabels()) || !equality.Semantic.DeepEqual(got.GetAnnotations(), orig.GetAnnotations()) {
				t.Errorf("%s after import: labels %v annotations %v, want %v and %v", key, got.GetLabels(), got.GetAnnotations(), orig.GetLabels(), orig.GetAnnotations())
			}
			if got.GetUID() == orig.GetUID() {
				t.Errorf("%s after import kept its old uid %s; the server assigns a new one", key, got.GetUID())
			}
		}
		out, _ = kubectlAnnexOK(t, "status")
		if got := statusCell(t, out, name, "OBJECTS"); got != fmt.Sprint(total) {
			t.Errorf("kubectl annex status after import: OBJECTS %q, want %d:\n%s", got, total, out)
		}
	})

	t.Run("import reports the objects that fail and goes on", func(t *testing.T) {
		// snap-000 exists; new-1 and new-2 do not.
		file := filepath.Join(dir, "mixed.yaml")
		mixed := snapshotYAML(t, snapshot(nsA, 0)) + "---\n" + snapshotYAML(t, renamed(snapshot(nsA, 1), "new-1")) + "---\n" + snapshotYAML(t, renamed(snapshot(nsA, 2), "new-2"))
		if err := os.WriteFile(file, []byte(mixed), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := kubectlAnnex(t, nil, "import", "-f", file)
		if code == 0 {
			t.Errorf("import of an object that exists: exit code 0, want non-zero:\n%s", stderr)
		}
		for _, w := range []string{"snapshot.backup.example.com/snap-000 in namespace " + nsA, "already exists", "imported 2 of 3 objects", "1 of 3 objects were not imported"} {
			if !strings.Contains(stderr, w) {
				t.Errorf("import's standard error lacks %q:\n%s", w, stderr)
			}
		}
		for _, n := range []string{"new-1", "new-2"} {
			got, err := admin.Resource(gvr).Namespace(nsA).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				t.Errorf("%s after import: %v", n, err)
			} else if phase, _, _ := unstructured.NestedString(got.Object, "status", "phase"); phase != "Done" {
				t.Errorf("%s after import: status.phase %q, want Done", n, phase)
			}
		}

		// A status the schema refuses: the create succeeds, the status
		// write does not, and the object is taken out again.
		badStatus := renamed(snapshot(nsA, 6), "bad-status")
		badStatus.Object["status"] = map[string]any{"phase": "Done", "bytes": "lots"}
		code, _, stderr = kubectlAnnex(t, []byte(snapshotYAML(t, badStatus)), "import", "-f", "-")
		if code == 0 {
			t.Errorf("import of an object whose status the schema refuses: exit code 0:\n%s", stderr)
		}
		for _, w := range []string{"snapshot.backup.example.com/bad-status in namespace " + nsA, "its status could not be written, so it was deleted again", "status.bytes"} {
			if !strings.Contains(stderr, w) {
				t.Errorf("import of an object whose status the schema refuses: standard error lacks %q:\n%s", w, stderr)
			}
		}
		expectAbsentIn(t, gvr, nsA, "bad-status")

		// With --on-error=stop, nothing after the failure is tried.
		stop := snapshotYAML(t, snapshot(nsA, 0)) + "---\n" + snapshotYAML(t, renamed(snapshot(nsA, 3), "new-3"))
		code, _, stderr = kubectlAnnex(t, []byte(stop), "import", "-f", "-", "--on-error=stop")
		if code == 0 || !strings.Contains(stderr, "already exists") || !strings.Contains(stderr, "--on-error=stop") {
			t.Errorf("import --on-error=stop of an existing object: exit code %d, stderr:\n%s", code, stderr)
		}
		expectAbsentIn(t, gvr, nsA, "new-3")
	})

	t.Run("bad input is refused with a clear error", func(t *testing.T) {
		code, _, stderr := kubectlAnnex(t, nil, "export", "gadgets")
		if code == 0 || !strings.Contains(stderr, `error: annex hosts no type named "gadgets"`) {
			t.Errorf("export of an unknown type: exit code %d, stderr:\n%s", code, stderr)
		}

		for file, tc := range map[string]struct {
			content string
			want    []string
		}{
			"malformed.yaml": {
				content: snapshotYAML(t, renamed(snapshot(nsA, 4), "bad-1")) + "---\nkind: Snapshot\nmetadata: {name: [unclosed\n",
				want:    []string{"document 2", "nothing was imported"},
			},
			"unknown-kind.yaml": {
				content: snapshotYAML(t, renamed(snapshot(nsA, 5), "bad-2")) + "---\napiVersion: backup.example.com/v1\nkind: Gadget\nmetadata: {name: g}\n",
				want:    []string{"document 2 (Gadget \"g\"): annex hosts no kind Gadget of apiVersion backup.example.com/v1", "nothing was imported"},
			},
		} {
			path := filepath.Join(dir, file)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := kubectlAnnex(t, nil, "import", "-f", path)
			if code == 0 {
				t.Errorf("import of %s: exit code 0, want non-zero:\n%s", file, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("import of %s: standard error lacks %q:\n%s", file, w, stderr)
				}
			}
		}
		// The valid first objects of those files were not created.
		expectAbsentIn(t, gvr, nsA, "bad-1")
		expectAbsentIn(t, gvr, nsA, "bad-2")
	})
}

func renamed(obj *unstructured.Unstructured, name string) *unstructured.Unstructured {
	obj.SetName(name)
	return obj
}

func snapshotYAML(t *testing.T, obj *unstructured.Unstructured) string {
	t.Helper()
	data, err := yaml.Marshal(obj.Object)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func expectAbsentIn(t *testing.T, gvr schema.GroupVersionResource, ns, name string) {
	t.Helper()
	_, err := adminClient(t).Resource(gvr).Namespace(ns).Get(testContext(t), name, metav1.GetOptions{})
	switch {
	case err == nil:
		t.Errorf("%s/%s exists; the import that named it should have written nothing", ns, name)
	case !apierrors.IsNotFound(err):
		t.Errorf("getting %s/%s: %v, want NotFound", ns, name, err)
	}
}

// TestKubectlAnnexWithoutAnnex runs kubectl annex against a cluster where
// annex is not installed: every command says so, and how to install it.
func TestKubectlAnnexWithoutAnnex(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cluster, err := framework.StartControlPlane(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	for _, args := range [][]string{{"status"}, {"export", "policyreports"}} {
		code, stdout, stderr := kubectlAnnexWith(t, cluster.KubeconfigFile, nil, args...)
		if code == 0 || stdout != "" {
			t.Errorf("kubectl annex %s without annex: exit code %d, stdout %q; want a failure", strings.Join(args, " "), code, stdout)
		}
		for _, want := range []string{"error: annex is not installed in this cluster", "helm install annex charts/annex"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("kubectl annex %s without annex: stderr lacks %q:\n%s", strings.Join(args, " "), want, stderr)
			}
		}
	}
}
