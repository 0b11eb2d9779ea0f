// Command apply is the apply Lambda function, triggered by the MSK event source mapping. It only
// wires: pkg/apply.NewFunction reads the configuration (a bad one fails the cold start with every
// problem listed) and owns the DR and S3 clients.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
)

func main() {
	ctx := context.Background()
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	var f *apply.Function
	if err == nil {
		f, err = apply.NewFunction(ctx, apply.Env{Getenv: os.Getenv, AWS: awsCfg})
	}
	if err != nil {
		slog.New(slog.NewJSONHandler(os.Stdout, nil)).Error("apply cannot start", slog.String("error", err.Error()))
		os.Exit(1)
	}
	lambda.StartWithOptions(f.Handle, lambda.WithEnableSIGTERM(f.Close))
}
