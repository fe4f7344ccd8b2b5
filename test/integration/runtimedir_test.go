//go:build integration

package integration

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// checkClientKeyOnlyInRuntimeDir checks that key, an etcd client key of a
// StorageBackend that annex opened, is in annex's runtime directory in a
// file of mode 0600 in a directory of mode 0700, and nowhere in its data
// directory.
func checkClientKeyOnlyInRuntimeDir(t *testing.T, key []byte) {
	t.Helper()
	found := filesHolding(t, env.AnnexRuntimeDir(), key)
	if len(found) == 0 {
		t.Errorf("the etcd client key is not in the runtime directory %s", env.AnnexRuntimeDir())
	}
	for _, path := range found {
		for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
			info, err := os.Stat(p)
			if err != nil {
				t.Error(err)
			} else if info.Mode().Perm() != want {
				t.Errorf("%s has mode %v, want %v", p, info.Mode().Perm(), want)
			}
		}
	}
	checkNotOnDisk(t, key, env.AnnexDataDir())
}

// checkNotOnDisk checks that no file under dirs holds data.
func checkNotOnDisk(t *testing.T, data []byte, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		for _, path := range filesHolding(t, dir, data) {
			t.Errorf("%s holds the key", path)
		}
	}
}

// filesHolding lists the regular files under dir whose content contains data.
func filesHolding(t *testing.T, dir string, data []byte) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			// The embedded etcd's files come and go; a vanished one holds nothing.
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		content, err := os.ReadFile(path)
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if bytes.Contains(content, bytes.TrimSpace(data)) {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
