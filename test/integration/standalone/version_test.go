//go:build integration

package standalone

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/version"

	"annex.dev/annex/test/integration/framework"
)

// TestVersion checks that annex reports its own release, the same through
// --version and GET /version, and that kubectl, which reads /version
// directly in standalone mode, shows it.
func TestVersion(t *testing.T) {
	out, err := exec.Command(os.Getenv("ANNEX_APISERVER_BIN"), "--version=json").Output()
	if err != nil {
		t.Fatalf("annex-apiserver --version=json: %v", err)
	}
	var binary version.Info
	if err := json.Unmarshal(out, &binary); err != nil {
		t.Fatalf("annex-apiserver --version=json: %v\n%s", err, out)
	}
	if !strings.HasPrefix(binary.GitVersion, "v") || strings.HasPrefix(binary.GitVersion, "v0.0.0-master") || binary.GitCommit == "" || binary.BuildDate == "" {
		t.Errorf("annex-apiserver --version=json: want a stamped release, commit and build date, got %+v", binary)
	}

	dir := t.TempDir()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, dir, port)
	code, body := a.get(context.Background(), "/version")
	if code != http.StatusOK {
		t.Fatalf("GET /version: %d %s", code, body)
	}
	var served version.Info
	if err := json.Unmarshal([]byte(body), &served); err != nil {
		t.Fatalf("GET /version: %v\n%s", err, body)
	}
	if served.GitVersion != binary.GitVersion || served.GitCommit != binary.GitCommit || served.BuildDate != binary.BuildDate || served.GoVersion != binary.GoVersion {
		t.Errorf("GET /version answers %+v, the binary says %+v", served, binary)
	}
	// The Kubernetes API level annex serves stays that of its libraries.
	if served.EmulationMajor != "1" || served.EmulationMinor == "" {
		t.Errorf("GET /version: want the Kubernetes API level in emulationMajor/Minor, got %q.%q", served.EmulationMajor, served.EmulationMinor)
	}

	kubectl, err := a.kubectlErr("version")
	t.Logf("kubectl version:\n%s", kubectl)
	if !strings.Contains(kubectl, "Server Version: "+binary.GitVersion+"\n") {
		t.Errorf("kubectl version does not show annex's version %s (err %v):\n%s", binary.GitVersion, err, kubectl)
	}
}
