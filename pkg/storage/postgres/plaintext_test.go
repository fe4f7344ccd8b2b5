package postgres

import (
	"slices"
	"strings"
	"testing"
)

func TestPlaintext(t *testing.T) {
	for _, tc := range []struct {
		dsn       string
		plaintext bool
	}{
		{"postgres://annex:pw@db.example:5432/annex?sslmode=disable", true},
		{"postgres://annex:pw@db.example:5432/annex?sslmode=allow", true},
		{"postgres://annex:pw@db.example:5432/annex?sslmode=prefer", true},
		// No sslmode is prefer, as in libpq.
		{"postgres://annex:pw@db.example:5432/annex", true},
		{"host=db.example user=annex dbname=annex sslmode=disable", true},
		{"postgres://annex:pw@db.example:5432/annex?sslmode=require", false},
		{"postgres://annex:pw@db.example:5432/annex?sslmode=verify-full", false},
		{"host=db.example user=annex dbname=annex sslmode=verify-full", false},
		// Every host is tried with the same sslmode.
		{"postgres://annex:pw@db-0.example,db-1.example/annex?sslmode=verify-full", false},
		{"postgres://annex:pw@db-0.example,db-1.example/annex?sslmode=prefer", true},
		// sslnegotiation=direct turns prefer into require.
		{"postgres://annex:pw@db.example/annex?sslnegotiation=direct", false},
		// A unix socket stays on the machine.
		{"host=/var/run/postgresql user=annex dbname=annex sslmode=disable", false},
		{"postgres://annex@/annex?host=/var/run/postgresql", false},
	} {
		got, err := Plaintext(tc.dsn)
		if err != nil || got != tc.plaintext {
			t.Errorf("Plaintext(%q) = %v, %v; want %v", tc.dsn, got, err, tc.plaintext)
		}
	}
	const password = "s3cret"
	_, err := Plaintext("postgres://annex:" + password + "@db.example:notaport/annex")
	if err == nil || strings.Contains(err.Error(), password) {
		t.Errorf("Plaintext of a connection string that does not parse: %v, want an error without the password", err)
	}
}

func TestPlaintextHosts(t *testing.T) {
	for _, tc := range []struct {
		dsn   string
		hosts []string
	}{
		{"postgres://annex:pw@db.example:5432/annex?sslmode=verify-full", nil},
		{"postgres://annex:pw@127.0.0.1:5432/annex?sslmode=disable", []string{"127.0.0.1"}},
		// prefer tries TLS first, then plaintext: each host once.
		{"host=db-0.example,::1 port=5432,5433 user=annex dbname=annex sslmode=prefer", []string{"db-0.example", "::1"}},
		{"host=/var/run/postgresql user=annex dbname=annex sslmode=disable", nil},
	} {
		got, err := PlaintextHosts(tc.dsn)
		if err != nil || !slices.Equal(got, tc.hosts) {
			t.Errorf("PlaintextHosts(%q) = %q, %v; want %q", tc.dsn, got, err, tc.hosts)
		}
	}
}
