package esm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/aws/aws-lambda-go/events"
	"github.com/twmb/franz-go/pkg/kfake"
)

const testTopic = "changevents"

// newCluster starts a one-broker kfake cluster with the test topic.
func newCluster(t *testing.T, partitions int32) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, testTopic))
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// produce writes n records to one partition, keys "k<i>", values "v<i>",
// with a header, and returns the offsets written.
func produce(t *testing.T, brokers []string, partition int32, n int) []int64 {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Producer.Return.Successes = true
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer(brokers, sc)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	defer p.Close()
	offsets := make([]int64, 0, n)
	for i := range n {
		_, off, err := p.SendMessage(&sarama.ProducerMessage{
			Topic:     testTopic,
			Partition: partition,
			Key:       sarama.StringEncoder(fmt.Sprintf("k%d", i)),
			Value:     sarama.StringEncoder(fmt.Sprintf("v%d", i)),
			Headers:   []sarama.RecordHeader{{Key: []byte("h"), Value: []byte{1, 200}}},
		})
		if err != nil {
			t.Fatalf("produce: %v", err)
		}
		offsets = append(offsets, off)
	}
	return offsets
}

// recorder is a handler that keeps every event it is given and answers
// with the errors of a script (nil once the script is exhausted).
type recorder struct {
	mu     sync.Mutex
	events []events.KafkaEvent
	script []error
	gate   chan struct{} // when non-nil, each call waits for a receive
}

func (r *recorder) handle(ctx context.Context, ev events.KafkaEvent) error {
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	if len(r.script) > 0 {
		err := r.script[0]
		r.script = r.script[1:]
		return err
	}
	return nil
}

func (r *recorder) snapshot() []events.KafkaEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.KafkaEvent(nil), r.events...)
}

// count is the number of records in an event.
func count(ev events.KafkaEvent) int {
	n := 0
	for _, recs := range ev.Records {
		n += len(recs)
	}
	return n
}

// start runs an EventSource in the background until the test ends.
func start(t *testing.T, cfg Config, h Handler) *EventSource {
	t.Helper()
	if cfg.GroupID == "" {
		cfg.GroupID = "g-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	cfg.Topic = testTopic
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	es, err := New(cfg, h)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- es.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return es
}

func waitCaughtUp(t *testing.T, es *EventSource) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := es.WaitCaughtUp(ctx); err != nil {
		t.Fatalf("WaitCaughtUp: %v", err)
	}
}

// committed returns the group's committed offset of a partition (-1: none).
func committed(t *testing.T, brokers []string, group string, partition int32) int64 {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(brokers, sarama.NewConfig())
	if err != nil {
		t.Fatalf("admin: %v", err)
	}
	defer admin.Close()
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{testTopic: {partition}})
	if err != nil {
		t.Fatalf("offsets: %v", err)
	}
	if b := resp.GetBlock(testTopic, partition); b != nil {
		return b.Offset
	}
	return -1
}

