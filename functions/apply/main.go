// Command apply is the apply Lambda function, triggered by the MSK event source mapping. It only
// wires things together: configuration from the environment, a DR client and an S3 client built
// once per container, and pkg/apply's handler for every batch.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/config"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	h, err := setup(context.Background(), os.Getenv, log)
	if err != nil {
		log.Error("apply cannot start", slog.String("error", err.Error()))
		os.Exit(1)
	}
	lambda.Start(func(ctx context.Context, ev events.KafkaEvent) error {
		_, err := h.Handle(ctx, ev)
		return err
	})
}

// setup reads the configuration and builds the clients and the handler, once per container.
func setup(ctx context.Context, getenv func(string) string, log *slog.Logger) (*apply.Handler, error) {
	cfg, err := config.LoadApply(getenv)
	opts, oerr := apply.OptionsFromConfig(cfg)
	if err := errors.Join(err, oerr); err != nil {
		return nil, err // every problem at once, each naming its variable
	}
	log = slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))

	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	client, err := docdb.Connect(ctx, cfg.DR, &docdb.SecretsManager{API: secretsmanager.NewFromConfig(awsCfg)})
	if err != nil {
		return nil, fmt.Errorf("connect to DR: %w", err)
	}
	s3Client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Archive.S3Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Archive.S3Endpoint)
			o.UsePathStyle = true
		}
	})
	log.Info("apply configured", slog.String("dr", cfg.DR.String()), slog.String("bucket", cfg.Archive.Bucket),
		slog.String("prefix", cfg.Archive.Prefix), slog.String("topic", cfg.Topic),
		slog.String("policy", opts.Policy.String()), slog.String("namespaceMap", opts.NamespaceMap.String()), slog.Int("maxBulkOps", cfg.MaxBulkOps))
	opts.Logger = log
	return apply.New(apply.NewMongoWriter(client), archive.NewS3(s3Client, cfg.Archive.Bucket), opts)
}
