package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

func init() {
	register(command{
		name:    "replay-deadletters",
		summary: "re-publish capture's dead letters to Kafka after a fix (dry run unless --apply)",
		run:     runReplayDeadLetters,
	})
}

func runReplayDeadLetters(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("replay-deadletters", stderr)
	scopeID := fs.String("scope", "", "only this scope's dead letters, e.g. bar.foo (default: the WATCH_DB/WATCH_COLLECTIONS scope, or every scope when WATCH_DB is unset)")
	doApply := fs.Bool("apply", false, "publish to Kafka and mark what was published (default: dry run, report only)")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr replay-deadletters [flags]

Lists the change events capture set aside under <ARCHIVE_PREFIX>deadletter/capture/ because it
could not convert or publish them, and tries each again with this version of the code and
KAFKA_MAX_MESSAGE_BYTES: "would-replay" converts now, "still-fails" says why not. With --apply
what converts is published (a collection event once per partition), in cluster-time order, and
marked replayed under deadletter/capture/replayed/ once Kafka acknowledged it all, so that a
second run skips it. A replayed document change reaches DR after that document's later changes:
check the cluster times before applying.

flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	env, err := loadToolEnv(stderr)
	if err != nil {
		return err
	}
	cfg := env.cfg
	if cfg.Archive.Bucket == "" {
		return errors.New("ARCHIVE_BUCKET is required: the dead letters are in the archive bucket")
	}
	sc := *scopeID
	if sc == "" && cfg.WatchDB != "" {
		sc = scope.Scope{DB: cfg.WatchDB, Collections: cfg.WatchCollections}.ID()
	}
	awsCfg, err := env.awsConfig(ctx)
	if err != nil {
		return err
	}
	opts := capture.ReplayOptions{
		Store:           archive.NewS3(archive.NewS3Client(awsCfg, cfg.Archive.S3Endpoint), cfg.Archive.Bucket),
		Prefix:          cfg.Archive.Prefix,
		Scope:           sc,
		MaxMessageBytes: cfg.Kafka.MaxMessageBytes,
		Apply:           *doApply,
	}
	if *doApply {
		if len(cfg.Kafka.Brokers) == 0 {
			return errors.New("KAFKA_BROKERS is required with --apply")
		}
		ks := capture.KafkaSettings(cfg.Kafka)
		ks.Region, ks.Credentials = awsCfg.Region, awsCfg.Credentials
		if ks, err = kafka.ResolveCredentials(ctx, ks, &docdb.SecretsManager{API: secretsmanager.NewFromConfig(awsCfg)}); err != nil {
			return err
		}
		pub, err := kafka.NewPublisher(ctx, ks)
		if err != nil {
			return err
		}
		defer pub.Close(kafka.ConnectTimeout)
		opts.Publisher = pub
	}
	rep, err := capture.Replay(ctx, opts)
	if err != nil {
		return err
	}
	env.log.Info("replay-deadletters", "scope", sc, "apply", *doApply, "deadLetters", len(rep.DeadLetters),
		"replayed", rep.Replayed, "wouldReplay", rep.WouldReplay, "stillFails", rep.StillFails, "alreadyReplayed", rep.Earlier)
	if *asJSON {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteTable(stdout)
}
