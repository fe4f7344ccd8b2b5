// Package annexserver runs the annex-apiserver binary for tests and
// benchmarks: one type, Server, for every mode and store, with Start and
// Stop that return errors, and thin testing.TB wrappers (StartT). Every
// suite that runs annex as a process, and the benchmark, starts it here.
package annexserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"annex.dev/annex/test/ports"
	"annex.dev/annex/test/process"
)

// BinEnv names the annex-apiserver binary under test; make build writes it
// to bin/annex-apiserver and the Makefile's test targets set it.
const BinEnv = "ANNEX_APISERVER_BIN"

// Mode is annex's --mode.
type Mode string

const (
	// Standalone is annex with no cluster: its own certificates, and an
	// admin kubeconfig it writes for its clients.
	Standalone Mode = "standalone"
	// Aggregated is annex behind a cluster's aggregator; the caller passes
	// the cluster's flags (kubeconfigs, certificates, APIService) in Args.
	Aggregated Mode = "aggregated"
)

const (
	defaultReadyTimeout = 90 * time.Second
	defaultStopTimeout  = 30 * time.Second
	probeTimeout        = 2 * time.Second
)

// Server is one annex-apiserver process, started again as often as a test
// needs on the same data, port and flags, as a pod's container restarts.
//
// The fields are read at each Start; set them before the first.
type Server struct {
	// Name is the server's name in messages and the log's markers; "annex"
	// when empty.
	Name string
	// Bin is the binary; $ANNEX_APISERVER_BIN when empty.
	Bin string
	// Mode is Standalone when empty.
	Mode Mode
	// Dir is the process's working directory and holds its log, and, in
	// standalone mode, its admin kubeconfig. Required.
	Dir string
	// DataDir is --data-dir, where the embedded etcd keeps its data;
	// Dir/data when empty.
	DataDir string
	// Port is --secure-port on 127.0.0.1; a reserved free port when 0.
	Port int
	// Args are annex's further flags: its store, the cluster's flags in
	// aggregated mode, anything a test needs. They come after the flags
	// Server sets, so they override them.
	Args []string
	// Env is the process's environment; the caller's when nil.
	Env []string
	// LogFile receives the process's stdout and stderr, appended across
	// starts; Dir/annex.log when empty.
	LogFile string
	// Probe is the client configuration /readyz is asked with (its host is
	// ignored). In standalone mode the admin kubeconfig annex writes is
	// used when Probe is nil; in aggregated mode Probe is required to wait
	// for ready.
	Probe *rest.Config
	// ReadyTimeout bounds Start's wait for /readyz (default 90s);
	// StopTimeout bounds the wait after SIGTERM before SIGKILL (default
	// 30s).
	ReadyTimeout, StopTimeout time.Duration

	proc *process.Process
	// ended is set when the process was stopped or killed on purpose, so
	// an exit of its own can be told from one a test caused.
	ended  bool
	paused bool
	// readyIn is how long the last Start took from launch to ready.
	readyIn time.Duration
}

// Start launches annex and waits until its /readyz answers 200. On error
// the process is stopped and the error carries the log's last lines.
func (s *Server) Start(ctx context.Context) error {
	started := time.Now()
	if err := s.Launch(); err != nil {
		return err
	}
	if err := s.WaitReady(ctx, s.readyTimeout()); err != nil {
		if exited, _ := s.proc.Exited(); !exited {
			_ = s.proc.Kill()
		}
		s.ended = true
		return fmt.Errorf("%w%s", err, s.LogTail(60))
	}
	s.readyIn = time.Since(started)
	return nil
}

