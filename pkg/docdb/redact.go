package docdb

import (
	"net/url"
	"strings"
)

// redacted replaces every secret Redact removes.
const redacted = "xxxxx"

// sensitiveOptions are connection-string options whose values are secrets, lower-cased.
var sensitiveOptions = map[string]bool{
	"authmechanismproperties":         true, // may hold AWS_SESSION_TOKEN
	"tlscertificatekeyfilepassword":   true,
	"sslclientcertificatekeypassword": true,
	"password":                        true,
}

// Redact returns uri with the password and secret-bearing options replaced by "xxxxx", so that it
// can be logged or put in an error. It never fails: a string it cannot split safely comes back
// with everything between "://" and the last "@" hidden. Over-redaction is preferred to a leak.
func Redact(uri string) string {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		// Not a URI; it may still be "user:pass@host". Hide any user info.
		if at := strings.LastIndex(uri, "@"); at >= 0 {
			return redacted + uri[at:]
		}
		return uri
	}
	// The user info ends at the last "@": an unescaped "@" in a password would otherwise leak the
	// tail of the password. An "@" in the query over-redacts, which is safe.
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user, _, hasPassword := strings.Cut(rest[:at], ":")
		if strings.ContainsAny(user, "/?") { // the "@" was not in the authority: hide it all
			user, hasPassword = "", true
		}
		if hasPassword {
			rest = user + ":" + redacted + rest[at:]
		}
	}
	path, query, hasQuery := strings.Cut(rest, "?")
	if !hasQuery {
		return scheme + "://" + path
	}
	return scheme + "://" + path + "?" + redactQuery(query)
}

// redactQuery hides the values of sensitiveOptions in a raw query string, keeping the rest byte
// for byte.
func redactQuery(query string) string {
	parts := strings.Split(query, "&")
	for i, p := range parts {
		key, _, hasValue := strings.Cut(p, "=")
		name, err := url.QueryUnescape(key)
		if err != nil {
			name = key
		}
		if hasValue && sensitiveOptions[strings.ToLower(name)] {
			parts[i] = key + "=" + redacted
		}
	}
	return strings.Join(parts, "&")
}

// uriSecrets returns the strings of uri that must never appear in an error: the password (raw
// and unescaped) and the values of sensitive options.
func uriSecrets(uri string) []string {
	var out []string
	_, rest, ok := strings.Cut(uri, "://")
	if !ok {
		rest = uri
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		if _, pw, ok := strings.Cut(rest[:at], ":"); ok && pw != "" {
			out = append(out, pw)
			if u, err := url.PathUnescape(pw); err == nil && u != pw {
				out = append(out, u)
			}
		}
	}
	if _, query, ok := strings.Cut(rest, "?"); ok {
		for _, p := range strings.Split(query, "&") {
			key, value, _ := strings.Cut(p, "=")
			if name, err := url.QueryUnescape(key); err == nil && sensitiveOptions[strings.ToLower(name)] && value != "" {
				out = append(out, value)
				if u, err := url.QueryUnescape(value); err == nil && u != value {
					out = append(out, u)
				}
			}
		}
	}
	return out
}

// scrubbedError hides secrets in the message of an error that came from code we do not control
// (the driver's URI parser quotes option values). The original stays reachable with errors.Is/As
// so that callers can still classify it, but its text is never printed by this type.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// scrub returns err with every secret replaced by "xxxxx" in its message.
func scrub(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, redacted)
			changed = true
		}
	}
	if !changed {
		return err
	}
	return &scrubbedError{msg: msg, err: err}
}
