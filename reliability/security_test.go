package reliability

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/config"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// secretScan collects everything the functions said — log lines, EMF lines, error strings,
// summaries — and checks that none of it holds a secret.
type secretScan struct {
	t       *testing.T
	secrets []string // forbidden substrings
	logs    *syncBuffer
	emf     *syncBuffer
	texts   []string // error strings and summaries
}

func newSecretScan(t *testing.T) *secretScan {
	return &secretScan{t: t, logs: &syncBuffer{}, emf: &syncBuffer{}}
}

// forbid adds a secret in every form it could take in a URI or a log line.
func (s *secretScan) forbid(user, password string) {
	s.secrets = append(s.secrets, password, url.QueryEscape(password), url.PathEscape(password),
		url.UserPassword(user, password).String())
}

func (s *secretScan) forbidString(v string) { s.secrets = append(s.secrets, v) }

// note keeps an error's text (nil is ignored) or any value's JSON.
func (s *secretScan) note(v any) {
	switch x := v.(type) {
	case nil:
	case error:
		if x != nil {
			s.texts = append(s.texts, x.Error())
		}
	case string:
		s.texts = append(s.texts, x)
	default:
		b, err := json.Marshal(x)
		if err != nil {
			s.t.Fatal(err)
		}
		s.texts = append(s.texts, string(b))
	}
}

// check fails the test for every secret found, naming where (never printing the secret).
func (s *secretScan) check() (lines int) {
	s.t.Helper()
	sources := map[string]string{"logs": s.logs.String(), "EMF": s.emf.String(), "errors and summaries": strings.Join(s.texts, "\n")}
	for where, text := range sources {
		for i, line := range strings.Split(text, "\n") {
			if line == "" {
				continue
			}
			lines++
			for j, secret := range s.secrets {
				if secret != "" && strings.Contains(line, secret) {
					s.t.Errorf("%s line %d holds forbidden string #%d (a password or a credential-bearing URI)", where, i+1, j)
				}
			}
		}
	}
	return lines
}

func randomSecret(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	// Characters a URI must escape, so that escaped forms are exercised too.
	return "Pw/" + hex.EncodeToString(b) + "@:%+"
}

