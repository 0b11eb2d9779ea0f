package kafka

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
)

// ErrNotAcknowledged marks a message Kafka did not acknowledge: the producer's own retries ran
// out, or waiting for the acknowledgement ended (a flush that timed out). The Publisher that
// returned it must be aborted (Abort) and replaced before the next batch: it may still hold, and
// retry, messages of the batch.
var ErrNotAcknowledged = errors.New("kafka did not acknowledge a message")

// ErrAborted is returned by Publish of a publisher that was aborted. It matches
// ErrNotAcknowledged: the publisher must be replaced.
var ErrAborted = fmt.Errorf("kafka publisher aborted: %w", ErrNotAcknowledged)

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
	return &m.envelope(topic).pm
}

// envelope is a message as handed to the producer: the ProducerMessage, the flight its Metadata
// points at, and room for a few headers, in one allocation.
type envelope struct {
	pm     sarama.ProducerMessage
	flight flight
	hdrs   [2]sarama.RecordHeader
}

func (m Message) envelope(topic string) *envelope {
	e := &envelope{pm: sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(m.Key), Value: sarama.ByteEncoder(m.Value)}}
	if len(m.Headers) > 0 {
		hs := e.hdrs[:0:len(e.hdrs)]
		if len(m.Headers) > len(e.hdrs) {
			hs = make([]sarama.RecordHeader, 0, len(m.Headers))
		}
		for _, h := range m.Headers {
			hs = append(hs, sarama.RecordHeader{Key: headerBytes(h[0]), Value: headerBytes(h[1])})
		}
		e.pm.Headers = hs
	}
	return e
}

// headerBytes is s as bytes, shared between messages for the few short strings that headers
// repeat (names, format version, operation types): the producer only reads them.
func headerBytes(s string) []byte {
	if v, ok := headerCache.Load(s); ok {
		return v.([]byte)
	}
	b := []byte(s)
	if len(s) <= maxCachedHeader && headerCacheSize.Load() < maxCachedHeaders {
		if _, loaded := headerCache.LoadOrStore(s, b); !loaded {
			headerCacheSize.Add(1)
		}
	}
	return b
}

const (
	maxCachedHeader  = 64
	maxCachedHeaders = 256
)

var (
	headerCache     sync.Map // string -> []byte
	headerCacheSize atomic.Int64
)

