package postgres

import (
	"errors"
	"slices"

	"github.com/jackc/pgx/v5/pgconn"
)

// Plaintext says whether a connection with dsn may go without TLS, as pgx
// (which kine connects with) would make it: pgx tries a connection without
// TLS for sslmode disable, allow and prefer, the default. A connection over
// a unix socket does not leave the machine and is not plaintext in this
// sense. The error, for a dsn that does not parse, never carries dsn.
func Plaintext(dsn string) (bool, error) {
	hosts, err := PlaintextHosts(dsn)
	return len(hosts) > 0, err
}

// PlaintextHosts names the hosts (as dsn gives them: names or IP addresses)
// that a connection with dsn may reach without TLS, as Plaintext decides;
// none when every attempt uses TLS or a unix socket. The error, for a dsn
// that does not parse, never carries dsn.
func PlaintextHosts(dsn string) ([]string, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		// The parse error may quote the connection string.
		return nil, errors.New("the PostgreSQL connection string does not parse")
	}
	var hosts []string
	attempts := append([]*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port, TLSConfig: cfg.TLSConfig}}, cfg.Fallbacks...)
	for _, a := range attempts {
		if a.TLSConfig != nil {
			continue
		}
		if network, _ := pgconn.NetworkAddress(a.Host, a.Port); network != "unix" && !slices.Contains(hosts, a.Host) {
			hosts = append(hosts, a.Host)
		}
	}
	return hosts, nil
}
