package annexserver

import (
	"context"
	"testing"

	"k8s.io/client-go/rest"
)

// StartT starts s for the test t and fails it at once if annex does not
// become ready. A test's Dir defaults to a fresh t.TempDir(). When t ends,
// annex is stopped; an annex that exited on its own, or did not stop
// within StopTimeout, fails the test, and a failed test logs the end of
// annex's log.
//
// Register the cleanups of annex's stores before StartT, so that annex
// stops before they do.
func StartT(t testing.TB, s *Server) *Server {
	t.Helper()
	if s.Dir == "" {
		s.Dir = t.TempDir()
	}
	Cleanup(t, s)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// Cleanup registers what StartT does when t ends, for a Server the test
// starts itself.
func Cleanup(t testing.TB, s *Server) {
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("%s log: %s%s", s.name(), s.LogFile, s.LogTail(80))
		}
	})
}

// AdminConfigT is AdminConfig, failing t on error.
func AdminConfigT(t testing.TB, s *Server) *rest.Config {
	t.Helper()
	cfg, err := s.AdminConfig()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
