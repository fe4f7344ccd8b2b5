package postgres

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// leaks says which form of password appears in msg, or "".
func leaks(msg, password string) string {
	for _, form := range []string{password, strconv.Quote(password), url.QueryEscape(password), url.PathEscape(password)} {
		form = strings.Trim(form, `"`)
		if strings.Contains(msg, form) {
			return form
		}
	}
	return ""
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		name, dsn, password string
	}{
		{"a password with / and a quote, which does not parse as a URL", `postgresql://u:se/cr"et@127.0.0.1:1/db`, `se/cr"et`},
		{"a password with a backslash", `postgres://u:a\b"c@127.0.0.1:1/db?sslmode=disable`, `a\b"c`},
		{"a percent-encoded password", "postgresql://u:p%2Fa%22b%5Cc@127.0.0.1:1/db", `p/a"b\c`},
		{"a password parameter", "postgres://u@127.0.0.1:1/db?sslmode=disable&password=hunter2hunter2", "hunter2hunter2"},
		{"keyword/value, quoted", "host=127.0.0.1 user=u password='two words' dbname=db", "two words"},
		{"keyword/value, plain", "host=127.0.0.1 password=plainsecret dbname=db", "plainsecret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, rest, isURL := strings.Cut(tc.dsn, "://")
			_, parseErr := url.Parse(tc.dsn)
			// The ways the connection string reaches a message: as given,
			// rewritten by kine, quoted by net/url, and its password alone.
			messages := []string{
				"connecting to " + tc.dsn + ": refused",
				"password authentication failed for " + tc.password,
			}
			if isURL {
				messages = append(messages, "failed to ping postgres://"+rest)
			}
			if parseErr != nil {
				messages = append(messages, "cannot parse: "+parseErr.Error())
			}
			for _, msg := range messages {
				got := Redact(msg, tc.dsn)
				if form := leaks(got, tc.password); form != "" {
					t.Errorf("Redact(%q) = %q, which still shows the password as %q", msg, got, form)
				}
				if !strings.Contains(got, redacted) {
					t.Errorf("Redact(%q) = %q, which does not say what it removed", msg, got)
				}
			}
		})
	}
	if got := Redact("nothing secret here", "postgres://u:pw-long@h/db"); got != "nothing secret here" {
		t.Errorf("Redact changed a message without a secret: %q", got)
	}
}

// TestStartDoesNotShowThePassword starts on connection strings whose
// password has the characters that escaped redaction before: the error
// says what failed without the password.
func TestStartDoesNotShowThePassword(t *testing.T) {
	port := strconv.Itoa(closedPort(t))
	for _, tc := range []struct{ dsn, password string }{
		{`postgresql://u:se/cr"et@127.0.0.1:` + port + `/db`, `se/cr"et`},
		{"postgresql://u:p%2Fa%22b%5Cc@127.0.0.1:" + port + "/db?sslmode=disable", `p/a"b\c`},
	} {
		_, err := Start(t.Context(), Options{DSN: tc.dsn, SocketDir: t.TempDir(), ConnectTimeout: 2 * time.Second})
		if err == nil {
			t.Fatalf("Start succeeded on %s with no database", tc.dsn)
		}
		t.Logf("error: %v", err)
		if form := leaks(err.Error(), tc.password); form != "" {
			t.Errorf("the error shows the password as %q: %v", form, err)
		}
	}
}
