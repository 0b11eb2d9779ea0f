package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/IBM/sarama"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/promote"
)

func init() {
	register(command{
		name:    "promote",
		summary: "failover: make DR the copy applications switch to (intercepted versions moved aside; dry run unless --apply)",
		run:     runPromote,
	})
}

func runPromote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("promote", stderr)
	doApply := fs.Bool("apply", false, "fence, wait for apply to drain the topic, and move (default: dry run, report only)")
	drain := fs.Duration("drain-timeout", 5*time.Minute, "with --apply, how long to wait for apply to reach the topic's end")
	sideDB := fs.String("side-db", "", "database receiving the intercepted versions (default <DR_STATE_DB>_intercepted)")
	lostAt := fs.String("primary-lost-at", "", "RFC 3339 time the primary was lost, if known: reports the RPO up to it")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr promote [flags]

Failover to DR (docs/failover.md). Reads only DR (DR_*), the topic (KAFKA_*) and apply's ledger in
DR_STATE_DB; the primary may be gone. Reports the applied frontier against the topic's end and the
RPO. With --apply: writes a fence in DR_STATE_DB, waits for apply to drain the topic, then moves
every intercepted version (documents deleted in the primary and kept by DR, and the side
collections of drops and renames) into the side database with its archive reference, so that the
live collections hold the primary's state at the last replicated event. Safe to run again: a
complete run changes nothing, an interrupted one is finished.

flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var lost time.Time
	if *lostAt != "" {
		t, err := time.Parse(time.RFC3339, *lostAt)
		if err != nil {
			fmt.Fprintf(stderr, "--primary-lost-at: %v\n", err)
			return errUsage
		}
		lost = t
	}
	env, err := loadToolEnv(stderr)
	if err != nil {
		return err
	}
	cfg := env.cfg
	if len(cfg.Kafka.Brokers) == 0 || cfg.Kafka.Topic == "" {
		return errors.New("KAFKA_BROKERS and KAFKA_TOPIC are required: promote checks the applied frontier against the topic")
	}
	var nsmap apply.NamespaceMap
	if spec := os.Getenv("NAMESPACE_MAP"); spec != "" {
		if nsmap, err = apply.ParseNamespaceMap(spec); err != nil {
			return fmt.Errorf("NAMESPACE_MAP: %w", err)
		}
	}
	dr, err := env.connect(ctx, "DR", cfg.DR)
	if err != nil {
		return err
	}
	defer disconnect(dr)
	topic, closeTopic, err := env.promoteTopic(ctx)
	if err != nil {
		return err
	}
	defer closeTopic()

	rep, err := promote.Run(ctx, promote.Options{
		DR: dr, StateDB: cfg.DRStateDB, SideDB: *sideDB, NamespaceMap: nsmap, Topic: topic,
		Apply: *doApply, DrainTimeout: *drain, PrimaryLostAt: lost, Logger: env.log,
	})
	if err != nil {
		if rep.StartedAt.IsZero() {
			return err
		}
		_ = rep.WriteTable(stderr) // what was found before the failure
		return err
	}
	if *asJSON {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteTable(stdout)
}

// promoteTopic is a client of the change-event topic (KAFKA_*), as capture reaches it.
func (e *toolEnv) promoteTopic(ctx context.Context) (promote.Topic, func(), error) {
	ks := capture.KafkaSettings(e.cfg.Kafka)
	if ks.SecretARN != "" || ks.SASL == kafka.SASLIAM {
		awsCfg, err := e.awsConfig(ctx)
		if err != nil {
			return nil, nil, err
		}
		ks.Region, ks.Credentials = awsCfg.Region, awsCfg.Credentials
		if ks, err = kafka.ResolveCredentials(ctx, ks, &docdb.SecretsManager{API: secretsmanager.NewFromConfig(awsCfg)}); err != nil {
			return nil, nil, err
		}
	}
	sc, err := kafka.SaramaConfig(ks)
	if err != nil {
		return nil, nil, err
	}
	sc.Consumer.MaxWaitTime = 50 * time.Millisecond // one record per partition is read
	client, err := sarama.NewClient(ks.Brokers, sc)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to Kafka (%s): %w", ks, err)
	}
	return promote.KafkaTopic{Client: client, Topic: ks.Topic}, func() { _ = client.Close() }, nil
}
