// Package version holds annex's own release version. It is annex's, not the
// Kubernetes libraries': k8s.io/component-base/version stays unstamped
// because the generic API server derives its effective (compatibility)
// version and feature gates from it.
package version

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	utilversion "k8s.io/apimachinery/pkg/util/version"
	apimachineryversion "k8s.io/apimachinery/pkg/version"
)

// Set at build time with -ldflags "-X annex.dev/annex/pkg/version.gitVersion=..."
// (make build, make image and the Dockerfile do; see hack/version.sh). A
// binary built without them, as by `go install`, falls back to what the Go
// toolchain recorded: the module version and the VCS revision and time.
var (
	// gitVersion is the release: a tag (v0.1.0), what `git describe`
	// makes of a later commit (v0.1.0-3-g0123abcd), or, in a clone without
	// tags, the chart's appVersion marked as a development build
	// (v0.1.0-dev-g0123abcd).
	gitVersion = ""
	// gitCommit is the full commit hash.
	gitCommit = ""
	// gitTreeState is "clean" or "dirty".
	gitTreeState = ""
	// buildDate is in RFC 3339 form. Builds are reproducible, so it is
	// SOURCE_DATE_EPOCH: the commit's time unless set otherwise.
	buildDate = ""
)

// unknown is the version of a binary that carries no version at all.
const unknown = "v0.0.0-unknown"

// Get returns the version of this binary.
func Get() apimachineryversion.Info {
	info := apimachineryversion.Info{
		GitVersion:   gitVersion,
		GitCommit:    gitCommit,
		GitTreeState: gitTreeState,
		BuildDate:    buildDate,
		GoVersion:    runtime.Version(),
		Compiler:     runtime.Compiler,
		Platform:     runtime.GOOS + "/" + runtime.GOARCH,
	}
	if build, ok := debug.ReadBuildInfo(); ok {
		fromBuildInfo(&info, build)
	}
	if info.GitVersion == "" {
		info.GitVersion = unknown
	}
	if v, err := utilversion.ParseSemantic(info.GitVersion); err == nil {
		info.Major, info.Minor = fmt.Sprint(v.Major()), fmt.Sprint(v.Minor())
	}
	return info
}

// fromBuildInfo fills in what the linker flags left empty.
func fromBuildInfo(info *apimachineryversion.Info, build *debug.BuildInfo) {
	if info.GitVersion == "" && build.Main.Version != "" && build.Main.Version != "(devel)" {
		// A tag, or the pseudo-version the go command derives from the
		// commit (v0.0.0-20261201111839-e17a09c3a617, +dirty if modified).
		info.GitVersion = build.Main.Version
	}
	for _, s := range build.Settings {
		switch s.Key {
		case "vcs.revision":
			if info.GitCommit == "" {
				info.GitCommit = s.Value
			}
		case "vcs.time":
			if info.BuildDate == "" {
				info.BuildDate = s.Value
			}
		case "vcs.modified":
			if info.GitTreeState == "" {
				info.GitTreeState = map[string]string{"true": "dirty", "false": "clean"}[s.Value]
			}
		}
	}
}

// String is the one line `annex-apiserver --version` prints.
func String() string {
	info := Get()
	s := "annex-apiserver " + info.GitVersion
	if info.GitCommit != "" {
		s += ", commit " + info.GitCommit
		if info.GitTreeState == "dirty" {
			s += " (dirty)"
		}
	}
	if info.BuildDate != "" {
		s += ", built " + info.BuildDate
	}
	return s + ", " + info.GoVersion + " " + info.Platform
}

// JSON is what `annex-apiserver --version=json` prints: the same document
// as GET /version, without the Kubernetes API levels.
func JSON() string {
	b, err := json.MarshalIndent(Get(), "", "  ")
	if err != nil {
		return "{}"
	}
	return string(b)
}
