package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReplaceSection(t *testing.T) {
	section := backendsSec.start() + "\nnew\n" + backendsSec.end()
	for _, tc := range []struct{ name, doc, want string }{
		{"empty", "", section + "\n"},
		{"no section", "# Report\n\ntext\n", "# Report\n\ntext\n\n" + section + "\n"},
		{"section in the middle", "# Report\n\n" + backendsSec.start() + "\nold\n" + backendsSec.end() + "\n\nafter\n",
			"# Report\n\n" + section + "\n\nafter\n"},
		{"an end marker only", "# Report\n" + backendsSec.end() + "\n", "# Report\n" + backendsSec.end() + "\n\n" + section + "\n"},
	} {
		if got := replaceSection(tc.doc, section, backendsSec.start(), backendsSec.end()); got != tc.want {
			t.Errorf("%s: got\n%q\nwant\n%q", tc.name, got, tc.want)
		}
	}
}

// The compare command rewrites the report; the backends and capacity sections
// must survive it.
func TestKeepSections(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "benchmarks.md")
	backends := backendsSec.start() + "\n## Storage backends\n\nfigures\n" + backendsSec.end()
	capacity := capacitySec.start() + "\n## Capacity\n\nfigures\n" + capacitySec.end()
	if err := os.WriteFile(doc, []byte("# Old report\n\n"+backends+"\n\n"+capacity+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := keepSections(doc, "# New report\n\n## Notes\n")
	if !strings.HasPrefix(got, "# New report\n\n## Notes\n") || !strings.Contains(got, backends) || !strings.Contains(got, capacity) ||
		strings.Contains(got, "Old report") {
		t.Errorf("got %q", got)
	}
	// Without a file or without a section, the new report is unchanged.
	if got := keepSections(filepath.Join(t.TempDir(), "missing.md"), "# New\n"); got != "# New\n" {
		t.Errorf("no file: got %q", got)
	}
	if err := os.WriteFile(doc, []byte("# Old report\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := keepSections(doc, "# New\n"); got != "# New\n" {
		t.Errorf("no section: got %q", got)
	}
}

func TestParseStoreMetrics(t *testing.T) {
	body := []byte(`annex_postgres_database_size_bytes{storage_backend="default"} 1.5e+07
annex_postgres_database_size_bytes{storage_backend="other"} 9
annex_postgres_current_revision 42
`)
	got := parseStoreMetrics(body, "annex_postgres_database_size_bytes", "annex_postgres_current_revision")
	if got["annex_postgres_database_size_bytes"] != 1.5e+07 || got["annex_postgres_current_revision"] != 42 {
		t.Errorf("got %v", got)
	}
}
