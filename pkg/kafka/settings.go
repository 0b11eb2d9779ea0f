// Package kafka connects docdb-dr to Kafka (Amazon MSK): the sarama configuration shared by
// producers and consumers (TLS, SASL/SCRAM, MSK IAM) and the Publisher that capture uses to send
// change events and learn, in order, which of them Kafka acknowledged.
package kafka

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// SASL mechanisms.
const (
	SASLNone  = "none"
	SASLScram = "scram-sha-512"
	SASLIAM   = "iam"
)

// Compression codecs.
var Compressions = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// Settings says how to reach the brokers and how to produce.
type Settings struct {
	Brokers         []string
	Topic           string
	TLS             bool
	SASL            string // SASLNone, SASLScram or SASLIAM
	Username        string // SCRAM, local runs
	Password        string // SCRAM, local runs; never logged
	SecretARN       string // SCRAM credentials {username, password} in Secrets Manager
	Compression     string // one of Compressions
	MaxMessageBytes int    // larger messages are claim-checked by capture
	Region          string // AWS region for MSK IAM (from the AWS SDK configuration)

	// Credentials sign MSK IAM tokens; nil uses the default credential chain. Not configured by
	// environment variables: the function passes its AWS SDK configuration's provider.
	Credentials aws.CredentialsProvider
}

// String describes the settings without secrets, for logs.
func (s Settings) String() string {
	return fmt.Sprintf("brokers %v topic %s tls=%t sasl=%s", s.Brokers, s.Topic, s.TLS, s.SASL)
}
