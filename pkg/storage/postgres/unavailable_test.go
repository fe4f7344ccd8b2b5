package postgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/k3s-io/kine/pkg/server"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/storage/unavailable"
)

// failingBackend is kine's backend on a database that fails every request
// with err.
type failingBackend struct {
	server.Backend
	err error
}

func (b failingBackend) Create(context.Context, string, []byte, int64) (int64, error) {
	return 0, b.err
}
func (b failingBackend) List(context.Context, string, string, int64, int64, bool) (int64, []*server.KeyValue, error) {
	return 0, nil, b.err
}

// TestDatabaseDownIsUnavailable follows the driver's error of a database
// that refuses connections from kine's backend, over gRPC, to the status the
// client gets: a 503 with Retry-After that names neither the database's user,
// its name, nor its address; the password is in no log line either.
func TestDatabaseDownIsUnavailable(t *testing.T) {
	port := strconv.Itoa(closedPort(t))
	dsn := "postgres://ledger_owner:s3cret-pw@127.0.0.1:" + port + "/ledger_db?sslmode=disable"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, connectErr := pgconn.Connect(ctx, dsn)
	var ce *pgconn.ConnectError
	if !errors.As(connectErr, &ce) {
		t.Fatalf("connecting to a closed port: %v, not a ConnectError", connectErr)
	}

	var buf strings.Builder
	logger := funcr.New(func(prefix, args string) { buf.WriteString(prefix + " " + args + "\n") }, funcr.Options{})
	b := newAvailability(failingBackend{err: fmt.Errorf("wrapped by kine: %w", connectErr)}, dsn, logger)
	for _, op := range []struct {
		name  string
		write bool
		call  func() error
	}{
		{"create", true, func() error { _, err := b.Create(ctx, "/l0", nil, 0); return err }},
		{"list", false, func() error { _, _, err := b.List(ctx, "/", "", 0, 0, false); return err }},
	} {
		err := op.call()
		// What crosses gRPC is the status's code and message.
		wire := status.Convert(err).Err()
		if got := unavailable.Classify(wire); got != unavailable.NotDone {
			t.Errorf("%s: %v classified %s, want %s", op.name, wire, got, unavailable.NotDone)
		}
		converted := unavailable.Convert(wire, schema.GroupResource{Group: "history.example.com", Resource: "ledgers"}, op.write)
		if _, delay := apierrors.SuggestsClientDelay(converted); !apierrors.IsServiceUnavailable(converted) || !delay {
			t.Errorf("%s: %v, want a 503 with Retry-After", op.name, converted)
		}
		for _, secret := range []string{"ledger_owner", "ledger_db", "127.0.0.1", port, "s3cret-pw", "failed to connect"} {
			if strings.Contains(converted.Error(), secret) || strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the answer names %q: %v", op.name, secret, converted)
			}
		}
	}
	if !strings.Contains(buf.String(), "failed to connect") {
		t.Errorf("the cause was not logged: %q", buf.String())
	}
	if strings.Contains(buf.String(), "s3cret-pw") {
		t.Errorf("the log has the password: %q", buf.String())
	}
}

func TestClassifyDriverError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want unavailable.Kind
	}{
		{"nil", nil, unavailable.Other},
		{"a bad connection database/sql gave up on", driver.ErrBadConn, unavailable.NotDone},
		{"connection lost during the request", fmt.Errorf("query: %w", io.ErrUnexpectedEOF), unavailable.Unknown},
		{"server shutting down", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, unavailable.Unknown},
		{"server crashed", &pgconn.PgError{Code: "57P02"}, unavailable.Unknown},
		{"connection exception", &pgconn.PgError{Code: "08006"}, unavailable.Unknown},
		{"disk full", fmt.Errorf("insert: %w", &pgconn.PgError{Code: "53100", Message: `could not extend file "base/16384/16390": No space left on device`}), unavailable.NoSpace},
		{"a unique violation", &pgconn.PgError{Code: "23505"}, unavailable.Other},
		{"kine's own status", server.ErrKeyExists, unavailable.Other},
		{"the client went away", context.Canceled, unavailable.Other},
		{"another error", errors.New("something else"), unavailable.Other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classifyDriverError(tc.err); got != tc.want {
				t.Errorf("classifyDriverError(%v) = %s, want %s", tc.err, got, tc.want)
			}
		})
	}
	// An error left as it is stays the same error: kine compares
	// ErrKeyExists with ==.
	b := newAvailability(nil, "", klog.Background())
	if got := b.convert("create", server.ErrKeyExists); got != server.ErrKeyExists {
		t.Errorf("ErrKeyExists became %v", got)
	}
}
