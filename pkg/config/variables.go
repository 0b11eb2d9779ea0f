package config

import "slices"

// The programs that read configuration, as named in Variable.Functions.
const (
	FuncCapture = "capture"
	FuncApply   = "apply"
	FuncCLI     = "cli"
)

// Variable is one environment variable: who reads it, its default (the literal text parsed when it
// is unset; empty when there is none) and what it means. docs/configuration.md is the prose form
// of this list; the template test checks that template.yaml sets exactly the variables of each
// function.
type Variable struct {
	Name      string
	Functions []string
	Default   string
	Doc       string
}

var (
	capture    = []string{FuncCapture}
	cli        = []string{FuncCLI}
	apply      = []string{FuncApply}
	captureCLI = []string{FuncCapture, FuncCLI}
	applyCLI   = []string{FuncApply, FuncCLI}
	all        = []string{FuncCapture, FuncApply, FuncCLI}
)

// variables is the registry. Loaders read a variable only through it, so a variable missing here
// cannot be read (see reader.get).
var variables = []Variable{
	// Connections.
	{"PRIMARY_URI", captureCLI, "", "MongoDB URI of the primary (local runs); one of PRIMARY_URI / PRIMARY_SECRET_ARN is required; never logged"},
	{"PRIMARY_SECRET_ARN", captureCLI, "", "Secrets Manager secret of the primary in DocumentDB's JSON form (username, password, host, port)"},
	{"PRIMARY_TLS_CA_FILE", captureCLI, "", "CA bundle for TLS to the primary; global-bundle.pem next to the binary when a secret is used"},
	{"PRIMARY_TLS", captureCLI, "required", "required or disabled (a non-loopback host with TLS disabled is refused unless ALLOW_INSECURE=true)"},
	{"DR_URI", applyCLI, "", "MongoDB URI of the DR cluster (local runs); one of DR_URI / DR_SECRET_ARN is required; never logged"},
	{"DR_SECRET_ARN", applyCLI, "", "Secrets Manager secret of the DR cluster in DocumentDB's JSON form"},
	{"DR_TLS_CA_FILE", applyCLI, "", "CA bundle for TLS to the DR cluster; global-bundle.pem next to the binary when a secret is used"},
	{"DR_TLS", applyCLI, "required", "required or disabled"},
	{"ALLOW_INSECURE", all, "false", "permit *_TLS=disabled against non-loopback hosts"},
	{"KAFKA_BROKERS", captureCLI, "", "comma-separated bootstrap brokers (required)"},
	{"KAFKA_TOPIC", all, "changevents", "topic"},
	{"KAFKA_TLS", captureCLI, "true", "TLS to the brokers"},
	{"KAFKA_SASL", captureCLI, "none", "none, scram-sha-512 or iam"},
	{"KAFKA_SECRET_ARN", captureCLI, "", "Secrets Manager secret {username, password} for SCRAM"},
	{"KAFKA_USERNAME", captureCLI, "", "SCRAM user name for local runs"},
	{"KAFKA_PASSWORD", captureCLI, "", "SCRAM password for local runs; never logged"},
	{"KAFKA_COMPRESSION", captureCLI, "lz4", "none, gzip, snappy, lz4 or zstd"},
	{"KAFKA_MAX_MESSAGE_BYTES", captureCLI, "1000000", "larger events are claim-checked to S3 (also by replay-deadletters)"},
	{"ARCHIVE_BUCKET", all, "", "S3 bucket for the delete archive, dead letters and claim checks (required by both functions)"},
	{"ARCHIVE_PREFIX", all, "docdbdr/", "key prefix in the bucket"},
	{"S3_ENDPOINT", all, "", "custom S3 endpoint (path-style), for the local stack or MinIO"},

	// Capture (the scope and state location are also read by the CLI: bootstrap, reset-checkpoint).
	{"WATCH_DB", captureCLI, "", "database to watch (required by capture)"},
	{"WATCH_COLLECTIONS", captureCLI, "", "comma-separated collections; empty watches the whole database"},
	{"STATE_DB", captureCLI, "docdbdr", "database of the state collection (on the primary)"},
	{"STATE_COLLECTION", captureCLI, "checkpoints", "state collection"},
	{"MAX_EVENTS", capture, "100000", "events per invocation"},
	{"MAX_BYTES", capture, "67108864", "bytes per invocation"},
	{"CHECKPOINT_EVERY", capture, "1000", "checkpoint after this many acknowledged events"},
	{"MAX_AWAIT", capture, "1s", "maxAwaitTimeMS of each change stream getMore"},
	{"IDLE_TIMEOUT", capture, "3s", "stop after this long without an event (unless CONTINUOUS_DRAIN)"},
	{"CONTINUOUS_DRAIN", capture, "0", "keep draining this long (e.g. 50s for a 1-minute schedule)"},
	{"DEADLINE_MARGIN", capture, "10s", "stop this long before the Lambda deadline"},
	{"START_AT", capture, "now", "first run only: now or an RFC 3339 time"},
	{"LEASE_TTL", capture, "30s", "lease lifetime; a heartbeat renews it every LEASE_TTL/3 while the run lives, so a dead capture blocks the scope at most this long; must be more than DEADLINE_MARGIN"},
	{"CHANGE_STREAM_RETENTION", captureCLI, "3h", "the cluster's change_stream_log_retention_duration: capture's lag-fraction metric; the CLI's oldest accepted start position (bootstrap, reset-checkpoint) and status's retention share"},

	// Apply.
	{"INTERCEPT_POLICY", apply, "delete=archive,drop=archive,rename=archive,dropDatabase=archive", "per operation: archive, apply or apply+archive"},
	{"NAMESPACE_MAP", applyCLI, "", "src=dst pairs, e.g. bar.foo=bar_dr.foo,bar=bar_dr; the CLI reads it to find a primary namespace's documents in DR (bootstrap, verify, restore, status): set it as apply has it"},
	{"MAX_BULK_OPS", apply, "1000", "operations per bulk write"},
	{"DR_STATE_DB", applyCLI, "docdbdr", "apply's state database on the DR cluster: the archive ledger and barrier markers; never replicated into"},
	{"ARCHIVE_HISTORY", apply, "off", "on: archive the version each insert, update, replace and delete overwrites under <prefix>history/ (for docdbdr history and restore --as-of); off: deletes only"},
	{"ARCHIVE_EXPIRATION_DAYS", cli, "0", "days after which the bucket's lifecycle deletes archive objects (the template's ArchiveExpirationDays); restore --as-of refuses an older T; 0: never"},

	// Common.
	{"LOG_LEVEL", all, "info", "debug, info, warn or error"},
}

// Variables returns every environment variable the functions and the CLI read.
func Variables() []Variable {
	out := slices.Clone(variables)
	for i := range out {
		out[i].Functions = slices.Clone(out[i].Functions)
	}
	return out
}

// VariablesOf returns the names of the variables that function fn (FuncCapture, FuncApply or
// FuncCLI) reads.
func VariablesOf(fn string) []string {
	var names []string
	for _, v := range variables {
		if slices.Contains(v.Functions, fn) {
			names = append(names, v.Name)
		}
	}
	return names
}

func lookup(name string) (Variable, bool) {
	for _, v := range variables {
		if v.Name == name {
			return v, true
		}
	}
	return Variable{}, false
}
