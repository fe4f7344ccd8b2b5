package postgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/k3s-io/kine/pkg/server"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"annex.dev/annex/pkg/storage/unavailable"
)

// availability is kine's backend with the driver's errors of a database it
// cannot reach replaced by the statuses of package unavailable: NotApplied
// when the driver did not reach the database before sending anything (the
// connection was refused, or PostgreSQL is starting), MaybeApplied when it
// lost the database during the request, OutOfSpace when the database
// refused a write with disk_full. The driver's own error names the
// database's user, name and address (pgconn's "failed to connect to
// `user=... database=...`: host:port ..."), and kine would send it to the
// apiserver, which answered the client with it in a 500; it is logged here
// instead, without the connection string's password (redact), at most once
// a second.
type availability struct {
	server.Backend
	dsn    string
	logger klog.Logger
	limit  *unavailable.RateLimit
}

func newAvailability(b server.Backend, dsn string, logger klog.Logger) availability {
	return availability{Backend: b, dsn: dsn, logger: logger, limit: unavailable.NewRateLimit(time.Second)}
}

// convert returns err, or the status that replaces it.
func (b availability) convert(op string, err error) error {
	kind := classifyDriverError(err)
	if kind == unavailable.Other {
		return err
	}
	if n, ok := b.limit.Allow(); ok {
		b.logger.Error(redact(err, b.dsn), "PostgreSQL is unavailable", "operation", op, "what", kind.String(), "notLoggedSince", n)
	}
	switch kind {
	case unavailable.NotDone:
		return unavailable.NotApplied()
	case unavailable.NoSpace:
		return unavailable.OutOfSpace()
	}
	return unavailable.MaybeApplied()
}

// classifyDriverError says whether err, returned by kine's PostgreSQL
// driver, is a database that could not be reached (NotDone), was lost
// during the request (Unknown), or is out of space (NoSpace).
func classifyDriverError(err error) unavailable.Kind {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return unavailable.Other
	}
	// kine's own answers (a key that exists, a compacted revision) are
	// statuses already.
	var grpcErr interface{ GRPCStatus() *status.Status }
	if errors.As(err, &grpcErr) {
		return unavailable.Other
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) || errors.Is(err, driver.ErrBadConn) || pgconn.SafeToRetry(err) {
		return unavailable.NotDone
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// 53100 disk_full: the statement failed, nothing was written.
		if pgErr.Code == "53100" {
			return unavailable.NoSpace
		}
		// Class 08, connection exception; 57P01 admin_shutdown, 57P02
		// crash_shutdown, 57P03 cannot_connect_now.
		if strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03" {
			return unavailable.Unknown
		}
		return unavailable.Other
	}
	var netErr net.Error
	if pgconn.Timeout(err) || errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "conn closed") {
		return unavailable.Unknown
	}
	return unavailable.Other
}

func (b availability) Get(ctx context.Context, key string, revision int64, keysOnly bool) (int64, *server.KeyValue, error) {
	rev, kv, err := b.Backend.Get(ctx, key, revision, keysOnly)
	return rev, kv, b.convert("get", err)
}

func (b availability) Create(ctx context.Context, key string, value []byte, lease int64) (int64, error) {
	rev, err := b.Backend.Create(ctx, key, value, lease)
	return rev, b.convert("create", err)
}

func (b availability) Delete(ctx context.Context, key string, revision int64) (int64, *server.KeyValue, bool, error) {
	rev, kv, ok, err := b.Backend.Delete(ctx, key, revision)
	return rev, kv, ok, b.convert("delete", err)
}

func (b availability) List(ctx context.Context, key, end string, limit, revision int64, keysOnly bool) (int64, []*server.KeyValue, error) {
	rev, kvs, err := b.Backend.List(ctx, key, end, limit, revision, keysOnly)
	return rev, kvs, b.convert("list", err)
}

func (b availability) Count(ctx context.Context, key, end string, revision int64) (int64, int64, error) {
	rev, n, err := b.Backend.Count(ctx, key, end, revision)
	return rev, n, b.convert("count", err)
}

func (b availability) Update(ctx context.Context, key string, value []byte, revision, lease int64) (int64, *server.KeyValue, bool, error) {
	rev, kv, ok, err := b.Backend.Update(ctx, key, value, revision, lease)
	return rev, kv, ok, b.convert("update", err)
}

func (b availability) DbSize(ctx context.Context) (int64, error) {
	size, err := b.Backend.DbSize(ctx)
	return size, b.convert("size", err)
}

func (b availability) CurrentRevision(ctx context.Context) (int64, error) {
	rev, err := b.Backend.CurrentRevision(ctx)
	return rev, b.convert("current revision", err)
}

func (b availability) Compact(ctx context.Context, revision int64) (int64, error) {
	rev, err := b.Backend.Compact(ctx, revision)
	return rev, b.convert("compact", err)
}
