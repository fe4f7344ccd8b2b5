package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// oldReport is a report whose section sec holds old figures, between a
// heading and a section after it.
func oldReport(t *testing.T, sec section) (doc string) {
	t.Helper()
	doc = filepath.Join(t.TempDir(), "benchmarks.md")
	before := "# Benchmarks\n\n" + sec.start() + "\nold figures\n" + sec.end() + "\n\n## After\n"
	if err := os.WriteFile(doc, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	return doc
}

// replacedReport reads doc and checks that the new section sec replaced
// the one oldReport wrote, in place.
func replacedReport(t *testing.T, doc string, sec section) string {
	t.Helper()
	got, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	report := string(got)
	if strings.Contains(report, "old figures") || !strings.HasPrefix(report, "# Benchmarks\n\n"+sec.start()) || !strings.HasSuffix(report, sec.end()+"\n\n## After\n") {
		t.Errorf("the section did not replace the old one in place:\n%s", report)
	}
	return report
}

// runQuick runs the quick run of sec's command, run with opts, into a
// temporary directory and a report that has the section, reads the run's
// JSON into r, and returns the report after the run.
func runQuick[O Options](t *testing.T, sec section, r any, run func(ctx context.Context, f Flags, opts O) error, opts O) string {
	t.Helper()
	doc := oldReport(t, sec)
	out := filepath.Dir(doc)
	var log strings.Builder
	f := Flags{Out: out, Doc: doc, Command: "go test -tags integration -run " + t.Name(), Quick: true, Log: &log}
	err := run(context.Background(), f, opts)
	t.Logf("driver output:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(out, sec.name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, r); err != nil {
		t.Fatal(err)
	}
	return replacedReport(t, doc, sec)
}
