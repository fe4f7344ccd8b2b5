// Package postgrestest starts a throw-away PostgreSQL server for tests: a new
// cluster in a temporary directory (initdb), listening on a free loopback
// port, stopped and removed when the test ends. It uses the PostgreSQL
// server binaries of the machine (hack/install-postgres.sh installs them).
package postgrestest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"annex.dev/annex/test/ports"
)

// Server is a running PostgreSQL server.
type Server struct {
	// DSN connects as a superuser to the database "annex".
	DSN  string
	Port int
	dir  string
	bin  string
	run  func(name string, args ...string) *exec.Cmd
	// own gives a directory to the user the server runs as.
	own func(dir string) error
	// killed is set by Kill and cleared by Restart: a killed server leaves
	// its postmaster.pid behind, and there is nothing to stop.
	killed bool
}

// BinDir finds the directory of PostgreSQL's server binaries (initdb,
// pg_ctl, postgres): POSTGRES_BIN_DIR, pg_config's, or Debian's directory
// of the newest version (hack/install-postgres.sh installs them).
func BinDir() (string, error) {
	if dir := os.Getenv("POSTGRES_BIN_DIR"); dir != "" {
		return dir, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := string(bytes.TrimSpace(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	// Debian keeps the server binaries out of PATH, one directory per
	// version: /usr/lib/postgresql/<major>/bin.
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	major := func(path string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
		return n
	}
	sort.Slice(matches, func(i, j int) bool { return major(matches[i]) < major(matches[j]) })
	if len(matches) == 0 {
		return "", fmt.Errorf("no PostgreSQL server binaries (initdb) found: run `make postgres` (hack/install-postgres.sh), or set POSTGRES_BIN_DIR")
	}
	return filepath.Dir(matches[len(matches)-1]), nil
}

// Start starts a PostgreSQL server for t.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartIn(t, "")
}

// StartIn starts a PostgreSQL server for t whose data, socket and log are in
// a new directory under parent (the system's temp directory when "").
func StartIn(t testing.TB, parent string) *Server {
	t.Helper()
	bin, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(parent, "annex-postgres-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	adoptOrphans()

	// PostgreSQL refuses to run as root; as root, run it as the postgres user.
	run := func(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
	own := func(string) error { return nil }
	if os.Geteuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres user to start PostgreSQL: %v", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		own = func(dir string) error { return os.Chown(dir, uid, gid) }
		if err := own(dir); err != nil {
			t.Fatal(err)
		}
		run = func(name string, args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
		}
	}

	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Port: port, dir: dir, bin: bin, run: run, own: own}
	data := filepath.Join(dir, "data")
	s.must(t, filepath.Join(bin, "initdb"), "-D", data, "-U", "annex", "--auth=trust", "--no-sync", "-E", "UTF8")
	s.must(t, filepath.Join(bin, "pg_ctl"), "-D", data, "-l", filepath.Join(dir, "postgres.log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", port, dir), "start")
	t.Cleanup(func() { s.Stop(t) })
	s.must(t, filepath.Join(bin, "createdb"), "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "annex", "annex")
	s.DSN = fmt.Sprintf("postgres://annex@127.0.0.1:%d/annex?sslmode=disable", port)
	return s
}

// MoveDatabaseTo keeps the database "annex", its tables and indexes, in
// dir (a new directory, made here), as a tablespace of its own: dir may be
// on another filesystem than the rest of the server's data and its
// write-ahead log. Call it before anything connects to the database.
func (s *Server) MoveDatabaseTo(t testing.TB, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.own(dir); err != nil {
		t.Fatal(err)
	}
	psql := func(sql string) {
		s.must(t, filepath.Join(s.bin, "psql"), "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "annex", "-d", "postgres",
			"-v", "ON_ERROR_STOP=1", "-c", sql)
	}
	psql(fmt.Sprintf("CREATE TABLESPACE annex LOCATION '%s'", dir))
	psql("ALTER DATABASE annex SET TABLESPACE annex")
}

// Stop stops the server; stopping it twice, or after Kill, does nothing.
func (s *Server) Stop(t testing.TB) {
	data := filepath.Join(s.dir, "data")
	if _, err := os.Stat(filepath.Join(data, "postmaster.pid")); err != nil || s.killed {
		return
	}
	pid, _ := postmasterPID(data)
	if out, err := s.run(filepath.Join(s.bin, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop").CombinedOutput(); err != nil {
		t.Errorf("stopping PostgreSQL: %v\n%s", err, out)
	}
	if pid > 0 {
		reap(pid)
	}
}

// Kill ends the server as a crash would: SIGKILL to the postmaster and every
// backend at once, and waits until they are gone. Nothing is flushed or
// shut down; Restart starts it again, recovering from its write-ahead log.
// Linux only.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if err := killServer(filepath.Join(s.dir, "data")); err != nil {
		t.Fatalf("killing PostgreSQL: %v", err)
	}
	s.killed = true
}

// Running says whether the server's postmaster runs.
func (s *Server) Running() bool {
	pid, err := postmasterPID(filepath.Join(s.dir, "data"))
	if err != nil {
		return false
	}
	reap(pid)
	return processAlive(pid)
}

// Restart starts a stopped or killed server again on the same port and
// data.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	data := filepath.Join(s.dir, "data")
	s.must(t, filepath.Join(s.bin, "pg_ctl"), "-D", data, "-l", filepath.Join(s.dir, "postgres.log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", s.Port, s.dir), "start")
	s.killed = false
}

func (s *Server) must(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := s.run(name, args...).CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
		t.Fatalf("%s %v: %v\n%s\n%s", filepath.Base(name), args, err, out, log)
	}
}
