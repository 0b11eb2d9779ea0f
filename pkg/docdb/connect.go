// Package docdb builds a *mongo.Client for Amazon DocumentDB (or any MongoDB replica set) from a
// URI or a Secrets Manager secret, with TLS and with credentials that never reach a log line or an
// error message.
package docdb

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/readpref"
	"go.mongodb.org/mongo-driver/x/mongo/driver/connstring"
)

// TLS modes.
const (
	TLSRequired = "required" // TLS, verified against the CA bundle (or the system roots)
	TLSDisabled = "disabled" // plain TCP: loopback only unless AllowInsecure
)

// DefaultCAFileName is the RDS CA bundle looked up next to the binary when a secret is used and
// no CA file is configured (the Lambda package ships it there).
const DefaultCAFileName = "global-bundle.pem"

// Settings says how to reach one cluster. Exactly one of URI and SecretARN is set.
type Settings struct {
	URI           string // mongodb:// or mongodb+srv:// URI; may hold credentials (never logged)
	SecretARN     string // Secrets Manager secret {username, password, host, port}
	TLSCAFile     string // PEM CA bundle; empty means DefaultCAFileName next to the binary for a secret, else system roots
	TLS           string // TLSRequired or TLSDisabled; empty means TLSRequired
	AllowInsecure bool   // permit TLS disabled to a non-loopback host
}

// String describes the settings without secrets, for logs.
func (s Settings) String() string {
	src := Redact(s.URI)
	if s.SecretARN != "" {
		src = "secret " + s.SecretARN
	}
	return fmt.Sprintf("%s (tls %s)", src, s.tlsMode())
}

func (s Settings) tlsMode() string {
	if s.TLS == "" {
		return TLSRequired
	}
	return s.TLS
}

// SecretGetter fetches a secret's string value. *SecretsManager implements it over AWS; tests use a
// map. Connect calls it from its caller's goroutine (Lazy's, under Lazy's lock); one getter may
// serve several clients at once, so it must be safe for concurrent use (both implementations here
// are).
type SecretGetter interface {
	SecretString(ctx context.Context, id string) (string, error)
}

// Secret is DocumentDB's Secrets Manager secret format (other fields, e.g. "engine", are ignored).
type Secret struct {
	Username string          `json:"username"`
	Password string          `json:"password"`
	Host     string          `json:"host"`
	Port     json.RawMessage `json:"port"` // a number in RDS-managed secrets, sometimes a string
}

// ConnectTimeout bounds server selection and the first ping, so an unreachable cluster fails an
// invocation quickly instead of hanging until the Lambda timeout.
const ConnectTimeout = 10 * time.Second

// Connect builds a client from s, checks the cluster answers a ping, and returns it. Retryable
// writes are off because DocumentDB does not support them. Errors name the cluster by its redacted
// URI or secret ARN and never contain a password.
func Connect(ctx context.Context, s Settings, secrets SecretGetter) (*mongo.Client, error) {
	opts, hosts, hide, err := clientOptions(ctx, s, secrets)
	if err != nil {
		return nil, err
	}
	if err := checkTLSPolicy(s, hosts); err != nil {
		return nil, err
	}
	client, err := mongo.Connect(ctx, opts)
	if err != nil {
		return nil, scrub(fmt.Errorf("connect to %s: %w", s, err), hide...)
	}
	pingCtx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	if err := client.Ping(pingCtx, readpref.Primary()); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, scrub(fmt.Errorf("ping %s: %w", s, err), hide...)
	}
	return client, nil
}

