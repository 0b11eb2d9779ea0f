// Package eventsource is a local stand-in for the Amazon MSK event source
// mapping (ESM): it consumes a topic with a sarama consumer group and calls a
// Lambda-style handler with events.KafkaEvent batches built the way the ESM
// builds them.
//
// What it reproduces:
//   - a batch is sent when it holds BatchSize records, when BatchingWindow has
//     passed since its first record, or when its payload nears
//     MaxPayloadBytes, whichever comes first;
//   - records are grouped under "<topic>-<partition>" keys, each list in
//     offset order, keys and values base64, headers as signed byte arrays;
//   - offsets are committed only after the handler returns nil;
//   - a failed batch is retried, the same records from the same offsets,
//     until it succeeds: records are never skipped (the template sets no
//     MaximumRetryAttempts or MaximumRecordAgeInSeconds, -1 each). After
//     WarnAfterAttempts failures every further failure is logged as an error;
//   - BisectBatchOnFunctionError: a failed batch of several records is split
//     in two halves, each handled (and split again) in turn, so the records
//     before a failing one are applied while it is retried; the offsets are
//     committed once the whole batch is through.
//
// Invoker invokes a real bootstrap through internal/lambdarun instead of an in-process handler.
//
// What it does not: parallel pollers, on-failure destinations, finite
// retry/record-age limits (the template never sets them), or LogAppendTime
// timestamps.
package esm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/aws/aws-lambda-go/events"

	"github.com/docdb-dr/docdb-dr/internal/lambdarun"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// Handler is the apply function's signature: it gets one batch and returns
// nil only when every record in it has been handled.
type Handler func(ctx context.Context, ev events.KafkaEvent) error

// Starting positions, named as in the ESM's StartingPosition.
const (
	StartTrimHorizon = "TRIM_HORIZON"
	StartLatest      = "LATEST"
)

// Config describes one event source mapping.
type Config struct {
	Brokers []string // bootstrap brokers (required)
	Topic   string   // topic (required)
	GroupID string   // consumer group; the ESM uses its UUID (required)

	// BatchSize is the most records in one event (default 100, as the ESM).
	BatchSize int
	// BatchingWindow is the longest a batch waits for more records after its
	// first one (default 500ms, as the ESM for Kafka).
	BatchingWindow time.Duration
	// MaxPayloadBytes caps the approximate JSON size of an event (default
	// 6 MiB, Lambda's synchronous invocation limit). A single record larger
	// than this is still sent, alone.
	MaxPayloadBytes int
	// StartingPosition applies when the group has no committed offset:
	// TRIM_HORIZON (default) or LATEST.
	StartingPosition string

	// EventSourceARN is copied into every event (default: a fake MSK ARN).
	EventSourceARN string

	// RetryBackoff is the first wait after a failed invocation (default
	// 100ms); it doubles up to MaxRetryBackoff (default 5s).
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// WarnAfterAttempts is the number of failed attempts of one batch after
	// which each failure is logged at error level as a stuck batch
	// (default 5). Retrying never stops.
	WarnAfterAttempts int
	// HandlerTimeout bounds one invocation, like a Lambda timeout (0: none).
	HandlerTimeout time.Duration
	// BisectBatchOnFunctionError splits a failed batch in two and handles each
	// half in turn (the mapping's setting of that name). Retries stay unlimited.
	BisectBatchOnFunctionError bool

	// Sarama is the client configuration (TLS, SASL, version), normally
	// from kafka.SaramaConfig. Nil means kafka.SaramaConfig with no TLS and
	// no SASL, as the local stack needs. The consumer-group settings this
	// package relies on (manual commit, initial offset, error reporting)
	// are set on a copy.
	Sarama *sarama.Config

	Logger *slog.Logger // default slog.Default()
}

// DefaultEventSourceARN is the ARN put into events when none is configured.
const DefaultEventSourceARN = "arn:aws:kafka:us-east-1:000000000000:cluster/docdbdr-local/00000000-0000-0000-0000-000000000000-1"

