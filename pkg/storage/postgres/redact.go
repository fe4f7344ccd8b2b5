package postgres

import (
	"cmp"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// redacted replaces a secret in a message.
const redacted = "<redacted>"

// Redact removes from msg the connection string dsn and its password, in
// every form a library may write them: as given, with the scheme kine
// rewrites it to, quoted as net/url quotes it in a parse error, and the
// password raw, percent-decoded and percent-encoded.
func Redact(msg, dsn string) string {
	for _, s := range secretsOf(dsn) {
		msg = strings.ReplaceAll(msg, s, redacted)
	}
	return msg
}

// secretsOf lists the strings that must not appear in a message, longest
// first, so that a connection string is replaced whole before its password.
func secretsOf(dsn string) []string {
	if dsn == "" {
		return nil
	}
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	forms := []string{dsn}
	if _, rest, ok := strings.Cut(dsn, "://"); ok {
		forms = append(forms, "postgres://"+rest, "postgresql://"+rest)
	}
	for _, f := range forms {
		add(f)
		// strconv.Quote is how net/url quotes a string it cannot parse.
		add(strings.Trim(strconv.Quote(f), `"`))
	}
	for _, pw := range passwordsOf(dsn) {
		add(pw)
		add(strings.Trim(strconv.Quote(pw), `"`))
		add(url.QueryEscape(pw))
		add(url.PathEscape(pw))
		add(strings.TrimPrefix(url.UserPassword("", pw).String(), ":"))
		if decoded, err := url.PathUnescape(pw); err == nil {
			add(decoded)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	return out
}

// passwordsOf finds the password of a connection string without parsing it
// as a URL, since a password with "/" or "@" does not parse: in the user
// information of a URL (up to the last "@"), in a password query
// parameter, or in a keyword/value password.
func passwordsOf(dsn string) []string {
	var out []string
	if _, rest, ok := strings.Cut(dsn, "://"); ok {
		authority := rest
		if i := strings.Index(rest, "?"); i >= 0 {
			authority = rest[:i]
		}
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			if _, pw, ok := strings.Cut(authority[:at], ":"); ok {
				out = append(out, pw)
			}
		}
		if _, query, ok := strings.Cut(rest, "?"); ok {
			for _, kv := range strings.Split(query, "&") {
				if v, ok := strings.CutPrefix(kv, "password="); ok {
					out = append(out, v)
				}
			}
		}
		return out
	}
	// keyword=value pairs, the value perhaps in single quotes.
	for rest := dsn; ; {
		i := strings.Index(rest, "password")
		if i < 0 {
			return out
		}
		rest = strings.TrimLeft(rest[i+len("password"):], " ")
		value, ok := strings.CutPrefix(rest, "=")
		if !ok {
			continue
		}
		value = strings.TrimLeft(value, " ")
		if quoted, ok := strings.CutPrefix(value, "'"); ok {
			end := strings.Index(quoted, "'")
			if end < 0 {
				end = len(quoted)
			}
			out = append(out, quoted[:end])
			rest = quoted[end:]
			continue
		}
		end := strings.IndexAny(value, " \t\n")
		if end < 0 {
			end = len(value)
		}
		out = append(out, value[:end])
		rest = value[end:]
	}
}
