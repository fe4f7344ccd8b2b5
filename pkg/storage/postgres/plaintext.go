package postgres

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// Plaintext says whether a connection with dsn may go without TLS, as pgx
// (which kine connects with) would make it: pgx tries a connection without
// TLS for sslmode disable, allow and prefer, the default. A connection over
// a unix socket does not leave the machine and is not plaintext in this
// sense. The error, for a dsn that does not parse, never carries dsn.
func Plaintext(dsn string) (bool, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		// The parse error may quote the connection string.
		return false, errors.New("the PostgreSQL connection string does not parse")
	}
	attempts := append([]*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port, TLSConfig: cfg.TLSConfig}}, cfg.Fallbacks...)
	for _, a := range attempts {
		if a.TLSConfig != nil {
			continue
		}
		if network, _ := pgconn.NetworkAddress(a.Host, a.Port); network != "unix" {
			return true, nil
		}
	}
	return false, nil
}
