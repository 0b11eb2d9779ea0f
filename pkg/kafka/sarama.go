package kafka

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/aws/aws-msk-iam-sasl-signer-go/signer"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/xdg-go/scram"
)

// Timeouts that bound how long an unreachable or silent broker can stall a client. With them,
// creating a producer against brokers that do not answer fails in about
// DialTimeout × brokers × (MetadataRetries+1), not after sarama's 30-second defaults.
const (
	DialTimeout     = 5 * time.Second
	IOTimeout       = 10 * time.Second
	MetadataRetries = 1
)

// SecretGetter fetches a secret's string value (docdb.SecretsManager implements it).
// ResolveCredentials calls it once, from its caller's goroutine; a getter shared by several
// clients must be safe for concurrent use, as docdb.SecretsManager is.
type SecretGetter interface {
	SecretString(ctx context.Context, id string) (string, error)
}

// ResolveCredentials returns s with Username and Password read from s.SecretARN (a Secrets
// Manager secret {username, password}) when SCRAM is used with a secret. Errors never contain the
// password.
func ResolveCredentials(ctx context.Context, s Settings, secrets SecretGetter) (Settings, error) {
	if s.SASL != SASLScram || s.SecretARN == "" {
		return s, nil
	}
	if secrets == nil {
		return s, fmt.Errorf("kafka secret %s: no Secrets Manager client", s.SecretARN)
	}
	str, err := secrets.SecretString(ctx, s.SecretARN)
	if err != nil {
		return s, fmt.Errorf("read kafka secret %s: %w", s.SecretARN, err)
	}
	var cred struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := json.Unmarshal([]byte(str), &cred); err != nil || cred.Username == "" || cred.Password == "" {
		// Never wrap the JSON error: it can quote the secret.
		return s, fmt.Errorf("kafka secret %s is not {\"username\": ..., \"password\": ...}", s.SecretARN)
	}
	s.Username, s.Password = cred.Username, cred.Password
	return s, nil
}

// SaramaConfig builds the client configuration shared by the capture producer and by consumers
// (the local event source mapping): TLS, SASL (SCRAM-SHA-512 or MSK IAM), bounded network
// timeouts, and an idempotent, acks=all, batched, compressed producer. For SCRAM with a secret,
// call ResolveCredentials first.
func SaramaConfig(s Settings) (*sarama.Config, error) {
	c := sarama.NewConfig()
	c.ClientID = "docdbdr"
	c.Net.DialTimeout = DialTimeout
	c.Net.ReadTimeout = IOTimeout
	c.Net.WriteTimeout = IOTimeout
	c.Metadata.Retry.Max = MetadataRetries
	c.Metadata.Retry.Backoff = 250 * time.Millisecond
	c.Metadata.AllowAutoTopicCreation = false

	if s.TLS {
		c.Net.TLS.Enable = true
		c.Net.TLS.Config = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	switch s.SASL {
	case "", SASLNone:
	case SASLScram:
		if s.Username == "" || s.Password == "" {
			return nil, errors.New("kafka SASL scram-sha-512 needs a user name and password (or a secret resolved with ResolveCredentials)")
		}
		c.Net.SASL.Enable = true
		c.Net.SASL.Handshake = true
		c.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		c.Net.SASL.User = s.Username
		c.Net.SASL.Password = s.Password
		c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA512} }
	case SASLIAM:
		if s.Region == "" {
			return nil, errors.New("kafka SASL iam needs the AWS region")
		}
		c.Net.SASL.Enable = true
		c.Net.SASL.Handshake = true
		c.Net.SASL.Mechanism = sarama.SASLTypeOAuth
		c.Net.SASL.TokenProvider = &iamTokenProvider{region: s.Region, creds: s.Credentials}
	default:
		return nil, fmt.Errorf("kafka SASL mechanism %q: want none, scram-sha-512 or iam", s.SASL)
	}

	// The producer: every message is written to all in-sync replicas before it is acknowledged,
	// retries cannot duplicate or reorder (idempotence needs one request in flight per broker),
	// and messages are batched for throughput.
	p := &c.Producer
	p.Idempotent = true
	p.RequiredAcks = sarama.WaitForAll
	c.Net.MaxOpenRequests = 1
	p.Retry.Max = 5
	p.Retry.Backoff = 200 * time.Millisecond
	p.Return.Successes = true
	p.Return.Errors = true
	p.Partitioner = newPartitioner // the same key always lands on the same partition
	p.Flush.Bytes = 1 << 20
	p.Flush.Frequency = 5 * time.Millisecond
	p.Timeout = IOTimeout
	if s.MaxMessageBytes > 0 {
		p.MaxMessageBytes = s.MaxMessageBytes
	}
	if err := p.Compression.UnmarshalText([]byte(compressionName(s.Compression))); err != nil {
		return nil, fmt.Errorf("kafka compression %q: %w", s.Compression, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("kafka client configuration: %w", err)
	}
	return c, nil
}

