// Package config reads the environment variables of the capture and apply functions and of the
// docdbdr CLI. Every problem is reported at once, each naming its variable, so that a cold start
// fails with one message listing everything to fix. docs/configuration.md documents the variables;
// Variables returns them as data.
package config

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/docdb"
)

// Kafka is how the brokers are reached and how capture produces (KAFKA_*). pkg/kafka builds its
// producer settings from it; config does not import pkg/kafka, so that apply, which reads no Kafka
// variable but the topic, does not link a Kafka client.
type Kafka struct {
	Brokers         []string
	Topic           string
	TLS             bool
	SASL            string // SASLNone, SASLScram or SASLIAM
	Username        string // SCRAM, local runs
	Password        string // SCRAM, local runs; never logged
	SecretARN       string // SCRAM credentials {username, password} in Secrets Manager
	Compression     string // one of Compressions
	MaxMessageBytes int    // larger messages are claim-checked by capture
}

// SASL mechanisms (KAFKA_SASL).
const (
	SASLNone  = "none"
	SASLScram = "scram-sha-512"
	SASLIAM   = "iam"
)

// Compressions are the codecs KAFKA_COMPRESSION accepts.
var Compressions = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// String describes the settings without secrets, for logs.
func (k Kafka) String() string {
	return fmt.Sprintf("brokers %v topic %s tls=%t sasl=%s", k.Brokers, k.Topic, k.TLS, k.SASL)
}

// Archive locates the S3 archive.
type Archive struct {
	Bucket     string
	Prefix     string // key prefix, e.g. "docdbdr/"
	S3Endpoint string // custom endpoint (path-style); empty for AWS
}

// Capture is the capture function's configuration.
type Capture struct {
	Primary docdb.Settings
	Kafka   Kafka
	Archive Archive

	WatchDB          string
	WatchCollections []string // empty: the whole database
	StateDB          string
	StateCollection  string

	MaxEvents       int
	MaxBytes        int64
	CheckpointEvery int
	MaxAwait        time.Duration
	IdleTimeout     time.Duration
	ContinuousDrain time.Duration
	DeadlineMargin  time.Duration
	StartAt         time.Time // zero: now
	LeaseTTL        time.Duration

	ChangeStreamRetention time.Duration
	LogLevel              slog.Level
}

// Apply is the apply function's configuration.
type Apply struct {
	DR              docdb.Settings
	Archive         Archive
	Topic           string
	InterceptPolicy string // parsed by pkg/apply
	NamespaceMap    string // parsed by pkg/apply
	MaxBulkOps      int
	StateDB         string // DR_STATE_DB: apply's state database on DR (archive ledger, barrier markers)
	// History is ARCHIVE_HISTORY=on: every document change's before-image is archived too.
	History  bool
	LogLevel slog.Level
}

// CLI is what the docdbdr CLI can read from the environment. Nothing is required here: each
// command checks for what it needs (flags may supply the rest), but every value given is checked.
type CLI struct {
	Primary          docdb.Settings // zero when neither PRIMARY_URI nor PRIMARY_SECRET_ARN is set
	DR               docdb.Settings // zero when neither DR_URI nor DR_SECRET_ARN is set
	Kafka            Kafka          // Brokers empty when KAFKA_BROKERS is unset
	Archive          Archive
	WatchDB          string
	WatchCollections []string
	StateDB          string
	StateCollection  string
	DRStateDB        string // DR_STATE_DB, as apply reads it
	// ChangeStreamRetention is CHANGE_STREAM_RETENTION: no start position older than this is
	// accepted, and status reports the share of it the lag uses.
	ChangeStreamRetention time.Duration
	NamespaceMap          string // NAMESPACE_MAP, as apply reads it (parsed by pkg/apply)
	// ArchiveExpiration is ARCHIVE_EXPIRATION_DAYS: archive objects older than this are deleted
	// by the bucket's lifecycle (0: never).
	ArchiveExpiration time.Duration
	LogLevel          slog.Level
}

