package kafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestSaramaConfig(t *testing.T) {
	tests := []struct {
		name    string
		s       Settings
		wantErr string
		check   func(*sarama.Config) error
	}{
		{"producer guarantees", Settings{Compression: "lz4", MaxMessageBytes: 2000}, "", func(c *sarama.Config) error {
			if !c.Producer.Idempotent || c.Net.MaxOpenRequests != 1 || c.Producer.RequiredAcks != sarama.WaitForAll {
				return errors.New("not idempotent with acks=all and one open request")
			}
			if c.Producer.Compression != sarama.CompressionLZ4 || c.Producer.MaxMessageBytes != 2000 {
				return fmt.Errorf("compression %v max %d", c.Producer.Compression, c.Producer.MaxMessageBytes)
			}
			if c.Net.DialTimeout > 10*time.Second || c.Metadata.Retry.Max > 2 {
				return errors.New("unbounded connection attempts")
			}
			return nil
		}},
		{"tls", Settings{TLS: true}, "", func(c *sarama.Config) error {
			if !c.Net.TLS.Enable || c.Net.SASL.Enable {
				return errors.New("want TLS without SASL")
			}
			return nil
		}},
		{"scram", Settings{SASL: SASLScram, Username: "u", Password: "p", Compression: "zstd"}, "", func(c *sarama.Config) error {
			if c.Net.SASL.Mechanism != sarama.SASLTypeSCRAMSHA512 || c.Net.SASL.SCRAMClientGeneratorFunc == nil {
				return errors.New("SCRAM not configured")
			}
			return nil
		}},
		{"iam", Settings{SASL: SASLIAM, TLS: true, Region: "us-east-1"}, "", func(c *sarama.Config) error {
			if c.Net.SASL.Mechanism != sarama.SASLTypeOAuth || c.Net.SASL.TokenProvider == nil {
				return errors.New("OAUTHBEARER token provider not configured")
			}
			return nil
		}},
		{"scram without credentials", Settings{SASL: SASLScram}, "user name and password", nil},
		{"iam without region", Settings{SASL: SASLIAM, TLS: true}, "region", nil},
		{"unknown sasl", Settings{SASL: "plain"}, "SASL mechanism", nil},
		{"unknown compression", Settings{Compression: "brotli"}, "compression", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := SaramaConfig(tt.s)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.check(c); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestResolveCredentials(t *testing.T) {
	secrets := staticSecrets{"arn:k": `{"username":"u","password":"SecretPW1"}`, "arn:bad": `{"username":"u","password":"SecretPW2"`}
	s, err := ResolveCredentials(context.Background(), Settings{SASL: SASLScram, SecretARN: "arn:k"}, secrets)
	if err != nil || s.Username != "u" || s.Password != "SecretPW1" {
		t.Fatalf("got %+v, %v", s, err)
	}
	_, err = ResolveCredentials(context.Background(), Settings{SASL: SASLScram, SecretARN: "arn:bad"}, secrets)
	if err == nil || strings.Contains(err.Error(), "SecretPW2") {
		t.Fatalf("want an error without the password, got %v", err)
	}
}

type staticSecrets map[string]string

func (m staticSecrets) SecretString(_ context.Context, id string) (string, error) {
	if v, ok := m[id]; ok {
		return v, nil
	}
	return "", fmt.Errorf("no secret %s", id)
}

func TestMessageSizeMatchesProducerLimit(t *testing.T) {
	m := Message{Key: []byte("bar.foo|1"), Value: make([]byte, 1000), Headers: [][2]string{{"docdbdr-format", "1"}}}
	if got, want := m.Size(), m.producerMessage("t").ByteSize(2); got != want {
		t.Errorf("Size() = %d, sarama counts %d", got, want)
	}
}

func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, "changevents")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestPublishAcknowledgesInOrderAndDelivers(t *testing.T) {
	c := newCluster(t)
	p, err := NewPublisher(context.Background(), Settings{Brokers: c.ListenAddrs(), Topic: "changevents", Compression: "lz4"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(5 * time.Second)

	const n = 500
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := p.Begin(64) // smaller than n: Publish must wait for acknowledgements
	for i := 1; i <= n; i++ {
		seq, err := b.Publish(ctx, Message{Key: []byte(fmt.Sprintf("k%d", i%7)), Value: []byte(fmt.Sprint(i)), Headers: [][2]string{{"h", "v"}}})
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Fatalf("seq = %d, want %d", seq, i)
		}
		if acked := b.Acked(); acked > seq || seq-acked > 64 {
			t.Fatalf("acked %d outside the window below %d", acked, seq)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Acked() != n || b.Published() != n {
		t.Fatalf("acked %d published %d, want %d", b.Acked(), b.Published(), n)
	}
	b.End()
	if _, err := b.Publish(ctx, Message{}); !errors.Is(err, ErrBatchEnded) {
		t.Errorf("publish after End: %v", err)
	}

	got := consume(t, c.ListenAddrs(), "changevents", n)
	perKey := map[string][]string{}
	for _, r := range got {
		perKey[string(r.Key)] = append(perKey[string(r.Key)], string(r.Value))
		if len(r.Headers) != 1 || r.Headers[0].Key != "h" {
			t.Fatalf("headers lost: %v", r.Headers)
		}
	}
	// Within one key (one partition), order is publish order.
	for k, vals := range perKey {
		for i := 1; i < len(vals); i++ {
			var a, b int
			fmt.Sscan(vals[i-1], &a)
			fmt.Sscan(vals[i], &b)
			if a >= b {
				t.Fatalf("key %s out of order: %v", k, vals)
			}
		}
	}
}

func TestSCRAMAgainstBroker(t *testing.T) {
	c := newCluster(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "capture", "pw"))
	tests := []struct {
		name, password string
		wantErr        bool
	}{
		{"right password", "pw", false},
		{"wrong password", "nope", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPublisher(context.Background(), Settings{Brokers: c.ListenAddrs(), Topic: "changevents", SASL: SASLScram, Username: "capture", Password: tt.password})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), tt.password) {
				t.Errorf("error contains the password: %v", err)
			}
			if p != nil {
				p.Close(time.Second)
			}
		})
	}
}

func TestUnreachableBrokersFailBounded(t *testing.T) {
	// A listener that accepts and never answers, and a port where nothing listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()

	tests := []struct {
		name  string
		addrs []string
	}{
		{"nothing listens", []string{deadAddr}},
		{"silent broker", []string{ln.Addr().String()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := NewPublisher(context.Background(), Settings{Brokers: tt.addrs, Topic: "changevents"})
			if err == nil {
				t.Fatal("connected to nothing")
			}
			if d := time.Since(start); d > ConnectTimeout+2*time.Second {
				t.Errorf("took %v", d)
			}
			if !strings.Contains(err.Error(), tt.addrs[0]) {
				t.Errorf("error does not name the broker: %v", err)
			}
		})
	}
}

func TestMissingTopic(t *testing.T) {
	c := newCluster(t)
	_, err := NewPublisher(context.Background(), Settings{Brokers: c.ListenAddrs(), Topic: "nope"})
	if err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("want an error naming the topic, got %v", err)
	}
}