func compressionName(s string) string {
	if s == "" {
		return "none"
	}
	return strings.ToLower(s)
}

// scramClient adapts xdg-go/scram to sarama's SCRAMClient.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (c *scramClient) Begin(user, password, authzID string) error {
	client, err := c.hash.NewClient(user, password, authzID)
	if err != nil {
		return fmt.Errorf("scram client: %w", err)
	}
	c.conv = client.NewConversation()
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) { return c.conv.Step(challenge) }
func (c *scramClient) Done() bool                            { return c.conv.Done() }

// iamTokenProvider signs MSK IAM authentication tokens and reuses one until shortly before it
// expires.
type iamTokenProvider struct {
	region string
	creds  aws.CredentialsProvider // nil: the default credential chain

	mu      sync.Mutex
	token   string
	expires time.Time
}

// Token implements sarama.AccessTokenProvider. Signing is bounded by a timeout so a credentials
// problem surfaces as an error rather than a hang.
func (p *iamTokenProvider) Token() (*sarama.AccessToken, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.token != "" && time.Until(p.expires) > time.Minute {
		return &sarama.AccessToken{Token: p.token}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), IOTimeout)
	defer cancel()
	var (
		token string
		expMs int64
		err   error
	)
	if p.creds != nil {
		token, expMs, err = signer.GenerateAuthTokenFromCredentialsProvider(ctx, p.region, p.creds)
	} else {
		token, expMs, err = signer.GenerateAuthToken(ctx, p.region)
	}
	if err != nil {
		return nil, fmt.Errorf("sign MSK IAM token in %s: %w", p.region, err)
	}
	p.token, p.expires = token, time.UnixMilli(expMs)
	return &sarama.AccessToken{Token: token}, nil
}

// partitioner puts a pinned message (Message.Pinned: a collection event's copy for one
// partition) on its partition and hashes every other key exactly as sarama's hash partitioner
// does, by delegating to it: changeevent.Partition, which apply uses to know which partition owns
// a document, mirrors that hash. The producer calls it from one goroutine per topic.
type partitioner struct{ hash sarama.Partitioner }

func newPartitioner(topic string) sarama.Partitioner {
	return partitioner{hash: sarama.NewHashPartitioner(topic)}
}

func (p partitioner) Partition(m *sarama.ProducerMessage, n int32) (int32, error) {
	f, ok := m.Metadata.(*flight)
	if !ok || !f.pinned {
		return p.hash.Partition(m, n)
	}
	if f.partition < 0 || f.partition >= n {
		return -1, fmt.Errorf("kafka: message pinned to partition %d, but topic %s has %d partitions", f.partition, m.Topic, n)
	}
	return f.partition, nil
}

// RequiresConsistency: a key must always map to the same partition, so the producer uses every
// partition, writable or not, as the hash partitioner asks.
func (p partitioner) RequiresConsistency() bool { return true }
