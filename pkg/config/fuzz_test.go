package config

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzLoadApply feeds arbitrary environments ("NAME=value" lines) to LoadApply: it must never
// panic, every failure must name a variable, and no error may quote the password of DR_URI
// (the URI is only ever shown redacted). Seeds are under testdata/fuzz/FuzzLoadApply.
func FuzzLoadApply(f *testing.F) {
	f.Add("DR_URI=mongodb://u:pw@h:27017/?replicaSet=rs0\nARCHIVE_BUCKET=b\nKAFKA_TOPIC=changevents\nINTERCEPT_POLICY=delete=archive")
	f.Add("DR_URI=http://user:s3cr3t-pass@h\nDR_TLS=maybe\nMAX_BULK_OPS=0\nARCHIVE_PREFIX=/x\nS3_ENDPOINT=ftp://h")
	f.Add("DR_SECRET_ARN=arn:aws:secretsmanager:us-east-1:1:secret:d\nARCHIVE_BUCKET=b\nNAMESPACE_MAP=bar.foo=baz.foo,x\nLOG_LEVEL=loud")
	f.Fuzz(func(t *testing.T, s string) {
		env := map[string]string{}
		for _, line := range strings.Split(s, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				env[k] = v
			}
		}
		_, err := LoadApply(func(k string) string { return env[k] })
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), ":") {
			t.Fatalf("error names no variable: %v", err)
		}
		if pw := uriPassword(strings.TrimSpace(env["DR_URI"])); len(pw) >= 6 && strings.Contains(err.Error(), pw) {
			t.Fatalf("error quotes the DR_URI password %q: %v", pw, err)
		}
	})
}

// uriPassword is the password of a "scheme://user:password@host" string, or "".
func uriPassword(uri string) string {
	_, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return ""
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, ok := strings.Cut(rest[:at], ":")
	if !ok {
		return ""
	}
	if u, err := url.PathUnescape(pw); err == nil {
		return u
	}
	return pw
}