func (c Config) withDefaults() Config {
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.BatchingWindow <= 0 {
		c.BatchingWindow = 500 * time.Millisecond
	}
	if c.MaxPayloadBytes <= 0 {
		c.MaxPayloadBytes = 6 << 20
	}
	if c.StartingPosition == "" {
		c.StartingPosition = StartTrimHorizon
	}
	if c.EventSourceARN == "" {
		c.EventSourceARN = DefaultEventSourceARN
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	if c.MaxRetryBackoff <= 0 {
		c.MaxRetryBackoff = 5 * time.Second
	}
	if c.WarnAfterAttempts <= 0 {
		c.WarnAfterAttempts = 5
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("eventsource: Brokers is empty"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("eventsource: Topic is empty"))
	}
	if c.GroupID == "" {
		errs = append(errs, errors.New("eventsource: GroupID is empty"))
	}
	if c.StartingPosition != StartTrimHorizon && c.StartingPosition != StartLatest {
		errs = append(errs, fmt.Errorf("eventsource: StartingPosition %q is neither %s nor %s",
			c.StartingPosition, StartTrimHorizon, StartLatest))
	}
	return errors.Join(errs...)
}

// EventSource is one running (or runnable) event source mapping.
type EventSource struct {
	cfg     Config
	sarama  *sarama.Config
	handler Handler
	log     *slog.Logger
}

// New checks the configuration and returns an EventSource; nothing connects
// until Run.
func New(cfg Config, h Handler) (*EventSource, error) {
	if h == nil {
		return nil, errors.New("eventsource: nil handler")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var sc *sarama.Config
	if cfg.Sarama != nil {
		copied := *cfg.Sarama
		sc = &copied
	} else {
		var err error
		if sc, err = kafka.SaramaConfig(kafka.Settings{Brokers: cfg.Brokers, Topic: cfg.Topic}); err != nil {
			return nil, fmt.Errorf("eventsource: sarama config: %w", err)
		}
		// Local brokers answer at once: a short fetch wait keeps the
		// batching window, not the fetch, in charge of latency.
		sc.Consumer.MaxWaitTime = 100 * time.Millisecond
	}
	// Offsets move only when a batch succeeds: no auto-commit.
	sc.Consumer.Offsets.AutoCommit.Enable = false
	sc.Consumer.Return.Errors = true
	if cfg.StartingPosition == StartLatest {
		sc.Consumer.Offsets.Initial = sarama.OffsetNewest
	} else {
		sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("eventsource: sarama config: %w", err)
	}
	return &EventSource{
		cfg:     cfg,
		sarama:  sc,
		handler: h,
		log:     cfg.Logger.With("component", "eventsource", "topic", cfg.Topic, "group", cfg.GroupID),
	}, nil
}

// Run consumes until ctx is cancelled, then returns nil. It returns an error
// only when the consumer group cannot be created.
func (s *EventSource) Run(ctx context.Context) error {
	group, err := sarama.NewConsumerGroup(s.cfg.Brokers, s.cfg.GroupID, s.sarama)
	if err != nil {
		return fmt.Errorf("eventsource: consumer group: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for err := range group.Errors() {
			s.log.Warn("consumer group error", "err", err)
		}
	})
	defer func() {
		if err := group.Close(); err != nil { // also closes Errors()
			s.log.Warn("closing consumer group", "err", err)
		}
		wg.Wait()
	}()

	gh := &groupHandler{src: s, runCtx: ctx}
	backoff := s.cfg.RetryBackoff
	for ctx.Err() == nil {
		// Consume returns at every rebalance; loop to rejoin.
		err := group.Consume(ctx, []string{s.cfg.Topic}, gh)
		switch {
		case err == nil:
			backoff = s.cfg.RetryBackoff
			continue
		case errors.Is(err, sarama.ErrClosedConsumerGroup) || ctx.Err() != nil:
			return nil
		}
		s.log.Warn("consume failed; rejoining", "err", err, "backoff", backoff)
		if !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, s.cfg.MaxRetryBackoff)
	}
	return nil
}

// bootstrap is the bootstrapServers value of events.
func (s *EventSource) bootstrap() string { return strings.Join(s.cfg.Brokers, ",") }

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Invoker is a Handler that invokes a function through the Runtime API stand-in
// (internal/lambdarun), as the real mapping invokes Lambda: synchronously, the event as JSON,
// a fresh request id per invocation (a retry of the batch is a new invocation). A function error
// (its own, a timeout, a crash) fails the batch, which the mapping retries. done, when set, sees
// every invocation's result.
func Invoker(f *lambdarun.Function, done func(events.KafkaEvent, lambdarun.Result)) Handler {
	return func(ctx context.Context, ev events.KafkaEvent) error {
		payload, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("eventsource: encode the event: %w", err)
		}
		r, err := f.Invoke(ctx, payload)
		if err != nil {
			return err
		}
		if done != nil {
			done(ev, r)
		}
		return r.Error()
	}
}
