package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

func init() {
	register(command{
		name:    "devstack",
		summary: "run the local stack (Mongo primary and DR, Kafka, S3) and print its environment",
		run:     runDevstack,
	})
}

// readyLine ends the export block: a reader of stdout knows every variable
// has been printed once it sees it.
const readyLine = "# docdbdr devstack ready; Ctrl-C or SIGTERM stops it"

// runDevstack starts the stack, prints `export NAME='value'` lines on
// stdout (and into DIR/env.sh with --data), and runs until ctx is
// cancelled.
func runDevstack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("devstack", stderr)
	partitions := fs.Int("partitions", 3, "partitions of the change-event topic")
	wireVersion := fs.Int("wire-version", 7, "maxWireVersion of both Mongo servers (7: DocumentDB 4.0, 13: DocumentDB 5.0)")
	dataDir := fs.String("data", "", "keep the data in `DIR` across restarts: both Mongo servers (saved on a clean stop), Kafka's log and the S3 bucket")
	mongoPrimary := fs.Bool("mongodb-primary", false, "the primary behaves as MongoDB instead of DocumentDB")
	useTLS := fs.Bool("tls", false, "Mongo servers require TLS; the CA file is named by PRIMARY_TLS_CA_FILE/DR_TLS_CA_FILE")
	auth := fs.Bool("auth", false, "Mongo servers require SCRAM auth (user docdbdr, a random password, carried in the URIs)")
	s3Server := fs.String("s3", devstack.S3GoFakeS3, "S3 server: gofakes3 (in process) or versitygw (subprocess)")
	versityBin := fs.String("versitygw", "versitygw", "versitygw executable, for --s3=versitygw")
	logLevel := fs.String("log-level", envOr("LOG_LEVEL", "info"), "debug, info, warn or error (logs go to stderr)")
	watchDB := fs.String("watch-db", "bar", "exported as WATCH_DB, with change streams enabled for it on the primary, so that docdbdr run, status and verify work from the env file as it is (\"\": neither)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: docdbdr devstack [flags]\n\nStarts the local stack on 127.0.0.1 and prints its endpoints as shell exports.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *partitions < 1 {
		fmt.Fprintln(stderr, "--partitions must be at least 1")
		return errUsage
	}
	if *s3Server != devstack.S3GoFakeS3 && *s3Server != devstack.S3VersityGW {
		fmt.Fprintf(stderr, "--s3 must be %s or %s\n", devstack.S3GoFakeS3, devstack.S3VersityGW)
		return errUsage
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}

	opts := devstack.Options{
		DataDir:          *dataDir,
		Partitions:       *partitions,
		WireVersion:      *wireVersion,
		PrimaryIsMongoDB: *mongoPrimary,
		TLS:              *useTLS,
		S3:               *s3Server,
		VersityGWBinary:  *versityBin,
		Logger:           log,
	}
	if *auth {
		opts.Username = "docdbdr"
		if opts.Password, err = randomPassword(); err != nil {
			return err
		}
	}

	st, err := devstack.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer st.Close()

	env := st.Env()
	if *watchDB != "" {
		if err := enableStreams(ctx, st, *watchDB); err != nil {
			return err
		}
		env = append(env, "WATCH_DB="+*watchDB)
	}
	exports := exportLines(env)
	if *dataDir != "" {
		// 0600: with --auth the URIs carry the password.
		envFile := filepath.Join(*dataDir, "env.sh")
		if err := os.WriteFile(envFile, []byte(exports), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", envFile, err)
		}
		log.Info("environment written", "file", envFile)
	}
	if _, err := fmt.Fprint(stdout, exports+readyLine+"\n"); err != nil {
		return fmt.Errorf("print environment: %w", err)
	}

	<-ctx.Done()
	log.Info("stopping devstack")
	return st.Close()
}

// enableStreams enables change streams for database db on the stack's primary (modifyChangeStreams,
// as an operator does once on DocumentDB before the first capture).
func enableStreams(ctx context.Context, st *devstack.Stack, db string) error {
	s := docdb.Settings{URI: st.PrimaryURI, TLS: docdb.TLSDisabled}
	if st.CAFile != "" {
		s.TLS, s.TLSCAFile = docdb.TLSRequired, st.CAFile
	}
	client, err := docdb.Connect(ctx, s, nil)
	if err != nil {
		return fmt.Errorf("connect to the devstack primary: %w", err)
	}
	defer disconnect(client)
	return docdb.EnableChangeStreams(ctx, client, scope.Scope{DB: db})
}

// exportLines renders NAME=value pairs as `export NAME='value'` lines,
// single-quoted so URIs with & and ? survive the shell.
func exportLines(env []string) string {
	var b strings.Builder
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "export %s=%s\n", name, shellQuote(value))
	}
	return b.String()
}

// shellQuote single-quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// randomPassword is 16 random bytes, hex.
func randomPassword() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", errors.Join(errors.New("random password"), err)
	}
	return hex.EncodeToString(b), nil
}

// envOr is the environment variable's value, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