func TestBrokerGoneDuringBatchFailsBounded(t *testing.T) {
	c := newCluster(t)
	p, err := NewPublisher(context.Background(), Settings{Brokers: c.ListenAddrs(), Topic: "changevents"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	b := p.Begin(10)
	if _, err := b.Publish(ctx, Message{Key: []byte("a"), Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	start := time.Now()
	var pubErr error
	for i := 0; i < 20 && pubErr == nil; i++ {
		_, pubErr = b.Publish(ctx, Message{Key: []byte("a"), Value: []byte("x")})
	}
	flushErr := b.Flush(ctx)
	if flushErr == nil {
		t.Fatal("flush succeeded without a broker")
	}
	if errors.Is(flushErr, context.DeadlineExceeded) {
		t.Fatalf("the producer never gave up: %v", flushErr)
	}
	if !errors.Is(flushErr, ErrNotAcknowledged) {
		t.Errorf("want ErrNotAcknowledged, got %v", flushErr)
	}
	if b.Acked() != 1 {
		t.Errorf("acked = %d, want 1", b.Acked())
	}
	t.Logf("failed after %v: %v", time.Since(start), flushErr)
}

// consume reads n records from the topic with franz-go (an independent client).
func consume(t testing.TB, addrs []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records: %v", len(out), n, err)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

// TestAckedIsContiguousWhateverTheOrder: partitions acknowledge in any order; Acked only ever
// counts a prefix of messages that are all acknowledged (capture's checkpoint relies on it).
func TestAckedIsContiguousWhateverTheOrder(t *testing.T) {
	const n = 64
	for round := range 20 {
		b := (&Publisher{brokers: []string{"b"}}).Begin(n)
		b.next = n + 1 // n messages published
		order := rand.Perm(n)
		done := make([]bool, n+1)
		for _, i := range order {
			seq := uint64(i + 1)
			b.complete(seq, nil)
			done[seq] = true
			want := uint64(0)
			for want < n && done[want+1] {
				want++
			}
			if got := b.Acked(); got != want {
				t.Fatalf("round %d: after acknowledging %d (order %v), Acked = %d, want %d", round, seq, order, got, want)
			}
		}
	}
}

// TestEnvelopeKeepsHeaders: the one-allocation envelope carries every header, in order, whether
// they fit its inline room (up to 2) or not (a barrier copy has 3), and repeated header strings
// share bytes without changing them.
func TestEnvelopeKeepsHeaders(t *testing.T) {
	for _, hs := range [][][2]string{
		nil,
		{{"docdbdr-format", "1"}},
		{{"docdbdr-format", "1"}, {"docdbdr-op", "insert"}},
		{{"docdbdr-format", "1"}, {"docdbdr-op", "drop"}, {"docdbdr-barrier", "3"}},
	} {
		for range 2 { // the second time, from the shared bytes
			pm := Message{Key: []byte("k"), Value: []byte("v"), Headers: hs}.producerMessage("t")
			if len(pm.Headers) != len(hs) {
				t.Fatalf("%d headers, want %d", len(pm.Headers), len(hs))
			}
			for i, h := range hs {
				if string(pm.Headers[i].Key) != h[0] || string(pm.Headers[i].Value) != h[1] {
					t.Errorf("header %d = %s: %s, want %s: %s", i, pm.Headers[i].Key, pm.Headers[i].Value, h[0], h[1])
				}
			}
		}
	}
}