// Launch starts the process and returns at once; WaitReady, or the
// caller's own wait, follows.
func (s *Server) Launch() error {
	if s.proc != nil {
		if exited, _ := s.proc.Exited(); !exited {
			return fmt.Errorf("%s is already running", s.name())
		}
	}
	if err := s.complete(); err != nil {
		return err
	}
	if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
		return err
	}
	log, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// The child writes to its own copy of the descriptor.
	defer log.Close()
	args := s.args()
	fmt.Fprintf(log, "=== %s %s started: %s\n", time.Now().UTC().Format(time.RFC3339Nano), s.name(), strings.Join(args, " "))
	proc, err := process.Start(s.Bin, args, s.Env, s.Dir, log)
	if err != nil {
		return fmt.Errorf("starting %s: %w", s.name(), err)
	}
	s.proc, s.ended, s.paused = proc, false, false
	return nil
}

// complete fills in the defaults, once.
func (s *Server) complete() error {
	if s.Dir == "" {
		return errors.New("annexserver: Dir is required")
	}
	if s.Bin == "" {
		if s.Bin = os.Getenv(BinEnv); s.Bin == "" {
			return fmt.Errorf("%s is not set: build annex with `make build` and set %s=$PWD/bin/annex-apiserver", BinEnv, BinEnv)
		}
	}
	if s.Mode == "" {
		s.Mode = Standalone
	}
	if s.DataDir == "" {
		s.DataDir = filepath.Join(s.Dir, "data")
	}
	if s.LogFile == "" {
		s.LogFile = filepath.Join(s.Dir, "annex.log")
	}
	if s.Port == 0 {
		port, err := ports.Free()
		if err != nil {
			return err
		}
		s.Port = port
	}
	return nil
}

func (s *Server) args() []string {
	args := []string{
		"--mode=" + string(s.Mode),
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(s.Port),
		"--data-dir=" + s.DataDir,
	}
	if s.Mode == Standalone {
		args = append(args, "--admin-kubeconfig="+s.Kubeconfig())
	}
	return append(args, s.Args...)
}

