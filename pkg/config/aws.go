package config

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// LoadAWS builds the AWS SDK configuration (S3, Secrets Manager, MSK IAM) for runs outside
// Lambda, from the same getenv as the rest of the configuration: AWS_REGION, and static keys when
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are given there (the local stack's dummies);
// otherwise the SDK's default chain. Inside Lambda the functions use the default chain directly.
func LoadAWS(ctx context.Context, getenv func(string) string) (aws.Config, error) {
	var loads []func(*awsconfig.LoadOptions) error
	if r := getenv("AWS_REGION"); r != "" {
		loads = append(loads, awsconfig.WithRegion(r))
	}
	if id, secret := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"); id != "" && secret != "" {
		loads = append(loads, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(id, secret, getenv("AWS_SESSION_TOKEN"))))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, loads...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("AWS configuration: %w", err)
	}
	return cfg, nil
}