func TestBatching(t *testing.T) {
	tests := []struct {
		name      string
		batchSize int
		window    time.Duration
		produce   int
		want      []int // records per batch, in order
	}{
		{"size closes batches", 100, 2 * time.Second, 250, []int{100, 100, 50}},
		{"window closes a small batch", 1000, 300 * time.Millisecond, 7, []int{7}},
		{"batch size one", 1, 5 * time.Second, 3, []int{1, 1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			brokers := newCluster(t, 1)
			produce(t, brokers, 0, tc.produce)
			rec := &recorder{}
			es := start(t, Config{Brokers: brokers, BatchSize: tc.batchSize, BatchingWindow: tc.window}, rec.handle)
			waitCaughtUp(t, es)

			var got []int
			next := int64(0)
			for _, ev := range rec.snapshot() {
				got = append(got, count(ev))
				for _, r := range ev.Records[testTopic+"-0"] {
					if r.Offset != next {
						t.Fatalf("offset %d, want %d: records out of order or skipped", r.Offset, next)
					}
					next++
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("batch sizes %v, want %v", got, tc.want)
			}
		})
	}
}

// TestBatchingWindowWaits checks that a batch below BatchSize is held for
// the window rather than sent as soon as records arrive.
func TestBatchingWindowWaits(t *testing.T) {
	brokers := newCluster(t, 1)
	const window = 1500 * time.Millisecond
	calls := make(chan time.Time, 10)
	es := start(t, Config{Brokers: brokers, BatchSize: 1000, BatchingWindow: window},
		func(ctx context.Context, ev events.KafkaEvent) error {
			calls <- time.Now()
			return nil
		})
	// Let the group join first, so the window starts at the first record.
	time.Sleep(3 * time.Second)
	produced := time.Now()
	produce(t, brokers, 0, 3)
	waitCaughtUp(t, es)
	called := <-calls
	if d := called.Sub(produced); d < window-200*time.Millisecond {
		t.Errorf("handler called %v after produce, want about the %v window", d, window)
	}
	if len(calls) != 0 {
		t.Errorf("%d extra invocations for 3 records", len(calls))
	}
}

func TestGroupingByPartition(t *testing.T) {
	brokers := newCluster(t, 3)
	for p := range int32(3) {
		produce(t, brokers, p, 10)
	}
	rec := &recorder{}
	es := start(t, Config{Brokers: brokers, BatchSize: 1000, BatchingWindow: time.Second}, rec.handle)
	waitCaughtUp(t, es)

	next := map[string]int64{}
	for _, ev := range rec.snapshot() {
		if ev.EventSource != "aws:kafka" || ev.EventSourceARN == "" || ev.BootstrapServers != strings.Join(brokers, ",") {
			t.Errorf("event header = %q %q %q", ev.EventSource, ev.EventSourceARN, ev.BootstrapServers)
		}
		for key, recs := range ev.Records {
			for _, r := range recs {
				if want := fmt.Sprintf("%s-%d", r.Topic, r.Partition); key != want {
					t.Errorf("record of %s under key %s", want, key)
				}
				if r.Offset != next[key] {
					t.Fatalf("%s: offset %d, want %d", key, r.Offset, next[key])
				}
				next[key]++
			}
		}
	}
	want := map[string]int64{"changevents-0": 10, "changevents-1": 10, "changevents-2": 10}
	if !reflect.DeepEqual(next, want) {
		t.Errorf("records seen per partition %v, want %v", next, want)
	}
}

func TestCommitOnlyAfterSuccess(t *testing.T) {
	brokers := newCluster(t, 1)
	produce(t, brokers, 0, 5)
	rec := &recorder{gate: make(chan struct{})}
	es := start(t, Config{Brokers: brokers, BatchSize: 10, BatchingWindow: 100 * time.Millisecond}, rec.handle)

	// The handler is blocked in its first call: nothing may be committed.
	time.Sleep(4 * time.Second)
	if off := committed(t, brokers, es.cfg.GroupID, 0); off >= 0 {
		t.Fatalf("offset %d committed while the handler is still running", off)
	}
	close(rec.gate)
	waitCaughtUp(t, es)
	if off := committed(t, brokers, es.cfg.GroupID, 0); off != 5 {
		t.Errorf("committed offset %d after success, want 5", off)
	}
}

func TestRetryRedeliversSameRecords(t *testing.T) {
	brokers := newCluster(t, 2)
	produce(t, brokers, 0, 4)
	produce(t, brokers, 1, 3)
	boom := errors.New("DR cluster unavailable")
	rec := &recorder{script: []error{boom, boom, boom}}
	es := start(t, Config{
		Brokers: brokers, BatchSize: 100, BatchingWindow: time.Second,
		RetryBackoff: 10 * time.Millisecond, WarnAfterAttempts: 2,
	}, rec.handle)
	waitCaughtUp(t, es)

	evs := rec.snapshot()
	if len(evs) < 4 {
		t.Fatalf("%d invocations, want at least 4 (3 failures, then success)", len(evs))
	}
	for i := 1; i <= 3; i++ {
		if !reflect.DeepEqual(evs[i], evs[0]) {
			t.Errorf("attempt %d got a different batch than attempt 1:\n%s\nvs\n%s",
				i+1, describePosition(evs[i]), describePosition(evs[0]))
		}
	}
	seen := 0
	for _, ev := range evs[3:] {
		seen += count(ev)
	}
	if seen != 7 {
		t.Errorf("%d records delivered after the failures, want all 7", seen)
	}
}

// TestUncommittedBatchGoesToNextConsumer checks that a batch that never
// succeeded is read again, from its first offset, by the next consumer of
// the group.
func TestUncommittedBatchGoesToNextConsumer(t *testing.T) {
	brokers := newCluster(t, 1)
	produce(t, brokers, 0, 3)
	cfg := Config{Brokers: brokers, GroupID: "handover", BatchSize: 10, BatchingWindow: 100 * time.Millisecond,
		RetryBackoff: 20 * time.Millisecond, Topic: testTopic,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}

	failing := &recorder{script: make([]error, 1_000_000)}
	for i := range failing.script {
		failing.script[i] = errors.New("always fails")
	}
	es, err := New(cfg, failing.handle)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- es.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for len(failing.snapshot()) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(failing.snapshot()) < 2 {
		t.Fatal("failing consumer was not retried")
	}

	ok := &recorder{}
	es2 := start(t, cfg, ok.handle)
	waitCaughtUp(t, es2)
	first := ok.snapshot()[0].Records[testTopic+"-0"][0]
	if first.Offset != 0 {
		t.Errorf("next consumer started at offset %d, want 0", first.Offset)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	brokers := newCluster(t, 1)
	sc := sarama.NewConfig()
	sc.Producer.Return.Successes = true
	p, err := sarama.NewSyncProducer(brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*sarama.ProducerMessage{
		{Topic: testTopic, Key: sarama.ByteEncoder{0xff, 0x00, 0x80}, Value: sarama.ByteEncoder("doc"),
			Headers: []sarama.RecordHeader{{Key: []byte("v"), Value: []byte{118, 220, 0, 127, 128}}, {Key: []byte("e"), Value: []byte{}}}},
		{Topic: testTopic, Value: sarama.StringEncoder("no key, no headers")},
		{Topic: testTopic, Key: sarama.StringEncoder("tombstone")},
	}
	for _, m := range msgs {
		if _, _, err := p.SendMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()

	rec := &recorder{}
	es := start(t, Config{Brokers: brokers, BatchSize: 10, BatchingWindow: 200 * time.Millisecond}, rec.handle)
	waitCaughtUp(t, es)
	ev := rec.snapshot()[0]

	raw, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var back events.KafkaEvent
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, ev) {
		t.Errorf("JSON round trip changed the event:\n%s", raw)
	}

	// The JSON must look like an MSK event, field by field.
	var generic struct {
		EventSource string `json:"eventSource"`
		Records     map[string][]map[string]json.RawMessage
	}
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	recs := generic.Records["changevents-0"]
	if generic.EventSource != "aws:kafka" || len(recs) != 3 {
		t.Fatalf("event %s", raw)
	}
	checks := []struct {
		rec   int
		field string
		want  string // "" means absent
	}{
		{0, "key", `"` + base64.StdEncoding.EncodeToString([]byte{0xff, 0x00, 0x80}) + `"`},
		{0, "value", `"ZG9j"`},
		{0, "headers", `[{"v":[118,-36,0,127,-128]},{"e":[]}]`},
		{0, "timestampType", `"CREATE_TIME"`},
		{1, "key", ""},
		{1, "headers", `[]`},
		{2, "value", ""},
	}
	for _, c := range checks {
		got := string(recs[c.rec][c.field])
		if c.want == "" && got != "" {
			t.Errorf("record %d: %s = %s, want absent", c.rec, c.field, got)
		}
		if c.want != "" && !bytes.Equal([]byte(got), []byte(c.want)) {
			t.Errorf("record %d: %s = %s, want %s", c.rec, c.field, got, c.want)
		}
	}
	var ts int64
	if err := json.Unmarshal(recs[0]["timestamp"], &ts); err != nil || time.Since(time.UnixMilli(ts)) > time.Minute {
		t.Errorf("timestamp %s is not a recent epoch in milliseconds", recs[0]["timestamp"])
	}
}

func TestConfigValidation(t *testing.T) {
	h := func(context.Context, events.KafkaEvent) error { return nil }
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{Brokers: []string{"x:1"}, Topic: "t", GroupID: "g"}, ""},
		{"missing everything", Config{}, "Brokers is empty"},
		{"bad start", Config{Brokers: []string{"x:1"}, Topic: "t", GroupID: "g", StartingPosition: "AT_TIMESTAMP"}, "StartingPosition"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, h)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

// TestBisectBatchOnFunctionError: a record that keeps failing is isolated by bisecting; the
// records before it are handled while it is retried, none after it is handled before it, nothing
// is committed past it, and once it succeeds everything is, in order. Without bisecting the
// whole batch waits (the control).
func TestBisectBatchOnFunctionError(t *testing.T) {
	for _, bisect := range []bool{true, false} {
		t.Run(fmt.Sprint("bisect=", bisect), func(t *testing.T) {
			brokers := newCluster(t, 1)
			produce(t, brokers, 0, 10)
			var mu sync.Mutex
			fixed := false
			var handled []int64 // offsets of successful invocations, in order
			poison := int64(6)
			h := func(ctx context.Context, ev events.KafkaEvent) error {
				mu.Lock()
				defer mu.Unlock()
				recs := ev.Records[testTopic+"-0"]
				for _, r := range recs {
					if r.Offset == poison && !fixed {
						return errors.New("record 6 is refused")
					}
				}
				for _, r := range recs {
					handled = append(handled, r.Offset)
				}
				return nil
			}
			group := "g-bisect-" + fmt.Sprint(bisect)
			start(t, Config{Brokers: brokers, GroupID: group, BatchSize: 10, BatchingWindow: 300 * time.Millisecond,
				RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 20 * time.Millisecond, BisectBatchOnFunctionError: bisect}, h)
			time.Sleep(2 * time.Second)
			mu.Lock()
			before := append([]int64(nil), handled...)
			fixed = true
			mu.Unlock()
			want := []int64{0, 1, 2, 3, 4, 5}
			if !bisect {
				want = nil
			}
			if !reflect.DeepEqual(before, want) {
				t.Errorf("handled while record 6 failed: %v, want %v", before, want)
			}
			if c := committed(t, brokers, group, 0); c > poison {
				t.Errorf("committed offset %d is past the failing record %d", c, poison)
			}
			deadline := time.Now().Add(20 * time.Second)
			for committed(t, brokers, group, 0) != 10 {
				if time.Now().After(deadline) {
					t.Fatalf("committed %d after the fix, want 10", committed(t, brokers, group, 0))
				}
				time.Sleep(50 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			last := handled[len(handled)-4:]
			if !reflect.DeepEqual(last, []int64{6, 7, 8, 9}) && !reflect.DeepEqual(handled, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
				t.Errorf("handled %v: the records after 6 must follow it, in order", handled)
			}
		})
	}
}