// LoadCapture reads the capture function's variables through getenv (os.Getenv in production).
func LoadCapture(getenv func(string) string) (Capture, error) {
	r := &reader{fn: FuncCapture, getenv: getenv}
	c := Capture{
		Primary:          r.cluster("PRIMARY", true),
		Kafka:            r.kafka(true),
		Archive:          r.archive(true),
		WatchDB:          r.required("WATCH_DB"),
		WatchCollections: r.list("WATCH_COLLECTIONS"),
		StateDB:          r.str("STATE_DB"),
		StateCollection:  r.str("STATE_COLLECTION"),
		MaxEvents:        int(r.integer("MAX_EVENTS", 1, 100_000_000)),
		MaxBytes:         r.integer("MAX_BYTES", 1, 1<<40),
		CheckpointEvery:  int(r.integer("CHECKPOINT_EVERY", 1, 100_000_000)),
		MaxAwait:         r.duration("MAX_AWAIT", time.Millisecond, 10*time.Minute),
		IdleTimeout:      r.duration("IDLE_TIMEOUT", time.Millisecond, 15*time.Minute),
		ContinuousDrain:  r.duration("CONTINUOUS_DRAIN", 0, 15*time.Minute),
		DeadlineMargin:   r.duration("DEADLINE_MARGIN", 0, 15*time.Minute),
		StartAt:          r.startAt(),
		LeaseTTL:         r.duration("LEASE_TTL", time.Second, 24*time.Hour),

		ChangeStreamRetention: r.duration("CHANGE_STREAM_RETENTION", time.Minute, 7*24*time.Hour),
		LogLevel:              r.logLevel(),
	}
	c.Kafka.Compression = r.oneOf("KAFKA_COMPRESSION", Compressions...)
	c.Kafka.MaxMessageBytes = int(r.integer("KAFKA_MAX_MESSAGE_BYTES", 1024, 100<<20))
	r.scope(c.WatchDB, c.WatchCollections, c.StateDB, c.StateCollection)
	if c.LeaseTTL > 0 && c.LeaseTTL <= c.DeadlineMargin {
		// A run renews its lease every LEASE_TTL/3 and stops DEADLINE_MARGIN/2 before an expiry
		// that was not renewed (pkg/capture): with LEASE_TTL > DEADLINE_MARGIN that stop is at
		// least LEASE_TTL/6 after the next renewal is due, so a live run is never stopped by it.
		r.fail("LEASE_TTL", "%s must be more than DEADLINE_MARGIN (%s): a run stops DEADLINE_MARGIN/2 before its lease expires unrenewed, and renews it every LEASE_TTL/3", c.LeaseTTL, c.DeadlineMargin)
	}
	return c, r.err()
}

// LoadApply reads the apply function's variables through getenv.
func LoadApply(getenv func(string) string) (Apply, error) {
	r := &reader{fn: FuncApply, getenv: getenv}
	a := Apply{
		DR:              r.cluster("DR", true),
		Archive:         r.archive(true),
		Topic:           r.required("KAFKA_TOPIC"),
		InterceptPolicy: r.pairs("INTERCEPT_POLICY", true),
		NamespaceMap:    r.pairs("NAMESPACE_MAP", false),
		MaxBulkOps:      int(r.integer("MAX_BULK_OPS", 1, 100_000)),
		StateDB:         r.str("DR_STATE_DB"),
		History:         r.oneOf("ARCHIVE_HISTORY", "off", "on") == "on",
		LogLevel:        r.logLevel(),
	}
	r.dbName("DR_STATE_DB", a.StateDB)
	return a, r.err()
}

