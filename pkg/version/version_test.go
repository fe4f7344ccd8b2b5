package version

import (
	"runtime/debug"
	"strings"
	"testing"

	apimachineryversion "k8s.io/apimachinery/pkg/version"
	"k8s.io/component-base/compatibility"
)

// A binary built by `go install`, without the linker flags, reports what the
// go command recorded.
func TestFromBuildInfo(t *testing.T) {
	build := &debug.BuildInfo{
		Main: debug.Module{Path: "annex.dev/annex", Version: "v0.0.0-20261121170706-e17a09c3a617+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "e17a09c3a61778b8dc275f0189b5212d2236bbaa"},
			{Key: "vcs.time", Value: "2026-11-21T17:07:06Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	var info apimachineryversion.Info
	fromBuildInfo(&info, build)
	want := apimachineryversion.Info{
		GitVersion: "v0.0.0-20261121170706-e17a09c3a617+dirty", GitCommit: "e17a09c3a61778b8dc275f0189b5212d2236bbaa",
		GitTreeState: "dirty", BuildDate: "2026-11-21T17:07:06Z",
	}
	if info != want {
		t.Errorf("from the build info: got %+v, want %+v", info, want)
	}

	// The linker flags win; a development build's "(devel)" is no version.
	stamped := apimachineryversion.Info{GitVersion: "v0.1.0", GitCommit: "0123", BuildDate: "2026-01-01T00:00:00Z", GitTreeState: "clean"}
	got := stamped
	build.Main.Version = "(devel)"
	fromBuildInfo(&got, build)
	if got != stamped {
		t.Errorf("stamped %+v became %+v", stamped, got)
	}
	var none apimachineryversion.Info
	fromBuildInfo(&none, &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}})
	if none.GitVersion != "" {
		t.Errorf("(devel) became version %q", none.GitVersion)
	}
}

func TestGet(t *testing.T) {
	defer func(v string) { gitVersion = v }(gitVersion)
	gitVersion = "v0.1.0-3-g0123abcd"
	info := Get()
	if info.GitVersion != gitVersion || info.Major != "0" || info.Minor != "1" {
		t.Errorf("Get() = %+v, want version %s, major 0, minor 1", info, gitVersion)
	}
	if info.GoVersion == "" || info.Platform == "" {
		t.Errorf("Get() has no Go version or platform: %+v", info)
	}
	if s := String(); !strings.HasPrefix(s, "annex-apiserver v0.1.0-3-g0123abcd") || !strings.Contains(s, info.GoVersion) {
		t.Errorf("String() = %q", s)
	}
}

// ServedBy changes what /version answers and nothing that decides which
// APIs and feature gates are on.
func TestServedBy(t *testing.T) {
	defer func(v string) { gitVersion = v }(gitVersion)
	gitVersion = "v0.1.0"
	kube := compatibility.NewEffectiveVersionFromString("1.36.3", "", "")
	served := ServedBy(kube)
	if !served.BinaryVersion().EqualTo(kube.BinaryVersion()) || !served.EmulationVersion().EqualTo(kube.EmulationVersion()) ||
		!served.MinCompatibilityVersion().EqualTo(kube.MinCompatibilityVersion()) {
		t.Errorf("ServedBy changed the Kubernetes versions: %s, want %s", served, kube)
	}
	info := served.Info()
	if info.GitVersion != "v0.1.0" || info.Major != "0" || info.Minor != "1" {
		t.Errorf("/version would answer %+v, want annex's v0.1.0", info)
	}
	if info.EmulationMajor != "1" || info.EmulationMinor != "36" || info.MinCompatibilityMinor != "35" {
		t.Errorf("/version would answer emulation %s.%s, min compatibility %s.%s; want 1.36 and 1.35",
			info.EmulationMajor, info.EmulationMinor, info.MinCompatibilityMajor, info.MinCompatibilityMinor)
	}
}
