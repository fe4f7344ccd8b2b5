package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"annex.dev/annex/pkg/storage/postgres/postgrestest"
	"annex.dev/annex/test/integration/framework"
)

// A store is a running backend that annex replicas keep their data in.
type store struct {
	// Args are annex's flags for this store; none for the embedded etcd.
	Args []string
	// Shared says whether two annex replicas can share the store.
	Shared bool
	// Version is the store's version, for the report.
	Version string
	// DSN is PostgreSQL's connection string; empty for the etcds.
	DSN string
	// stop stops the store and removes its data.
	stop func() error
}

// startStore makes dataDir and logDir and starts k's store in them; its
// version, if it has one, goes into versions.
func startStore(ctx context.Context, k backendKind, dataDir, logDir string, versions map[string]string) (*store, error) {
	for _, d := range []string{dataDir, logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	st, err := k.start(ctx, dataDir, logDir)
	if err != nil {
		return nil, fmt.Errorf("starting the store: %w", err)
	}
	if st.Version != "" {
		versions[k.Name] = st.Version
	}
	return st, nil
}

// embeddedStore is annex's own embedded etcd: nothing to start, each
// replica has its own.
func embeddedStore(_ context.Context, _, _ string) (*store, error) {
	return &store{stop: func() error { return nil }}, nil
}

// etcdStore starts the test control plane's etcd (KUBEBUILDER_ASSETS) on
// loopback without TLS, with its data in dataDir and its log in logDir. It
// syncs its WAL (envtest's --unsafe-no-fsync is not given here).
func etcdStore(ctx context.Context, dataDir, logDir string) (*store, error) {
	e, err := framework.StartEtcdProcess(ctx, filepath.Join(dataDir, "etcd"), filepath.Join(logDir, "etcd.log"))
	if err != nil {
		return nil, err
	}
	srv := &server{Name: "etcd", Host: e.URL, HTTP: &http.Client{Timeout: 2 * time.Second}}
	return &store{Args: []string{"--etcd-servers=" + e.URL}, Shared: true, Version: srv.version(ctx), stop: e.Stop}, nil
}

// postgresStore starts a new PostgreSQL server with its defaults (fsync and
// synchronous_commit on) on loopback, its data in a directory of its own
// (removed when it stops) and its log in logDir. The server runs in the
// foreground as a child of the driver, so that it dies with the driver.
func postgresStore(ctx context.Context, _, logDir string) (_ *store, retErr error) {
	bin, err := postgrestest.BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "annex-bench-postgres-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	// PostgreSQL refuses to run as root: as root, run it as the postgres user.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres user to start PostgreSQL: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	command := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := command("initdb", "-D", data, "-U", "annex", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	port, err := framework.FreePort()
	if err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(logDir, "postgres.log"))
	if err != nil {
		return nil, err
	}
	cmd := command("postgres", "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() error {
		defer os.RemoveAll(dir)
		defer log.Close()
		select {
		case <-exited:
			return errors.New("PostgreSQL had already exited")
		default:
		}
		// SIGINT is PostgreSQL's fast shutdown.
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
			return nil
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return errors.New("PostgreSQL did not stop within 30 s of SIGINT and was killed")
		}
	}
	host := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "annex"}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		select {
		case <-exited:
			return false, errors.New("PostgreSQL exited")
		default:
		}
		return command("pg_isready", host...).Run() == nil, nil
	})
	if err == nil {
		if out, cerr := command("createdb", append(host, "annex")...).CombinedOutput(); cerr != nil {
			err = fmt.Errorf("createdb: %v: %s", cerr, out)
		}
	}
	if err != nil {
		_ = stop()
		return nil, fmt.Errorf("PostgreSQL did not start (log %s): %w", log.Name(), err)
	}
	version := "unknown"
	if out, err := command("postgres", "--version").Output(); err == nil {
		version = strings.TrimPrefix(strings.TrimSpace(string(out)), "postgres (PostgreSQL) ")
	}
	dsnFile := filepath.Join(logDir, "postgres.dsn")
	dsn := fmt.Sprintf("postgres://annex@127.0.0.1:%d/annex?sslmode=disable", port)
	if err := os.WriteFile(dsnFile, []byte(dsn+"\n"), 0o600); err != nil {
		_ = stop()
		return nil, err
	}
	return &store{Args: []string{"--postgres-dsn-file=" + dsnFile}, Shared: true, Version: version, DSN: dsn, stop: stop}, nil
}

func checkBinary(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}