// LoadCLI reads the CLI's variables through getenv. Unset connections come back zero.
func LoadCLI(getenv func(string) string) (CLI, error) {
	r := &reader{fn: FuncCLI, getenv: getenv}
	c := CLI{
		Primary:          r.cluster("PRIMARY", false),
		DR:               r.cluster("DR", false),
		Kafka:            r.kafka(false),
		Archive:          r.archive(false),
		WatchDB:          r.str("WATCH_DB"),
		WatchCollections: r.list("WATCH_COLLECTIONS"),
		StateDB:          r.str("STATE_DB"),
		StateCollection:  r.str("STATE_COLLECTION"),
		DRStateDB:        r.str("DR_STATE_DB"),

		ChangeStreamRetention: r.duration("CHANGE_STREAM_RETENTION", time.Minute, 7*24*time.Hour),
		NamespaceMap:          r.pairs("NAMESPACE_MAP", false),
		LogLevel:              r.logLevel(),
	}
	c.ArchiveExpiration = time.Duration(r.integer("ARCHIVE_EXPIRATION_DAYS", 0, 100_000)) * 24 * time.Hour
	// How capture produces: replay-deadletters publishes capture's dead letters the same way.
	c.Kafka.Compression = r.oneOf("KAFKA_COMPRESSION", Compressions...)
	c.Kafka.MaxMessageBytes = int(r.integer("KAFKA_MAX_MESSAGE_BYTES", 1024, 100<<20))
	r.dbName("DR_STATE_DB", c.DRStateDB)
	if c.WatchDB == "" && len(c.WatchCollections) > 0 {
		r.fail("WATCH_DB", "required when WATCH_COLLECTIONS is set")
	}
	r.scope(c.WatchDB, c.WatchCollections, c.StateDB, c.StateCollection)
	return c, r.err()
}

// cluster reads <prefix>_URI, _SECRET_ARN, _TLS_CA_FILE, _TLS and ALLOW_INSECURE.
func (r *reader) cluster(prefix string, required bool) docdb.Settings {
	s := docdb.Settings{
		URI:           r.str(prefix + "_URI"),
		SecretARN:     r.str(prefix + "_SECRET_ARN"),
		TLSCAFile:     r.str(prefix + "_TLS_CA_FILE"),
		TLS:           r.oneOf(prefix+"_TLS", docdb.TLSRequired, docdb.TLSDisabled),
		AllowInsecure: r.boolean("ALLOW_INSECURE"),
	}
	switch {
	case s.URI != "" && s.SecretARN != "":
		r.fail(prefix+"_URI", "set either %s_URI or %s_SECRET_ARN, not both", prefix, prefix)
	case s.URI == "" && s.SecretARN == "" && required:
		r.fail(prefix+"_URI", "one of %s_URI or %s_SECRET_ARN is required", prefix, prefix)
	}
	if s.URI != "" && !strings.HasPrefix(s.URI, "mongodb://") && !strings.HasPrefix(s.URI, "mongodb+srv://") {
		// Never quote the URI itself: it may hold a password.
		r.fail(prefix+"_URI", "%s does not start with mongodb:// or mongodb+srv://", quote(docdb.Redact(s.URI)))
	}
	if s.SecretARN != "" && !strings.HasPrefix(s.SecretARN, "arn:") {
		r.fail(prefix+"_SECRET_ARN", "%s is not an ARN", quote(s.SecretARN))
	}
	return s
}

