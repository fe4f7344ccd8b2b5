package postgres

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// TestStartWithTheDatabaseDown: a database that does not answer makes Start
// fail at once with the reason, marked ErrUnavailable. (kine v0.16 alone
// tries for about 5 minutes and then crashes the process.)
func TestStartWithTheDatabaseDown(t *testing.T) {
	dsn := "postgres://annex:secret-password@127.0.0.1:" + strconv.Itoa(closedPort(t)) + "/annex?sslmode=disable"
	begin := time.Now()
	s, err := Start(t.Context(), Options{DSN: dsn, SocketDir: t.TempDir(), ConnectTimeout: 2 * time.Second})
	took := time.Since(begin)
	if err == nil {
		s.Close()
		t.Fatal("Start succeeded with no database")
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("error %v is not ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("the error does not say the database is unreachable and why: %v", err)
	}
	if strings.Contains(err.Error(), "secret-password") {
		t.Errorf("the error shows the password: %v", err)
	}
	if took > 5*time.Second {
		t.Errorf("Start took %s to give up on a database that refuses connections", took)
	}
}

func TestStartWithABadConnectionString(t *testing.T) {
	_, err := Start(t.Context(), Options{DSN: "mysql://x", SocketDir: t.TempDir()})
	if err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("a connection string of another database: %v, want an error that is not ErrUnavailable", err)
	}
}
