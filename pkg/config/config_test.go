package config

import (
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/docdb"
)

// env builds a getenv from a base map and overrides ("" deletes).
func env(base map[string]string, overrides ...string) func(string) string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for i := 0; i+1 < len(overrides); i += 2 {
		if overrides[i+1] == "" {
			delete(m, overrides[i])
		} else {
			m[overrides[i]] = overrides[i+1]
		}
	}
	return func(k string) string { return m[k] }
}

var minimalCapture = map[string]string{
	"PRIMARY_URI":    "mongodb://127.0.0.1:27017/",
	"KAFKA_BROKERS":  "b-1.msk:9094,b-2.msk:9094",
	"ARCHIVE_BUCKET": "dr-archive",
	"WATCH_DB":       "bar",
}

func TestLoadCaptureDefaults(t *testing.T) {
	c, err := LoadCapture(env(minimalCapture))
	if err != nil {
		t.Fatal(err)
	}
	want := Capture{
		Primary: docdb.Settings{URI: "mongodb://127.0.0.1:27017/", TLS: "required"},
		Kafka: Kafka{Brokers: []string{"b-1.msk:9094", "b-2.msk:9094"}, Topic: "changevents", TLS: true,
			SASL: "none", Compression: "lz4", MaxMessageBytes: 1000000},
		Archive:               Archive{Bucket: "dr-archive", Prefix: "docdbdr/"},
		WatchDB:               "bar",
		StateDB:               "docdbdr",
		StateCollection:       "checkpoints",
		MaxEvents:             100000,
		MaxBytes:              67108864,
		CheckpointEvery:       1000,
		MaxAwait:              time.Second,
		IdleTimeout:           3 * time.Second,
		DeadlineMargin:        10 * time.Second,
		LeaseTTL:              30 * time.Second,
		ChangeStreamRetention: 3 * time.Hour,
		LogLevel:              slog.LevelInfo,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestLoadCaptureValues(t *testing.T) {
	c, err := LoadCapture(env(minimalCapture,
		"WATCH_COLLECTIONS", " foo, x ",
		"START_AT", "2024-05-01T12:00:00+02:00",
		"CONTINUOUS_DRAIN", "50s",
		"KAFKA_SASL", "scram-sha-512", "KAFKA_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:1:secret:k",
		"KAFKA_COMPRESSION", "zstd",
		"PRIMARY_URI", "", "PRIMARY_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:1:secret:p",
		"LOG_LEVEL", "DEBUG"))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"collections", strings.Join(c.WatchCollections, "|"), "foo|x"},
		{"start at", c.StartAt, time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)},
		{"continuous drain", c.ContinuousDrain, 50 * time.Second},
		{"sasl", c.Kafka.SASL, "scram-sha-512"},
		{"compression", c.Kafka.Compression, "zstd"},
		{"secret", c.Primary.SecretARN, "arn:aws:secretsmanager:us-east-1:1:secret:p"},
		{"log level", c.LogLevel, slog.LevelDebug},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadCaptureReportsEveryProblem(t *testing.T) {
	tests := []struct {
		name      string
		getenv    func(string) string
		wantNames []string // each must appear, prefixed "NAME:"
	}{
		{"nothing set", env(nil), []string{"PRIMARY_URI", "KAFKA_BROKERS", "ARCHIVE_BUCKET", "WATCH_DB"}},
		{"bad numbers and durations", env(minimalCapture, "MAX_EVENTS", "many", "MAX_BYTES", "0", "MAX_AWAIT", "1", "IDLE_TIMEOUT", "-1s", "LEASE_TTL", "forever"),
			[]string{"MAX_EVENTS", "MAX_BYTES", "MAX_AWAIT", "IDLE_TIMEOUT", "LEASE_TTL"}},
		{"bad enums", env(minimalCapture, "PRIMARY_TLS", "on", "KAFKA_SASL", "plain", "KAFKA_COMPRESSION", "brotli", "KAFKA_TLS", "yes please", "LOG_LEVEL", "loud"),
			[]string{"PRIMARY_TLS", "KAFKA_SASL", "KAFKA_COMPRESSION", "KAFKA_TLS", "LOG_LEVEL"}},
		{"both primary sources", env(minimalCapture, "PRIMARY_SECRET_ARN", "arn:x"), []string{"PRIMARY_URI"}},
		{"bad brokers", env(minimalCapture, "KAFKA_BROKERS", "b-1:9094,nohost,b-3:x"), []string{"KAFKA_BROKERS"}},
		{"scram without credentials", env(minimalCapture, "KAFKA_SASL", "scram-sha-512"), []string{"KAFKA_SECRET_ARN"}},
		{"iam without tls", env(minimalCapture, "KAFKA_SASL", "iam", "KAFKA_TLS", "false"), []string{"KAFKA_TLS"}},
		{"credentials without sasl", env(minimalCapture, "KAFKA_USERNAME", "u", "KAFKA_PASSWORD", "p"), []string{"KAFKA_SASL"}},
		{"bad names", env(minimalCapture, "WATCH_DB", "a.b", "WATCH_COLLECTIONS", "foo,$x,foo"), []string{"WATCH_DB", "WATCH_COLLECTIONS"}},
		{"state inside scope", env(minimalCapture, "STATE_DB", "bar"), []string{"STATE_DB"}},
		{"bad start", env(minimalCapture, "START_AT", "yesterday"), []string{"START_AT"}},
		{"not a mongo uri", env(minimalCapture, "PRIMARY_URI", "postgres://u:pw@h"), []string{"PRIMARY_URI"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadCapture(tt.getenv)
			if err == nil {
				t.Fatal("no error")
			}
			for _, n := range tt.wantNames {
				if !strings.Contains(err.Error(), n+":") {
					t.Errorf("error does not name %s:\n%v", n, err)
				}
			}
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) || len(joined.Unwrap()) < len(tt.wantNames) {
				t.Errorf("want at least %d joined errors, got %v", len(tt.wantNames), err)
			}
		})
	}
}

