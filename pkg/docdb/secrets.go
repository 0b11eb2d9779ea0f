package docdb

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// SecretsManagerAPI is the part of the Secrets Manager client that SecretsManager uses. It must be
// safe for concurrent use, as the AWS SDK's clients are.
type SecretsManagerAPI interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// SecretsManager reads secrets from AWS Secrets Manager. It satisfies SecretGetter here and the
// same-shaped interface of pkg/kafka.
type SecretsManager struct {
	API SecretsManagerAPI
}

// SecretString returns the secret's current string value.
func (s *SecretsManager) SecretString(ctx context.Context, id string) (string, error) {
	out, err := s.API.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(id)})
	if err != nil {
		return "", fmt.Errorf("get secret value: %w", err)
	}
	if out.SecretString == nil {
		return "", errors.New("secret has no string value")
	}
	return *out.SecretString, nil
}

// StaticSecrets is a SecretGetter over a map, for tests and local runs.
type StaticSecrets map[string]string

// SecretString returns the value stored under id.
func (m StaticSecrets) SecretString(_ context.Context, id string) (string, error) {
	v, ok := m[id]
	if !ok {
		return "", fmt.Errorf("no secret %q", id)
	}
	return v, nil
}
