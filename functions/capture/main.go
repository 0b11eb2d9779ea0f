// Command capture is the capture Lambda function, run by an EventBridge schedule (or invoked by
// hand with overrides such as {"maxEvents": 10}). It only wires: pkg/capture.NewFunction reads the
// configuration (a bad one fails the cold start with every problem listed) and owns the clients.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/docdb-dr/docdb-dr/pkg/capture"
)

func main() {
	ctx := context.Background()
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	var f *capture.Function
	if err == nil {
		f, err = capture.NewFunction(ctx, capture.Env{Getenv: os.Getenv, AWS: awsCfg})
	}
	if err != nil {
		slog.New(slog.NewJSONHandler(os.Stdout, nil)).Error("capture cannot start", slog.String("error", err.Error()))
		os.Exit(1)
	}
	lambda.StartWithOptions(f.Handle, lambda.WithEnableSIGTERM(f.Close))
}