// TestCredentialsNeverLeak runs capture and apply with SCRAM credentials on both clusters — a
// successful replication, the DR and the primary going down mid-run, a wrong password, an
// unreachable host, a malformed URI — and scans every log line, EMF line, error and summary for
// the passwords and the credential-bearing URIs.
func TestCredentialsNeverLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the embedded stack")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	scan := newSecretScan(t)
	const user = "docdbdr-app"
	password := randomSecret(t)
	scan.forbid(user, password)
	scan.forbidString(devstack.SecretAccessKey) // the AWS secret key the local S3 takes

	// 1. The local stack with SCRAM on both Mongo servers; its own diagnostics are scanned too.
	st, err := devstack.Start(ctx, devstack.Options{Username: user, Password: password, Logger: jsonLogger(scan.logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	scan.forbidString(st.PrimaryURI)
	scan.forbidString(st.DRURI)
	if !strings.Contains(st.PrimaryURI, url.UserPassword(user, password).String()) {
		t.Fatal("the stack's URI does not carry the password: the scan would prove nothing")
	}
	p := startSecurePipeline(t, ctx, scan, st.Env(), nil)
	foo := p.Primary().Database(watchDB).Collection(watchColl)
	for i := range 20 {
		must(t, func() error {
			_, err := foo.InsertOne(ctx, bson.D{{Key: "_id", Value: i}, {Key: "v", Value: i}})
			return err
		})
	}
	must(t, func() error { _, err := foo.DeleteOne(ctx, bson.D{{Key: "_id", Value: 3}}); return err })
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := p.DR().Database(watchDB).Collection(watchColl).CountDocuments(ctx, bson.D{}); err != nil || n != 20 {
		t.Fatalf("DR has %d documents (%v), want 20: the authenticated pipeline did not replicate", n, err)
	}
	p.Stop()

	// 2. Failures at run time, on clusters of our own with the same credentials: DR down while
	// apply writes, then the primary down while capture reads.
	primarySrv := startMongo(t, mongoserver.Options{DocumentDB: true, Username: user, Password: password})
	drSrv := startMongo(t, mongoserver.Options{Username: user, Password: password})
	scan.forbidString(primarySrv.URI())
	scan.forbidString(drSrv.URI())
	q := startSecurePipeline(t, ctx, scan, st.Env(), map[string]string{"PRIMARY_URI": primarySrv.URI(), "DR_URI": drSrv.URI(), "GROUP": "runtime-failures"})
	drSrv.SetUnavailable(true)
	foo = q.Primary().Database(watchDB).Collection(watchColl)
	must(t, func() error { _, err := foo.InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}}); return err })
	sum, err := q.CaptureOnce(ctx, capture.Overrides{})
	scan.note(sum)
	scan.note(err)
	waitForLong(t, "apply to fail with DR down", 30*time.Second, func() bool { return strings.Contains(scan.logs.String(), "apply batch failed") })
	primarySrv.SetUnavailable(true)
	downCtx, downCancel := context.WithTimeout(ctx, 3*time.Second) // not the driver's 10 s server selection
	sum, err = q.CaptureOnce(downCtx, capture.Overrides{})
	downCancel()
	if err == nil {
		t.Fatal("capture succeeded with the primary down")
	}
	scan.note(sum)
	scan.note(err)
	primarySrv.SetUnavailable(false)
	drSrv.SetUnavailable(false)
	q.Stop()

	// 3. Connection failures: a wrong password, an unreachable host, a malformed URI, and a
	// pipeline that cannot start.
	wrong := "Wrong/" + password
	scan.forbid(user, wrong)
	badURI := strings.Replace(primarySrv.URI(), url.UserPassword(user, password).String(), url.UserPassword(user, wrong).String(), 1)
	if badURI == primarySrv.URI() {
		t.Fatal("could not build the wrong-password URI")
	}
	_, err = docdb.Connect(ctx, docdb.Settings{URI: badURI, TLS: docdb.TLSDisabled}, nil)
	if err == nil {
		t.Fatal("connected with a wrong password")
	}
	scan.note(err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()
	shortCtx, shortCancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = docdb.Connect(shortCtx, docdb.Settings{URI: "mongodb://" + url.UserPassword(user, password).String() + "@" + closedAddr + "/?directConnection=true", TLS: docdb.TLSDisabled}, nil)
	shortCancel()
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	scan.note(err)
	_, err = config.LoadCapture(localrun.Getenv(map[string]string{"PRIMARY_URI": "http://" + url.UserPassword(user, password).String() + "@db.example.com", "WATCH_DB": watchDB}, st.Env(), nil))
	if err == nil {
		t.Fatal("a http:// URI was accepted")
	}
	scan.note(err)
	_, err = localrun.New(ctx, localrun.Options{Getenv: localrun.Getenv(map[string]string{"PRIMARY_URI": badURI, "WATCH_DB": watchDB}, st.Env(), nil), Logger: jsonLogger(scan.logs), Metrics: scan.emf})
	if err == nil {
		t.Fatal("a pipeline with a wrong password started")
	}
	scan.note(err)
	for _, s := range []any{docdb.Settings{URI: st.PrimaryURI}.String(), kafka.Settings{Brokers: st.KafkaBrokers, Username: user, Password: password, SASL: kafka.SASLScram}.String()} {
		scan.note(s)
	}

	lines := scan.check()
	// The scan saw what it should have: the redacted URIs, the failures, the metrics.
	logs := scan.logs.String()
	for _, want := range []string{user + ":xxxxx@", "apply batch failed", `"msg":"capture summary"`} {
		if !strings.Contains(logs+strings.Join(scan.texts, "\n"), want) {
			t.Errorf("nothing scanned contains %q: the scan did not see what it should", want)
		}
	}
	if !strings.Contains(scan.emf.String(), "DocdbDR") {
		t.Error("no EMF line was scanned")
	}
	t.Logf("scanned %d lines (logs, EMF, errors, summaries) for %d forbidden strings: none found", lines, len(scan.secrets))
}

