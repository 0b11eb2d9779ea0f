package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// ErrNotAcknowledged marks a message Kafka did not acknowledge (after the producer's own retries).
// The Publisher that returned it should be closed and rebuilt before the next batch.
var ErrNotAcknowledged = errors.New("kafka did not acknowledge a message")

// ErrBatchEnded is returned by Publish after End.
var ErrBatchEnded = errors.New("kafka batch already ended")

// Message is one record to publish to the Publisher's topic.
type Message struct {
	Key     []byte
	Value   []byte
	Headers [][2]string
	// Partition is where the message goes when Pinned (capture pins each copy of a collection
	// event to one partition). Otherwise the key decides, with sarama's hash partitioner
	// (changeevent.Partition computes the same partition).
	Partition int32
	Pinned    bool
}

// recordOverhead and headerOverhead are the most a v2 record adds to its key, value and header
// bytes (sarama's ProducerMessage.ByteSize for record batches).
const (
	recordOverhead = 5*binary.MaxVarintLen32 + binary.MaxVarintLen64 + 1
	headerOverhead = 2 * binary.MaxVarintLen32
)

// Size is the record's size as the producer counts it against MaxMessageBytes: key, value,
// headers and the record overhead.
func (m Message) Size() int {
	n := recordOverhead + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h[0]) + len(h[1]) + headerOverhead
	}
	return n
}

func (m Message) producerMessage(topic string) *sarama.ProducerMessage {
	pm := &sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(m.Key), Value: sarama.ByteEncoder(m.Value)}
	for _, h := range m.Headers {
		pm.Headers = append(pm.Headers, sarama.RecordHeader{Key: []byte(h[0]), Value: []byte(h[1])})
	}
	return pm
}

// Publisher sends messages to one topic over one long-lived idempotent AsyncProducer. A Lambda
// container keeps it across invocations; each invocation publishes through its own Batch, which
// tells it, in publish order, which messages Kafka acknowledged.
type Publisher struct {
	client   sarama.Client
	producer sarama.AsyncProducer
	topic    string
	brokers  []string
	done     chan struct{} // closed when the acknowledgement dispatcher exits
}

// ConnectTimeout bounds NewPublisher: brokers that accept connections but never answer would
// otherwise hold it for sarama's retry schedule (a minute or more).
const ConnectTimeout = 20 * time.Second

// NewPublisher connects to the brokers, checks that the topic exists and starts the producer. It
// fails within ConnectTimeout (or when ctx is done) when the brokers do not answer; errors say what
// to check.
func NewPublisher(ctx context.Context, s Settings) (*Publisher, error) {
	cfg, err := SaramaConfig(s)
	if err != nil {
		return nil, err
	}
	return NewPublisherWithConfig(ctx, s.Brokers, s.Topic, cfg)
}

// NewPublisherWithConfig is NewPublisher with a prepared sarama configuration (tests, benchmarks).
func NewPublisherWithConfig(ctx context.Context, brokers []string, topic string, cfg *sarama.Config) (*Publisher, error) {
	if len(brokers) == 0 {
		return nil, errors.New("kafka: no brokers configured")
	}
	type result struct {
		p   *Publisher
		err error
	}
	ch := make(chan result, 1)
	go func() {
		p, err := connect(brokers, topic, cfg)
		ch <- result{p, err}
	}()
	timer := time.NewTimer(ConnectTimeout)
	defer timer.Stop()
	var why error
	select {
	case r := <-ch:
		return r.p, r.err
	case <-timer.C:
		why = fmt.Errorf("no answer within %v", ConnectTimeout)
	case <-ctx.Done():
		why = ctx.Err()
	}
	go func() { // sarama gives up on its own later; release what it built
		if r := <-ch; r.p != nil {
			_ = r.p.Close(ConnectTimeout)
		}
	}()
	return nil, fmt.Errorf("connect to kafka brokers %s: %w (check the broker addresses, network access, KAFKA_TLS and KAFKA_SASL)",
		strings.Join(brokers, ","), why)
}

func connect(brokers []string, topic string, cfg *sarama.Config) (*Publisher, error) {
	client, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to kafka brokers %s: %w (check the broker addresses, network access, KAFKA_TLS and KAFKA_SASL)",
			strings.Join(brokers, ","), err)
	}
	parts, err := client.Partitions(topic)
	if err == nil && len(parts) == 0 {
		err = errors.New("no partitions")
	}
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("kafka topic %q on brokers %s: %w (does the topic exist?)", topic, strings.Join(brokers, ","), err)
	}
	producer, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("start kafka producer on %s: %w", strings.Join(brokers, ","), err)
	}
	p := &Publisher{client: client, producer: producer, topic: topic, brokers: brokers, done: make(chan struct{})}
	go p.dispatch()
	return p, nil
}

// flight is attached to each in-flight message so that its acknowledgement finds its batch,
// and so that the partitioner finds a pinned message's partition.
type flight struct {
	batch     *Batch
	seq       uint64
	partition int32
	pinned    bool
}

// dispatch routes every acknowledgement and failure to the batch that sent the message.
func (p *Publisher) dispatch() {
	defer close(p.done)
	successes, failures := p.producer.Successes(), p.producer.Errors()
	for successes != nil || failures != nil {
		select {
		case m, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			if f, ok := m.Metadata.(*flight); ok {
				f.batch.complete(f.seq, nil)
			}
		case e, ok := <-failures:
			if !ok {
				failures = nil
				continue
			}
			if f, ok := e.Msg.Metadata.(*flight); ok {
				f.batch.complete(f.seq, e.Err)
			}
		}
	}
}