// WaitReady waits up to timeout until /readyz answers 200, failing at once
// when the process exits.
func (s *Server) WaitReady(ctx context.Context, timeout time.Duration) error {
	if s.Probe == nil && s.Mode != Standalone {
		return fmt.Errorf("annexserver: %s runs in %s mode and has no Probe to ask /readyz with", s.name(), s.Mode)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var client *http.Client
	last := "no answer yet"
	for {
		if err := s.Running(); err != nil {
			return fmt.Errorf("%s exited before it was ready: %w", s.name(), err)
		}
		if client == nil {
			cfg, err := s.probeConfig()
			switch {
			case err != nil:
				// A kubeconfig being written cannot be read yet.
				last = err.Error()
			case cfg != nil:
				if client, err = rest.HTTPClientFor(cfg); err != nil {
					return err
				}
			}
		}
		if client != nil {
			if code, body, err := s.get(ctx, client, "/readyz?verbose"); err != nil {
				last = err.Error()
			} else if code == http.StatusOK {
				return nil
			} else {
				last = fmt.Sprintf("%d: %s", code, body)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s was not ready within %s; last /readyz: %s", s.name(), timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// probeConfig is the configuration to ask /readyz with, or nil while the
// admin kubeconfig of a standalone annex is not written yet.
func (s *Server) probeConfig() (*rest.Config, error) {
	if s.Probe != nil {
		return rest.CopyConfig(s.Probe), nil
	}
	if _, err := os.Stat(s.Kubeconfig()); err != nil {
		return nil, nil
	}
	return s.AdminConfig()
}

func (s *Server) get(ctx context.Context, client *http.Client, path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body), nil
}

// Stop sends SIGTERM, as the kubelet does, and SIGKILL if annex has not
// exited within StopTimeout, which is an error. A stopped (SIGSTOP) annex
// is continued first. An annex that had exited on its own is an error;
// one already stopped or killed is not.
func (s *Server) Stop() error {
	if s.proc == nil || s.ended {
		return nil
	}
	if err := s.ExitedOnItsOwn(); err != nil {
		s.ended = true
		return fmt.Errorf("%w%s", err, s.LogTail(30))
	}
	if s.paused {
		_ = s.Signal(syscall.SIGCONT)
	}
	s.Note("SIGTERM")
	s.ended = true
	if err := s.proc.Stop(s.stopTimeout()); err != nil {
		return fmt.Errorf("stopping %s: %w%s", s.name(), err, s.LogTail(30))
	}
	return nil
}

// Kill ends annex with SIGKILL, wherever it is, and waits until it is gone.
func (s *Server) Kill() error {
	if s.proc == nil {
		return nil
	}
	s.Note("SIGKILL")
	s.ended = true
	return s.proc.Kill()
}

// Signal sends sig to annex; SIGSTOP and SIGCONT are remembered, so that
// Stop continues a stopped annex first.
func (s *Server) Signal(sig syscall.Signal) error {
	if s.proc == nil {
		return fmt.Errorf("%s is not running", s.name())
	}
	s.Note("%s", sig)
	if err := s.proc.Signal(sig); err != nil {
		return err
	}
	switch sig {
	case syscall.SIGSTOP:
		s.paused = true
	case syscall.SIGCONT:
		s.paused = false
	}
	return nil
}

// Restart stops annex (SIGTERM) and starts it again on the same data and
// port with args added to its flags, which stay for later starts.
func (s *Server) Restart(ctx context.Context, args ...string) error {
	if err := s.Stop(); err != nil {
		return err
	}
	s.Args = append(s.Args, args...)
	return s.Start(ctx)
}

// Running returns an error when annex's process has exited.
func (s *Server) Running() error {
	if s.proc == nil {
		return fmt.Errorf("%s was not started", s.name())
	}
	if exited, err := s.proc.Exited(); exited {
		return err
	}
	return nil
}

// ExitedOnItsOwn reports an exit that neither Stop nor Kill caused.
func (s *Server) ExitedOnItsOwn() error {
	if s.proc == nil || s.ended {
		return nil
	}
	if exited, err := s.proc.Exited(); exited {
		return fmt.Errorf("%s exited on its own: %v", s.name(), err)
	}
	return nil
}

// Process is the running process, for its pid and exit.
func (s *Server) Process() *process.Process { return s.proc }

// ReadyIn is how long the last Start took from launch until /readyz
// answered 200.
func (s *Server) ReadyIn() time.Duration { return s.readyIn }

// Addr is host:port of annex.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL is the https URL of annex.
func (s *Server) URL() string { return "https://" + s.Addr() }

// Kubeconfig is where a standalone annex writes its admin kubeconfig.
func (s *Server) Kubeconfig() string { return filepath.Join(s.Dir, "kubeconfig") }

// AdminConfig is the client configuration of a standalone annex's admin.
func (s *Server) AdminConfig() (*rest.Config, error) {
	if s.Mode != Standalone {
		return nil, fmt.Errorf("annexserver: %s runs in %s mode and has no admin kubeconfig", s.name(), s.Mode)
	}
	return clientcmd.BuildConfigFromFlags("", s.Kubeconfig())
}

// Log returns annex's output so far, across its starts.
func (s *Server) Log() string {
	data, _ := os.ReadFile(s.LogFile)
	return string(data)
}

// LogLines returns the lines of the log that contain substr.
func (s *Server) LogLines(substr string) string {
	var out []string
	for _, line := range strings.Split(s.Log(), "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// LogTail returns the last n lines of the log, to append to an error.
func (s *Server) LogTail(n int) string { return process.FileTail(s.LogFile, n) }

// Note writes a marker line into the log, so that a reader sees where a
// test stopped, killed or signalled annex.
func (s *Server) Note(format string, args ...any) {
	if s.LogFile == "" {
		return
	}
	f, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s test: %s\n", time.Now().UTC().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
}

func (s *Server) name() string {
	if s.Name == "" {
		return "annex"
	}
	return "annex " + s.Name
}

func (s *Server) readyTimeout() time.Duration {
	if s.ReadyTimeout > 0 {
		return s.ReadyTimeout
	}
	return defaultReadyTimeout
}

func (s *Server) stopTimeout() time.Duration {
	if s.StopTimeout > 0 {
		return s.StopTimeout
	}
	return defaultStopTimeout
}