// Publisher sends messages to one topic over one long-lived idempotent AsyncProducer. A Lambda
// container keeps it across invocations; each invocation publishes through its own Batch, which
// tells it, in publish order, which messages Kafka acknowledged.
type Publisher struct {
	client   sarama.Client
	producer sarama.AsyncProducer
	gate     *gate // every broker connection of the producer goes through it (see Abort)
	topic    string
	brokers  []string
	done     chan struct{} // closed when the acknowledgement dispatcher exits

	abortOnce sync.Once
	aborted   chan struct{} // closed when Abort starts
	closeOnce sync.Once
	closed    chan struct{} // closed when the producer and client are closed
	closeErr  error         // the producer's, set before closed is closed
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
	// The producer's own copy of the configuration dials through a gate (see Abort); TLS is done
	// by the gate, so that it sees Kafka frames.
	own := *cfg
	g := newGate(own.Net.DialTimeout, own.Net.KeepAlive, nil)
	if own.Net.TLS.Enable {
		g.tls = own.Net.TLS.Config
		if g.tls == nil {
			g.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		own.Net.TLS.Enable, own.Net.TLS.Config = false, nil
	}
	own.Net.Proxy.Enable, own.Net.Proxy.Dialer = true, g
	ch := make(chan result, 1)
	go func() {
		p, err := connect(brokers, topic, &own, g)
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

func connect(brokers []string, topic string, cfg *sarama.Config, g *gate) (*Publisher, error) {
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
	p := &Publisher{client: client, producer: producer, gate: g, topic: topic, brokers: brokers,
		done: make(chan struct{}), aborted: make(chan struct{})}
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

// Abort stops the publisher for good so that nothing it still holds can reach Kafka later, however
// slow the brokers are: from the moment it is called, no byte of a new request leaves the process
// (every broker connection refuses writes, a write in progress is cut short, no connection is
// dialled), so the messages the producer buffers or retries are never sent. It then waits, until
// ctx is done, for the requests already sent to be answered, so that whatever of them the brokers
// append is appended before Abort returns; and it closes the connections and the producer.
//
// It returns an error when ctx ended first, naming how many requests were unanswered: a broker
// that received them may still append them later (the only thing left, which broker-side fencing
// by producer epoch would close; see docs/capture.md). Abort may be called more than once and
// concurrently with anything; Begin and Publish fail with ErrAborted afterwards.
func (p *Publisher) Abort(ctx context.Context) error {
	var err error
	p.abortOnce.Do(func() {
		close(p.aborted)
		p.gate.close()
		if n, derr := p.gate.drain(ctx); derr != nil {
			err = fmt.Errorf("kafka: aborted with %d requests to brokers %s unanswered (a broker may still append them): %w",
				n, strings.Join(p.brokers, ","), derr)
		}
		p.gate.closeAll()
		go func() { _ = p.Close(ConnectTimeout) }() // release sarama's goroutines; nothing can leave
	})
	return err
}

// Close flushes and stops the producer, waiting at most timeout. It may be called more than
// once (after Abort, for instance): the producer is stopped once.
func (p *Publisher) Close(timeout time.Duration) error {
	p.closeOnce.Do(func() {
		p.closed = make(chan struct{})
		go func() {
			p.closeErr = p.producer.Close()
			<-p.done
			_ = p.client.Close()
			close(p.closed)
		}()
	})
	select {
	case <-p.closed:
		return p.closeErr
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
	select {
	case <-p.aborted:
		return &Batch{p: p, next: 1, done: make([]bool, window), err: ErrAborted}
	default:
	}
	return &Batch{p: p, next: 1, done: make([]bool, window)}
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
	changed chan struct{} // made by a waiter (changedLocked), closed when acked or err changes
}

// Publish hands msg to the producer and returns its sequence number. It blocks only while the
// window is full (or the producer's input is), until ctx is done.
func (b *Batch) Publish(ctx context.Context, msg Message) (uint64, error) {
	// A done context refuses the message outright: a select below could otherwise still pick
	// the send, and a capture stopping at its lease expiry must not publish after it.
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("kafka: not publishing: %w", err)
	}
	select {
	case <-b.p.aborted:
		return 0, ErrAborted
	default:
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
		wait, outstanding := b.changedLocked(), b.next-1-b.acked
		b.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: %d messages still unacknowledged: %w", ErrNotAcknowledged, outstanding, ctx.Err())
		}
		b.mu.Lock()
	}
	seq := b.next
	b.next++
	b.mu.Unlock()

	env := msg.envelope(b.p.topic)
	env.flight = flight{batch: b, seq: seq, partition: msg.Partition, pinned: msg.Pinned}
	pm := &env.pm
	pm.Metadata = &env.flight
	select {
	case b.p.producer.Input() <- pm:
		return seq, nil
	case <-ctx.Done():
		err := fmt.Errorf("%w: kafka producer input blocked: %w", ErrNotAcknowledged, ctx.Err())
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

// broadcastLocked wakes whoever waits for a change (changedLocked); without a waiter there is no
// channel to close, and no channel is made per acknowledgement.
func (b *Batch) broadcastLocked() {
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
}

// changedLocked returns the channel that the next change of acked or err closes.
func (b *Batch) changedLocked() <-chan struct{} {
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.changed
}

// Partitions is the topic's partition count (Publisher.Partitions).
func (b *Batch) Partitions() (int32, error) { return b.p.Partitions() }

// Unfinished says why the batch did not end with every message it published acknowledged, or
// returns nil when it did. A publisher whose batch is unfinished must be aborted (Abort).
func (b *Batch) Unfinished() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch published := b.next - 1; {
	case b.err != nil:
		return b.err
	case b.acked < published:
		return fmt.Errorf("%w: %d of %d messages unacknowledged when the batch ended", ErrNotAcknowledged, published-b.acked, published)
	}
	return nil
}

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
	return b.changedLocked()
}

// Flush waits until every published message is acknowledged, a message fails, or ctx is done.
func (b *Batch) Flush(ctx context.Context) error {
	for {
		b.mu.Lock()
		err, all, wait, outstanding := b.err, b.acked == b.next-1, b.changedLocked(), b.next-1-b.acked
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
			return fmt.Errorf("%w: %d messages still unacknowledged: %w", ErrNotAcknowledged, outstanding, ctx.Err())
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