// kafka reads the broker connection variables (not the producer tuning ones).
func (r *reader) kafka(required bool) Kafka {
	brokers := r.list("KAFKA_BROKERS")
	if required && len(brokers) == 0 && r.get("KAFKA_BROKERS") == "" {
		r.fail("KAFKA_BROKERS", "required")
	}
	r.hostPorts("KAFKA_BROKERS", brokers)
	s := Kafka{
		Brokers:   brokers,
		Topic:     r.required("KAFKA_TOPIC"),
		TLS:       r.boolean("KAFKA_TLS"),
		SASL:      r.oneOf("KAFKA_SASL", SASLNone, SASLScram, SASLIAM),
		SecretARN: r.str("KAFKA_SECRET_ARN"),
		Username:  r.str("KAFKA_USERNAME"),
		Password:  r.str("KAFKA_PASSWORD"),
	}
	inline := s.Username != "" || s.Password != ""
	switch s.SASL {
	case SASLScram:
		switch {
		case s.SecretARN != "" && inline:
			r.fail("KAFKA_SECRET_ARN", "set either KAFKA_SECRET_ARN or KAFKA_USERNAME/KAFKA_PASSWORD, not both")
		case s.SecretARN == "" && (s.Username == "" || s.Password == ""):
			r.fail("KAFKA_SECRET_ARN", "KAFKA_SASL=scram-sha-512 needs KAFKA_SECRET_ARN, or both KAFKA_USERNAME and KAFKA_PASSWORD")
		}
	case SASLIAM, SASLNone:
		if s.SecretARN != "" || inline {
			r.fail("KAFKA_SASL", "credentials are set (KAFKA_SECRET_ARN or KAFKA_USERNAME/KAFKA_PASSWORD) but KAFKA_SASL=%s does not use them: set KAFKA_SASL=scram-sha-512 or remove them", s.SASL)
		}
		if s.SASL == SASLIAM && !s.TLS {
			r.fail("KAFKA_TLS", "MSK IAM authentication requires KAFKA_TLS=true")
		}
	}
	if s.SecretARN != "" && !strings.HasPrefix(s.SecretARN, "arn:") {
		r.fail("KAFKA_SECRET_ARN", "%s is not an ARN", quote(s.SecretARN))
	}
	return s
}

func (r *reader) archive(required bool) Archive {
	a := Archive{Prefix: r.str("ARCHIVE_PREFIX"), S3Endpoint: r.str("S3_ENDPOINT")}
	if required {
		a.Bucket = r.required("ARCHIVE_BUCKET")
	} else {
		a.Bucket = r.str("ARCHIVE_BUCKET")
	}
	if strings.HasPrefix(a.Prefix, "/") {
		r.fail("ARCHIVE_PREFIX", "%s must not start with /", quote(a.Prefix))
	}
	if a.S3Endpoint != "" && !strings.HasPrefix(a.S3Endpoint, "http://") && !strings.HasPrefix(a.S3Endpoint, "https://") {
		r.fail("S3_ENDPOINT", "%s is not an http(s) URL", quote(a.S3Endpoint))
	}
	return a
}

func (r *reader) scope(db string, colls []string, stateDB, stateColl string) {
	r.dbName("WATCH_DB", db)
	for _, c := range colls {
		r.collName("WATCH_COLLECTIONS", c)
	}
	r.dbName("STATE_DB", stateDB)
	r.collName("STATE_COLLECTION", stateColl)
	if db != "" && db == stateDB && (len(colls) == 0 || contains(colls, stateColl)) {
		r.fail("STATE_DB", "the state collection %s.%s is inside the watched scope: every checkpoint would be captured as a change", stateDB, stateColl)
	}
}

func (r *reader) startAt() time.Time {
	s := r.get("START_AT")
	if strings.EqualFold(s, "now") {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		r.fail("START_AT", "%s is neither now nor an RFC 3339 time like 2024-05-01T12:00:00Z", quote(s))
		return time.Time{}
	}
	if t.Unix() <= 0 || t.Unix() > 1<<32-1 {
		r.fail("START_AT", "%s is outside the range of a cluster time", quote(s))
		return time.Time{}
	}
	return t.UTC()
}

// pairs lightly checks a comma-separated list of key=value pairs (pkg/apply parses the meaning).
func (r *reader) pairs(name string, required bool) string {
	s := r.get(name)
	if s == "" {
		if required {
			r.fail(name, "required")
		}
		return ""
	}
	for _, p := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || strings.TrimSpace(k) == "" || strings.TrimSpace(v) == "" {
			r.fail(name, "%s is not key=value", quote(p))
		}
	}
	return s
}