func TestErrorsNeverQuoteSecrets(t *testing.T) {
	_, err := LoadCapture(env(minimalCapture,
		"PRIMARY_URI", "postgres://admin:TopSecret99@h",
		"KAFKA_PASSWORD", "KafkaSecret99", "KAFKA_USERNAME", "u"))
	if err == nil {
		t.Fatal("no error")
	}
	for _, secret := range []string{"TopSecret99", "KafkaSecret99"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error quotes %s: %v", secret, err)
		}
	}
}

func TestLoadApply(t *testing.T) {
	base := map[string]string{"DR_URI": "mongodb://dr:27017", "ARCHIVE_BUCKET": "b"}
	a, err := LoadApply(env(base))
	if err != nil {
		t.Fatal(err)
	}
	if a.Topic != "changevents" || a.MaxBulkOps != 1000 || a.DR.TLS != "required" ||
		a.InterceptPolicy != "delete=archive,drop=archive,rename=archive,dropDatabase=archive" || a.Archive.Prefix != "docdbdr/" ||
		a.StateDB != "docdbdr" || a.History {
		t.Errorf("defaults: %+v", a)
	}
	if a, err := LoadApply(env(base, "ARCHIVE_HISTORY", "on")); err != nil || !a.History {
		t.Errorf("ARCHIVE_HISTORY=on: %+v, %v", a, err)
	}
	if a, err := LoadApply(env(base, "DR_STATE_DB", "dr_state")); err != nil || a.StateDB != "dr_state" {
		t.Errorf("DR_STATE_DB: %+v, %v", a, err)
	}
	_, err = LoadApply(env(base, "DR_URI", "", "NAMESPACE_MAP", "bar.foo=bar_dr.foo,oops", "MAX_BULK_OPS", "0", "ARCHIVE_BUCKET", "", "DR_STATE_DB", "no.dots",
		"ARCHIVE_HISTORY", "yes"))
	for _, n := range []string{"DR_URI", "NAMESPACE_MAP", "MAX_BULK_OPS", "ARCHIVE_BUCKET", "DR_STATE_DB", "ARCHIVE_HISTORY"} {
		if err == nil || !strings.Contains(err.Error(), n+":") {
			t.Errorf("error does not name %s: %v", n, err)
		}
	}
}