// clientOptions turns settings into driver options. It returns the hosts (for the TLS policy) and
// the strings that must be scrubbed from errors.
func clientOptions(ctx context.Context, s Settings, secrets SecretGetter) (*options.ClientOptions, []string, []string, error) {
	switch s.tlsMode() {
	case TLSRequired, TLSDisabled:
	default:
		return nil, nil, nil, fmt.Errorf("TLS mode %q: want %q or %q", s.TLS, TLSRequired, TLSDisabled)
	}
	opts := options.Client().
		SetRetryWrites(false). // DocumentDB does not support retryable writes
		SetServerSelectionTimeout(ConnectTimeout).
		SetConnectTimeout(ConnectTimeout).
		SetAppName("docdb-dr")

	var hosts, hide []string
	caFile := s.TLSCAFile
	switch {
	case s.URI != "" && s.SecretARN != "":
		return nil, nil, nil, errors.New("both a URI and a secret ARN are set: use one")
	case s.URI != "":
		hide = uriSecrets(s.URI)
		if strings.HasPrefix(strings.ToLower(s.URI), connstring.SchemeMongoDBSRV+"://") {
			// Parsing resolves the SRV record; an SRV name is never loopback, so the TLS policy
			// decides first, without waiting for DNS.
			if err := checkTLSPolicy(s, []string{"srv record of " + Redact(s.URI)}); err != nil {
				return nil, nil, nil, err
			}
		}
		cs, err := connstring.ParseAndValidate(s.URI)
		if err != nil {
			return nil, nil, nil, scrub(fmt.Errorf("parse URI %s: %w", Redact(s.URI), err), hide...)
		}
		opts.ApplyURI(s.URI)
		hosts = cs.Hosts
		if cs.Scheme == connstring.SchemeMongoDBSRV {
			hosts = []string{"srv:" + cs.Hosts[0]} // resolved later; never loopback
		}
	case s.SecretARN != "":
		if secrets == nil {
			return nil, nil, nil, fmt.Errorf("secret %s: no Secrets Manager client", s.SecretARN)
		}
		sec, err := loadSecret(ctx, secrets, s.SecretARN)
		if err != nil {
			return nil, nil, nil, err
		}
		hide = []string{sec.Password}
		host := net.JoinHostPort(sec.Host, sec.port())
		hosts = []string{host}
		// DocumentDB's cluster endpoint always names the primary and the cluster's replica set is
		// always rs0: the driver discovers the members from it.
		opts.SetHosts(hosts).SetReplicaSet("rs0").SetAuth(options.Credential{
			Username: sec.Username,
			Password: sec.Password,
		})
		if caFile == "" {
			caFile = defaultCAFile()
		}
	default:
		return nil, nil, nil, errors.New("neither a URI nor a secret ARN is set")
	}

	if s.tlsMode() == TLSDisabled {
		opts.SetTLSConfig(nil)
		return opts, hosts, hide, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadCA(caFile)
		if err != nil {
			return nil, nil, nil, err
		}
		cfg.RootCAs = pool
	}
	opts.SetTLSConfig(cfg)
	return opts, hosts, hide, nil
}

func loadSecret(ctx context.Context, secrets SecretGetter, arn string) (Secret, error) {
	str, err := secrets.SecretString(ctx, arn)
	if err != nil {
		return Secret{}, fmt.Errorf("read secret %s: %w", arn, err)
	}
	var sec Secret
	if err := json.Unmarshal([]byte(str), &sec); err != nil {
		// The JSON error can quote the input: never wrap it.
		return Secret{}, fmt.Errorf("secret %s is not DocumentDB's JSON form {username, password, host, port}", arn)
	}
	var missing []string
	for name, v := range map[string]string{"username": sec.Username, "password": sec.Password, "host": sec.Host} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return Secret{}, fmt.Errorf("secret %s lacks %s", arn, strings.Join(slices.Sorted(slices.Values(missing)), ", "))
	}
	if _, err := strconv.ParseUint(sec.port(), 10, 16); err != nil {
		return Secret{}, fmt.Errorf("secret %s: port %q is not a TCP port", arn, sec.port())
	}
	return sec, nil
}

// port returns the secret's port as text, 27017 when absent.
func (s Secret) port() string {
	p := strings.Trim(string(s.Port), `"`)
	if p == "" || p == "null" {
		return "27017"
	}
	return p
}

func defaultCAFile() string {
	exe, err := os.Executable()
	if err != nil {
		return DefaultCAFileName
	}
	return filepath.Join(filepath.Dir(exe), DefaultCAFileName)
}

func loadCA(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read TLS CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("TLS CA bundle %s holds no PEM certificate", file)
	}
	return pool, nil
}

// checkTLSPolicy refuses plain TCP to anything but loopback, unless explicitly allowed: the
// connection carries credentials and every document of the scope.
func checkTLSPolicy(s Settings, hosts []string) error {
	if s.tlsMode() != TLSDisabled || s.AllowInsecure {
		return nil
	}
	for _, h := range hosts {
		if !IsLoopback(h) {
			return fmt.Errorf("TLS is disabled but host %s is not loopback: enable TLS, or set ALLOW_INSECURE=true if this network is trusted", h)
		}
	}
	return nil
}

// IsLoopback reports whether a "host" or "host:port" names this machine: localhost or a loopback
// IP. Names are not resolved.
func IsLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