// Close flushes and stops the producer, waiting at most timeout.
func (p *Publisher) Close(timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		err := p.producer.Close()
		<-p.done
		_ = p.client.Close()
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("kafka producer did not close within %v", timeout)
	}
}

// Partitions is the topic's partition count as the producer's client knows it from the brokers'
// metadata: the count the hash partitioner spreads keys over, and the partitions a collection
// event is copied to.
func (p *Publisher) Partitions() (int32, error) {
	parts, err := p.client.Partitions(p.topic)
	if err == nil && len(parts) == 0 {
		err = errors.New("no partitions")
	}
	if err != nil {
		return 0, fmt.Errorf("partitions of kafka topic %q: %w", p.topic, err)
	}
	return int32(len(parts)), nil
}

// Begin starts a batch of at most window unacknowledged messages: Publish blocks while window
// messages wait for their acknowledgement, which bounds memory and lets reading the change
// stream overlap publishing.
func (p *Publisher) Begin(window int) *Batch {
	if window < 1 {
		window = 1
	}
	return &Batch{p: p, next: 1, done: make([]bool, window), changed: make(chan struct{})}
}

// Batch is one invocation's stream of messages. Messages get sequence numbers 1, 2, 3... in
// Publish order; Acked reports the highest n such that messages 1..n were all acknowledged.
// Publish is meant to be called from one goroutine; the other methods from any.
type Batch struct {
	p *Publisher

	mu      sync.Mutex
	next    uint64        // sequence number of the next message
	acked   uint64        // messages 1..acked are acknowledged
	done    []bool        // acknowledged out of order, indexed by seq % window
	err     error         // first failure; the batch accepts nothing after it
	ended   bool          //
	changed chan struct{} // closed and replaced whenever acked or err changes
}

// Publish hands msg to the producer and returns its sequence number. It blocks only while the
// window is full (or the producer's input is), until ctx is done.
func (b *Batch) Publish(ctx context.Context, msg Message) (uint64, error) {
	// A done context refuses the message outright: a select below could otherwise still pick
	// the send, and a capture stopping at its lease expiry must not publish after it.
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("kafka: not publishing: %w", err)
	}
	b.mu.Lock()
	for {
		if err := b.err; err != nil {
			b.mu.Unlock()
			return 0, err
		}
		if b.ended {
			b.mu.Unlock()
			return 0, ErrBatchEnded
		}
		if b.next-1-b.acked < uint64(len(b.done)) {
			break
		}
		wait, outstanding := b.changed, b.next-1-b.acked
		b.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return 0, fmt.Errorf("kafka: %d messages still unacknowledged: %w", outstanding, ctx.Err())
		}
		b.mu.Lock()
	}
	seq := b.next
	b.next++
	b.mu.Unlock()

	pm := msg.producerMessage(b.p.topic)
	pm.Metadata = &flight{batch: b, seq: seq, partition: msg.Partition, pinned: msg.Pinned}
	select {
	case b.p.producer.Input() <- pm:
		return seq, nil
	case <-ctx.Done():
		err := fmt.Errorf("kafka producer input blocked: %w", ctx.Err())
		b.fail(err)
		return 0, err
	}
}

// complete records the outcome of message seq.
func (b *Batch) complete(seq uint64, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		b.failLocked(fmt.Errorf("%w: message %d on brokers %s: %w", ErrNotAcknowledged, seq, strings.Join(b.p.brokers, ","), err))
		return
	}
	if seq <= b.acked || seq >= b.next {
		return
	}
	w := uint64(len(b.done))
	b.done[seq%w] = true
	advanced := false
	for b.acked+1 < b.next && b.done[(b.acked+1)%w] {
		b.done[(b.acked+1)%w] = false
		b.acked++
		advanced = true
	}
	if advanced {
		b.broadcastLocked()
	}
}

func (b *Batch) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failLocked(err)
}

func (b *Batch) failLocked(err error) {
	if b.err == nil {
		b.err = err
		b.broadcastLocked()
	}
}

func (b *Batch) broadcastLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Partitions is the topic's partition count (Publisher.Partitions).
func (b *Batch) Partitions() (int32, error) { return b.p.Partitions() }

// Acked returns n such that messages 1..n were all acknowledged by Kafka.
func (b *Batch) Acked() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.acked
}

// Published returns how many messages were handed to the producer.
func (b *Batch) Published() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.next - 1
}

// Err returns the first failure, or nil.
func (b *Batch) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Progress returns a channel closed at the next change of Acked or Err. Call it again after it
// fires.
func (b *Batch) Progress() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// Flush waits until every published message is acknowledged, a message fails, or ctx is done.
func (b *Batch) Flush(ctx context.Context) error {
	for {
		b.mu.Lock()
		err, all, wait, outstanding := b.err, b.acked == b.next-1, b.changed, b.next-1-b.acked
		b.mu.Unlock()
		switch {
		case err != nil:
			return err
		case all:
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("kafka: %d messages still unacknowledged: %w", outstanding, ctx.Err())
		}
	}
}

// End detaches the batch: Publish fails afterwards, and acknowledgements still in flight are
// ignored by it (they no longer matter: the next invocation republishes from its checkpoint).
func (b *Batch) End() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.ended {
		b.ended = true
		b.broadcastLocked()
	}
}