// startSecurePipeline starts the local runner of both functions on env (with overrides), logging
// and emitting metrics into the scan, and pins the checkpoint.
func startSecurePipeline(t *testing.T, ctx context.Context, scan *secretScan, env []string, overrides map[string]string) *localrun.Pipeline {
	t.Helper()
	o := map[string]string{
		"WATCH_DB": watchDB, "WATCH_COLLECTIONS": watchColl,
		"IDLE_TIMEOUT": "200ms", "MAX_AWAIT": "50ms", "DEADLINE_MARGIN": "1s",
	}
	group, applyTimeout := "security", time.Duration(0)
	for k, v := range overrides {
		if k == "GROUP" {
			// Not a variable: the event source mapping's consumer group, and a 3 s apply
			// timeout so that a cluster that is down fails an invocation quickly.
			group, applyTimeout = group+"-"+v, 3*time.Second
			continue
		}
		o[k] = v
	}
	p, err := localrun.New(ctx, localrun.Options{
		Getenv:          localrun.Getenv(o, env, nil),
		ManualCapture:   true,
		Logger:          jsonLogger(scan.logs),
		Metrics:         scan.emf,
		BatchingWindow:  50 * time.Millisecond,
		RetryBackoff:    50 * time.Millisecond,
		MaxRetryBackoff: 200 * time.Millisecond,
		GroupID:         group,
		ApplyTimeout:    applyTimeout,
		OnApply:         func(r localrun.ApplyResult) { scan.noteAsync(r.Err) },
		OnCapture:       func(r localrun.CaptureResult) { scan.noteAsync(r.Err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := docdb.EnableChangeStreams(ctx, p.Primary(), p.Scope()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CaptureOnce(ctx, capture.Overrides{}); err != nil {
		t.Fatal(err)
	}
	p.Start(ctx)
	return p
}

// noteAsync records an error from another goroutine.
func (s *secretScan) noteAsync(err error) {
	if err != nil {
		_, _ = s.logs.Write([]byte("async error: " + err.Error() + "\n"))
	}
}

// TestTLSRequiredForRemoteClusters checks pkg/docdb's rule: plain TCP only to loopback, unless
// ALLOW_INSECURE; TLS is the default; and TLS is verified against the configured CA.
func TestTLSRequiredForRemoteClusters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const pw = "Hunter2-tls-secret"

	// The default, with no *_TLS variable, is TLS required.
	cfg, err := config.LoadCapture(func(name string) string {
		return map[string]string{"PRIMARY_URI": "mongodb://u:" + pw + "@db.example.com:27017/", "KAFKA_BROKERS": "b:9092",
			"ARCHIVE_BUCKET": "b", "WATCH_DB": watchDB}[name]
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Primary.String(); !strings.Contains(s, "tls required") || strings.Contains(s, pw) {
		t.Errorf("default settings describe themselves as %q, want TLS required and no password", s)
	}

	// Plain TCP to anything but loopback is refused before any connection is attempted.
	for _, uri := range []string{
		"mongodb://u:" + pw + "@db.example.com:27017/",
		"mongodb://u:" + pw + "@10.1.2.3:27017/?replicaSet=rs0",
	} { // mongodb+srv:// URIs: see TestSRVURIRefusedBeforeDNS in bugs_test.go
		start := time.Now()
		_, err := docdb.Connect(ctx, docdb.Settings{URI: uri, TLS: docdb.TLSDisabled}, nil)
		switch {
		case err == nil:
			t.Errorf("%s: plain TCP to a remote host was allowed", docdb.Redact(uri))
		case !strings.Contains(err.Error(), "TLS is disabled") || !strings.Contains(err.Error(), "ALLOW_INSECURE"):
			t.Errorf("%s: error %q does not say TLS is required and how to override", docdb.Redact(uri), err)
		case strings.Contains(err.Error(), pw):
			t.Errorf("%s: error holds the password", docdb.Redact(uri))
		case time.Since(start) > time.Second:
			t.Errorf("%s: refusing took %v: it tried to connect first", docdb.Redact(uri), time.Since(start))
		}
	}

	// A real non-loopback address of this machine, if it has one: refused without
	// ALLOW_INSECURE, accepted with it.
	if ip := nonLoopbackIP(); ip != "" {
		srv := mongoserver.New(mongoserver.Options{})
		if err := srv.Start(net.JoinHostPort(ip, "0")); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		if _, err := docdb.Connect(ctx, docdb.Settings{URI: srv.URI(), TLS: docdb.TLSDisabled}, nil); err == nil || !strings.Contains(err.Error(), "not loopback") {
			t.Errorf("plain TCP to %s without ALLOW_INSECURE: %v, want the TLS policy error", ip, err)
		}
		c, err := docdb.Connect(ctx, docdb.Settings{URI: srv.URI(), TLS: docdb.TLSDisabled, AllowInsecure: true}, nil)
		if err != nil {
			t.Errorf("plain TCP to %s with ALLOW_INSECURE: %v", ip, err)
		} else {
			_ = c.Disconnect(ctx)
		}
	} else {
		t.Log("no non-loopback address on this machine: the ALLOW_INSECURE case is covered by the refusals above only")
	}

	// TLS on the wire: the stack's servers speak TLS with a throwaway CA.
	st, err := devstack.Start(ctx, devstack.Options{TLS: true, Username: "u", Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := docdb.Connect(ctx, docdb.Settings{URI: st.PrimaryURI, TLS: docdb.TLSRequired, TLSCAFile: st.CAFile}, nil)
	if err != nil {
		t.Fatalf("TLS with the stack's CA: %v", err)
	}
	_ = c.Disconnect(ctx)
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		t.Cleanup(cancel)
		return c
	}
	// Without the CA (system roots), the server's certificate is not trusted.
	if _, err := docdb.Connect(short(), docdb.Settings{URI: st.PrimaryURI, TLS: docdb.TLSRequired}, nil); err == nil {
		t.Error("TLS connected to a server whose CA is not trusted")
	} else if strings.Contains(err.Error(), pw) {
		t.Error("the certificate error holds the password")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Logf("untrusted certificate error: %v", err)
	}
	// Plain TCP to a TLS server does not get through either.
	plainURI := strings.Replace(st.PrimaryURI, "tls=true", "tls=false", 1)
	if _, err := docdb.Connect(short(), docdb.Settings{URI: plainURI, TLS: docdb.TLSDisabled}, nil); err == nil {
		t.Error("plain TCP connected to a TLS server")
	}
}

// nonLoopbackIP returns an IPv4 address of this machine that is not loopback, or "".
func nonLoopbackIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

// TestGovulncheckScript checks the script that runs govulncheck: it parses, and when the
// vulnerability database cannot be reached it says SKIPPED and exits 0 (instead of failing
// the build on a network problem, or silently passing). The real run is `make vulncheck`-style:
// sh reliability/govulncheck.sh.
func TestGovulncheckScript(t *testing.T) {
	if out, err := exec.Command("sh", "-n", "govulncheck.sh").CombinedOutput(); err != nil {
		t.Fatalf("govulncheck.sh does not parse: %v\n%s", err, out)
	}
	cmd := exec.Command("sh", "govulncheck.sh")
	cmd.Env = append(cmd.Environ(), "GOVULNDB=https://vulndb.invalid")
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("with an unreachable database the script exited %d, want 0:\n%s", ee.ExitCode(), out)
		}
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "SKIPPED: vulnerability database unreachable") {
		t.Fatalf("output does not say it skipped:\n%s", out)
	}
}