func TestLoadCLINothingRequired(t *testing.T) {
	c, err := LoadCLI(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Primary.URI != "" || c.Kafka.Topic != "changevents" || c.StateDB != "docdbdr" || c.DRStateDB != "docdbdr" ||
		c.ArchiveExpiration != 0 || c.ChangeStreamRetention != 3*time.Hour {
		t.Errorf("got %+v", c)
	}
	if c, err := LoadCLI(env(nil, "ARCHIVE_EXPIRATION_DAYS", "30")); err != nil || c.ArchiveExpiration != 30*24*time.Hour {
		t.Errorf("ARCHIVE_EXPIRATION_DAYS=30: %v, %v", c.ArchiveExpiration, err)
	}
	if _, err := LoadCLI(env(nil, "ARCHIVE_EXPIRATION_DAYS", "-1")); err == nil || !strings.Contains(err.Error(), "ARCHIVE_EXPIRATION_DAYS:") {
		t.Errorf("ARCHIVE_EXPIRATION_DAYS=-1: %v", err)
	}
	if _, err := LoadCLI(env(nil, "WATCH_COLLECTIONS", "foo")); err == nil || !strings.Contains(err.Error(), "WATCH_DB:") {
		t.Errorf("collections without a database: %v", err)
	}
}

// TestLoadersReadExactlyTheRegistry checks the registry is the truth for the template test: each
// loader reads every variable registered for it and nothing else.
func TestLoadersReadExactlyTheRegistry(t *testing.T) {
	loaders := map[string]func(func(string) string) error{
		FuncCapture: func(g func(string) string) error { _, err := LoadCapture(g); return err },
		FuncApply:   func(g func(string) string) error { _, err := LoadApply(g); return err },
		FuncCLI:     func(g func(string) string) error { _, err := LoadCLI(g); return err },
	}
	for fn, load := range loaders {
		t.Run(fn, func(t *testing.T) {
			read := map[string]bool{}
			_ = load(func(k string) string { read[k] = true; return "" })
			want := VariablesOf(fn)
			got := make([]string, 0, len(read))
			for k := range read {
				got = append(got, k)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s reads %v\nregistry lists %v", fn, got, want)
			}
		})
	}
}

// FuzzLoadCapture feeds arbitrary environments ("NAME=value" lines) to LoadCapture: it must never
// panic, and a failure must name a variable.
func FuzzLoadCapture(f *testing.F) {
	f.Add("PRIMARY_URI=mongodb://h\nKAFKA_BROKERS=b:9092\nARCHIVE_BUCKET=b\nWATCH_DB=bar")
	f.Fuzz(func(t *testing.T, s string) {
		m := map[string]string{}
		for _, line := range strings.Split(s, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				m[k] = v
			}
		}
		_, err := LoadCapture(func(k string) string { return m[k] })
		if err != nil && !strings.Contains(err.Error(), ":") {
			t.Fatalf("error names no variable: %v", err)
		}
	})
}

func TestLeaseMustOutlastTheDeadlineMargin(t *testing.T) {
	env := map[string]string{"PRIMARY_URI": "mongodb://127.0.0.1:27017/", "PRIMARY_TLS": "disabled", "KAFKA_BROKERS": "127.0.0.1:9092",
		"ARCHIVE_BUCKET": "b", "WATCH_DB": "bar", "LEASE_TTL": "10s", "DEADLINE_MARGIN": "10s"}
	_, err := LoadCapture(func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), "LEASE_TTL") || !strings.Contains(err.Error(), "DEADLINE_MARGIN") {
		t.Fatalf("err = %v, want LEASE_TTL refused for DEADLINE_MARGIN", err)
	}
	env["LEASE_TTL"] = "11s"
	if _, err := LoadCapture(func(k string) string { return env[k] }); err != nil {
		t.Fatalf("LEASE_TTL 11s with DEADLINE_MARGIN 10s refused: %v", err)
	}
}
