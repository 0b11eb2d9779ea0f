package main

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/internal/workload"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// The throughput figures: capture and apply each against the physical limit of the same work,
// measured in the same run, interleaved (product, baseline, product, baseline ...), over several
// rounds, reported as min/median/max.
//
//   - raw relay (capture's baseline): the driver reads the same change stream with the same
//     options (capture's own stream opener, MAX_AWAIT), and each event's bytes are produced
//     unchanged to the same topic by a sarama producer with capture's settings (idempotent,
//     acks=all, the same compression and partitioner: kafka.SaramaConfig), keyed by the
//     event's documentKey bytes, until every message is acknowledged.
//   - raw upsert (apply's baseline): the same MSK-shaped batches apply gets, each record's value
//     base64-decoded, its fullDocument and _id found in place (bsoncore), and the documents
//     written to the same DR namespace as ordered replaceOne upserts, MAX_BULK_OPS per command
//     and never across a batch.
//
// Both sides of a pair do the same physical work on the same stack, so their ratio is the
// product's overhead; the absolute figures are those of the embedded stack on this machine.
// CPU per event is the process's user+sys time (getrusage) during the run divided by the events:
// it includes the in-process server and broker, which both sides of a pair use alike.

// sample is one run of one side of a pair.
type sample struct {
	wall time.Duration
	cpu  time.Duration
}

// pairStats are the rounds of one product/baseline pair at one size.
type pairStats struct {
	product, baseline []sample
}

func (s pairStats) ratios() []float64 {
	out := make([]float64, len(s.product))
	for i := range s.product {
		out[i] = s.baseline[i].wall.Seconds() / s.product[i].wall.Seconds() // product rate / baseline rate
	}
	return out
}

func cpuPerEvent(ss []sample, n int) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = float64(s.cpu.Microseconds()) / float64(n)
	}
	return out
}

func rates(ss []sample, n int) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = float64(n) / s.wall.Seconds()
	}
	return out
}

// spread is the min, median and max of xs.
type spread struct{ min, median, max float64 }

func spreadOf(xs []float64) spread {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return spread{s[0], med, s[n-1]}
}

func (s spread) String() string {
	return fmt.Sprintf("min %s median %s max %s", formatFigure(s.min), formatFigure(s.median), formatFigure(s.max))
}

// putSpread records a figure as its median, with its spread in the note.
func (b *bench) putSpread(name string, xs []float64, unit, note string) {
	s := spreadOf(xs)
	v := formatFigure(s.median)
	if unit != "" {
		v += " " + unit
	}
	full := fmt.Sprintf("%s (%s; %d rounds)", v, s, len(xs))
	b.figures = append(b.figures, figure{name, full, note})
	fmt.Fprintf(b.out, "%s: %s\n", name, full)
}

// processCPU is the process's user+sys CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs fn and returns its wall and CPU time.
func measure(fn func() error) (sample, error) {
	runtime.GC() // the previous run's garbage is not this one's cost
	c0, t0 := processCPU(), time.Now()
	err := fn()
	return sample{wall: time.Since(t0), cpu: processCPU() - c0}, err
}

// loadAvg is /proc/loadavg's first three fields ("" where there is none).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// warnLoad prints a warning when the 1-minute load exceeds the core count.
func (b *bench) warnLoad(when, load string) {
	f := strings.Fields(load)
	if len(f) == 0 {
		return
	}
	if l, err := strconv.ParseFloat(f[0], 64); err == nil && l > float64(runtime.NumCPU()) {
		w := fmt.Sprintf("load average %s %s exceeds the %d cores: figures are noisy", when, f[0], runtime.NumCPU())
		b.warnings = append(b.warnings, w)
		fmt.Fprintf(b.out, "# WARNING: %s\n", w)
	}
}

// throughputAt measures the capture and apply pairs over n events on a fresh stack.
func (b *bench) throughputAt(ctx context.Context, n int) error {
	c := b.cfg
	// DR's change history is capped small: each run upserts N documents there, and a history of
	// them would grow this process's heap round after round, a cost (fresh pages, page faults)
	// that whichever side ran first in a round would pay for the other.
	st, p, err := b.benchStack(ctx, "events", devstack.Options{OplogMaxEntries: n + 100_000, DROplogMaxEntries: benchDROplog}, map[string]string{
		"MAX_AWAIT": "100ms", "IDLE_TIMEOUT": "2s", "CONTINUOUS_DRAIN": "0",
		"MAX_BYTES": strconv.Itoa(1 << 40), // MAX_EVENTS = N is the only stop
	}, localrun.Options{ManualCapture: true, CaptureTimeout: 30 * time.Minute})
	if err != nil {
		return err
	}
	defer st.Close()
	defer p.Close()

	fmt.Fprintf(b.out, "# %d events: loading the primary\n", n)
	coll := p.Primary().Database("bench").Collection("events")
	docs := make([]any, 0, 1000)
	for i := range n {
		docs = append(docs, workload.Order(i))
		if len(docs) == cap(docs) || i == n-1 {
			if _, err := coll.InsertMany(ctx, docs); err != nil {
				return fmt.Errorf("load: %w", err)
			}
			docs = docs[:0]
		}
	}
	state, err := p.Checkpoints().Load(ctx, p.Scope().ID())
	if err != nil {
		return err
	}
	from := state.ResumeToken

	// Capture against raw relay. The relay's producer, like capture's, lives across rounds.
	ks := capture.KafkaSettings(p.CaptureConfig().Kafka)
	scfg, err := kafka.SaramaConfig(ks)
	if err != nil {
		return err
	}
	relay, err := newRelay(st.KafkaBrokers, st.Topic, scfg)
	if err != nil {
		return err
	}
	defer relay.close()
	streams := capture.MongoStreams{Client: p.Primary(), MaxAwait: p.CaptureConfig().MaxAwait}
	// After each run of either side the topic's records are deleted (outside the timing): the
	// in-process broker would otherwise keep N more messages in this process's heap after every
	// run, and the run after it would pay for the heap's growth (a broker in AWS is elsewhere).
	emptyTopic := func() error { return deleteRecords(st.KafkaBrokers, st.Topic, scfg) }
	captureRun := func() error {
		if err := p.Checkpoints().Reset(ctx, p.Scope().ID(), checkpoint.ResetTo{ResumeToken: from}, "bench"); err != nil {
			return err
		}
		var sum capture.Summary
		s, err := measure(func() error {
			var err error
			sum, err = p.CaptureOnce(ctx, capture.Overrides{MaxEvents: n})
			return err
		})
		if err == nil && (sum.Events != n || sum.Acknowledged != n) {
			err = fmt.Errorf("capture published %d and Kafka acknowledged %d events, want %d (stop: %s)", sum.Events, sum.Acknowledged, n, sum.StopReason)
		}
		b.pending = s
		if err != nil {
			return err
		}
		return emptyTopic()
	}
	relayRun := func() error {
		s, err := measure(func() error { return relay.run(ctx, streams, p, from, n) })
		b.pending = s
		if err != nil {
			return err
		}
		return emptyTopic()
	}
	fmt.Fprintf(b.out, "# %d events: capture and raw relay, %d rounds after a warm-up\n", n, c.rounds)
	var capPair pairStats
	if err := b.interleave(c.rounds, captureRun, relayRun, &capPair); err != nil {
		return err
	}

	// Apply against raw upsert, over the MSK batches of the same events.
	batches, err := mskBatches(ctx, streams, p, from, n, c.batchSize, st.Topic)
	if err != nil {
		return err
	}
	bulk := p.ApplyConfig().MaxBulkOps
	if bulk <= 0 {
		bulk = apply.DefaultMaxBulkOps
	}
	// Each run of either side starts on an empty DR collection (dropped outside the timing), so
	// that both apply the N changes to a DR that has not seen them, as the primary made them:
	// N inserts of new documents.
	dr := p.DR().Database("bench").Collection("events")
	emptyDR := func() error {
		if err := dr.Drop(ctx); err != nil {
			return fmt.Errorf("empty the DR collection: %w", err)
		}
		return nil
	}
	round := 0
	applyRun := func() error {
		round++
		later, err := laterBatches(batches, round, n)
		if err != nil {
			return err
		}
		if err := emptyDR(); err != nil {
			return err
		}
		var got int
		s, err := measure(func() error {
			for _, ev := range later {
				sum, err := p.ApplyOnce(ctx, ev)
				if err != nil {
					return err
				}
				got += sum.Applied
			}
			return nil
		})
		if err == nil && got != n {
			err = fmt.Errorf("apply applied %d of %d records (a round must be new batches, not a redelivery)", got, n)
		}
		b.pending = s
		return err
	}
	upsertRun := func() error {
		if err := emptyDR(); err != nil {
			return err
		}
		s, err := measure(func() error { return rawUpsert(ctx, dr, batches, bulk) })
		b.pending = s
		return err
	}
	fmt.Fprintf(b.out, "# %d events: apply and raw upsert, %d rounds after a warm-up\n", n, c.rounds)
	var applyPair pairStats
	if err := b.interleave(c.rounds, applyRun, upsertRun, &applyPair); err != nil {
		return err
	}

	sfx := "_" + strconv.Itoa(n)
	b.putSpread("capture_vs_raw_relay"+sfx, capPair.ratios(), "", "capture events/s ÷ raw relay events/s, same round")
	b.putSpread("capture_throughput"+sfx, rates(capPair.product, n), "events/s", "one invocation, MAX_EVENTS = N: drain + publish + checkpoint")
	b.putSpread("raw_relay_throughput"+sfx, rates(capPair.baseline, n), "events/s", "raw change stream bytes produced unchanged, all acknowledged")
	b.putSpread("capture_cpu_us_per_event"+sfx, cpuPerEvent(capPair.product, n), "µs", "process user+sys ÷ events (includes the in-process server and broker)")
	b.putSpread("raw_relay_cpu_us_per_event"+sfx, cpuPerEvent(capPair.baseline, n), "µs", "the same, for raw relay")
	b.putSpread("apply_vs_raw_upsert"+sfx, applyPair.ratios(), "", "apply records/s ÷ raw upsert records/s, same round")
	b.putSpread("apply_throughput"+sfx, rates(applyPair.product, n), "records/s", fmt.Sprintf("apply handler, batches of %d", c.batchSize))
	b.putSpread("raw_upsert_throughput"+sfx, rates(applyPair.baseline, n), "records/s", fmt.Sprintf("ordered replaceOne upserts, %d per command", bulk))
	b.putSpread("apply_cpu_us_per_event"+sfx, cpuPerEvent(applyPair.product, n), "µs", "process user+sys ÷ records (includes the in-process DR server)")
	b.putSpread("raw_upsert_cpu_us_per_event"+sfx, cpuPerEvent(applyPair.baseline, n), "µs", "the same, for raw upsert")
	b.sizes = append(b.sizes, sizeFigures{n: n, capture: capPair, apply: applyPair})
	return nil
}

// benchDROplog is the DR server's change history in the throughput runs (see throughputAt).
const benchDROplog = 10_000

// interleave runs one warm-up of each side, then rounds of both, and records each round's
// samples (each run leaves its sample in b.pending). Odd rounds run the product first, even
// rounds the baseline first (A B B A A B ...): what one run leaves behind (a grown heap, garbage
// to collect, a warm cache) then falls on both sides alike.
func (b *bench) interleave(rounds int, product, baseline func() error, into *pairStats) error {
	for r := 0; r <= rounds; r++ {
		var ps, bs sample
		type side struct {
			name string
			run  func() error
			got  *sample
		}
		sides := [2]side{{"product", product, &ps}, {"baseline", baseline, &bs}}
		if r > 0 && r%2 == 0 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, s := range sides {
			if err := s.run(); err != nil {
				return fmt.Errorf("round %d, %s: %w", r, s.name, err)
			}
			*s.got = b.pending
		}
		if r == 0 {
			continue // the warm-up: connections, caches, the first allocations
		}
		into.product = append(into.product, ps)
		into.baseline = append(into.baseline, bs)
		fmt.Fprintf(b.out, "#   round %d: product %v (cpu %v), baseline %v (cpu %v), ratio %.2f\n", r,
			ps.wall.Round(time.Millisecond), ps.cpu.Round(time.Millisecond), bs.wall.Round(time.Millisecond),
			bs.cpu.Round(time.Millisecond), bs.wall.Seconds()/ps.wall.Seconds())
	}
	return nil
}

// relay is raw relay's producer: an AsyncProducer with capture's configuration, whose
// acknowledgements are counted as they come.
type relay struct {
	prod  sarama.AsyncProducer
	topic string
	acks  chan error // one per message: nil for a success
	done  chan struct{}
}

func newRelay(brokers []string, topic string, cfg *sarama.Config) (*relay, error) {
	prod, err := sarama.NewAsyncProducer(brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("raw relay producer: %w", err)
	}
	r := &relay{prod: prod, topic: topic, acks: make(chan error, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		succ, errs := prod.Successes(), prod.Errors()
		for succ != nil || errs != nil {
			select {
			case _, ok := <-succ:
				if !ok {
					succ = nil
					continue
				}
				r.acks <- nil
			case e, ok := <-errs:
				if !ok {
					errs = nil
					continue
				}
				r.acks <- e.Err
			}
		}
	}()
	return r, nil
}

// run relays n events after from and returns once Kafka acknowledged all of them.
func (r *relay) run(ctx context.Context, streams capture.MongoStreams, p *localrun.Pipeline, from bson.Raw, n int) error {
	st, err := streams.Open(ctx, p.Scope(), capture.Start{ResumeAfter: from})
	if err != nil {
		return fmt.Errorf("raw relay: open change stream: %w", err)
	}
	defer st.Close(ctx)
	acked := 0
	wait := func(block bool) error {
		for {
			var e error
			if block {
				select {
				case e = <-r.acks:
				case <-ctx.Done():
					return ctx.Err()
				}
			} else {
				select {
				case e = <-r.acks:
				default:
					return nil
				}
			}
			if e != nil {
				return fmt.Errorf("raw relay: not acknowledged: %w", e)
			}
			acked++
			if block {
				return nil
			}
		}
	}
	for sent := 0; sent < n; {
		if !st.TryNext(ctx) {
			if err := st.Err(); err != nil {
				return fmt.Errorf("raw relay: stream after %d events: %w", sent, err)
			}
			continue
		}
		value := slices.Clone(st.Current()) // the driver reuses its buffer
		key, _ := bsoncore.Document(value).LookupErr("documentKey")
		r.prod.Input() <- &sarama.ProducerMessage{Topic: r.topic, Key: sarama.ByteEncoder(key.Data), Value: sarama.ByteEncoder(value)}
		sent++
		if err := wait(false); err != nil {
			return err
		}
	}
	for acked < n {
		if err := wait(true); err != nil {
			return err
		}
	}
	return nil
}

func (r *relay) close() {
	r.prod.AsyncClose()
	<-r.done
}

// mskBatches builds, from the n events after from, the batches the event source mapping would
// deliver to apply: each event converted and keyed as capture publishes it (the same
// changeevent calls), on the partition its key hashes to, batchSize records per batch.
func mskBatches(ctx context.Context, streams capture.MongoStreams, p *localrun.Pipeline, from bson.Raw, n, batchSize int, topic string) ([]events.KafkaEvent, error) {
	const partitions = 3 // devstack's topic
	st, err := streams.Open(ctx, p.Scope(), capture.Start{ResumeAfter: from})
	if err != nil {
		return nil, fmt.Errorf("build MSK batches: %w", err)
	}
	defer st.Close(ctx)
	var out []events.KafkaEvent
	var cur events.KafkaEvent
	offsets := make([]int64, partitions)
	for read := 0; read < n; {
		if !st.TryNext(ctx) {
			if err := st.Err(); err != nil {
				return nil, fmt.Errorf("build MSK batches: %w", err)
			}
			continue
		}
		read++
		ev, err := changeevent.FromChangeStream(st.Current())
		if err != nil {
			return nil, err
		}
		value, err := changeevent.Marshal(&ev)
		if err != nil {
			return nil, err
		}
		key, err := changeevent.Key(&ev)
		if err != nil {
			return nil, err
		}
		part := changeevent.Partition(key, partitions)
		hdrs := map[string]events.JSONNumberBytes{}
		for _, h := range changeevent.Headers(&ev) {
			hdrs[h[0]] = events.JSONNumberBytes(h[1])
		}
		if cur.Records == nil {
			cur = events.KafkaEvent{EventSource: "aws:kafka", Records: map[string][]events.KafkaRecord{}}
		}
		tp := fmt.Sprintf("%s-%d", topic, part)
		cur.Records[tp] = append(cur.Records[tp], events.KafkaRecord{
			Topic: topic, Partition: int64(part), Offset: offsets[part],
			Timestamp: events.MilliSecondsEpochTime{Time: time.Now()}, TimestampType: "CREATE_TIME",
			Key: base64.StdEncoding.EncodeToString(key), Value: base64.StdEncoding.EncodeToString(value),
			Headers: []map[string]events.JSONNumberBytes{hdrs},
		})
		offsets[part]++
		if read%batchSize == 0 || read == n {
			out = append(out, cur)
			cur = events.KafkaEvent{}
		}
	}
	return out, nil
}

// deleteRecords deletes every record of the topic (DeleteRecords to each partition's high
// watermark).
func deleteRecords(brokers []string, topic string, cfg *sarama.Config) error {
	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		return fmt.Errorf("delete the capture rounds' records: %w", err)
	}
	defer admin.Close()
	topics, err := admin.DescribeTopics([]string{topic})
	if err != nil || len(topics) != 1 || topics[0].Err != sarama.ErrNoError {
		return fmt.Errorf("delete the capture rounds' records: describe %s: %v %v", topic, err, topics)
	}
	offsets := map[int32]int64{}
	for _, p := range topics[0].Partitions {
		offsets[p.ID] = -1 // the high watermark
	}
	if err := admin.DeleteRecords(topic, offsets); err != nil {
		return fmt.Errorf("delete the capture rounds' records: %w", err)
	}
	return nil
}

// laterBatches is batches as the primary would have produced them round rounds later: the
// same records at offsets further on and with cluster times further on (round × 10⁶ seconds,
// more than any run spans), so that apply takes them as new changes, neither a redelivery (the
// offsets) nor a republished copy of changes it applied already (the cluster times: such a copy
// is applied with a note saying so, which is not the common path).
func laterBatches(batches []events.KafkaEvent, round, n int) ([]events.KafkaEvent, error) {
	out := make([]events.KafkaEvent, len(batches))
	for i, ev := range batches {
		moved := events.KafkaEvent{EventSource: ev.EventSource, Records: map[string][]events.KafkaRecord{}}
		for k, recs := range ev.Records {
			rs := slices.Clone(recs)
			for j := range rs {
				rs[j].Offset += int64(round * n)
				v, err := laterClusterTime(rs[j].Value, uint32(round)*1_000_000)
				if err != nil {
					return nil, err
				}
				rs[j].Value = v
			}
			moved.Records[k] = rs
		}
		out[i] = moved
	}
	return out, nil
}

// laterClusterTime returns the base64 record value with its clusterTime moved by seconds.
func laterClusterTime(value string, seconds uint32) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		return "", fmt.Errorf("bench record: %w", err)
	}
	el, err := bsoncore.Document(raw).LookupErr("clusterTime")
	if err != nil || el.Type != bson.TypeTimestamp {
		return "", errors.New("bench record: no clusterTime timestamp")
	}
	t, _ := el.Timestamp()
	// el.Data aliases raw: a timestamp's value is its increment then its seconds, little-endian.
	binary.LittleEndian.PutUint32(el.Data[4:8], t+seconds)
	if got, _ := el.Timestamp(); got != t+seconds {
		return "", errors.New("bench record: clusterTime not rewritten in place")
	}
	return base64.StdEncoding.EncodeToString(raw), nil
}

// rawUpsert writes the documents of batches as ordered replaceOne upserts, bulk per command and
// never across a batch, partitions in order as apply takes them.
func rawUpsert(ctx context.Context, coll *mongo.Collection, batches []events.KafkaEvent, bulk int) error {
	models := make([]mongo.WriteModel, 0, bulk)
	flush := func() error {
		if len(models) == 0 {
			return nil
		}
		_, err := coll.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(true))
		models = models[:0]
		if err != nil {
			return fmt.Errorf("raw upsert: %w", err)
		}
		return nil
	}
	for _, ev := range batches {
		keys := make([]string, 0, len(ev.Records))
		for k := range ev.Records {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			for _, rec := range ev.Records[k] {
				value, err := base64.StdEncoding.DecodeString(rec.Value)
				if err != nil {
					return fmt.Errorf("raw upsert: %w", err)
				}
				doc := bsoncore.Document(value)
				full, ok := doc.Lookup("fullDocument").DocumentOK()
				id, err := doc.LookupErr("documentKey", "_id")
				if !ok || err != nil {
					return errors.New("raw upsert: a record without fullDocument or documentKey._id")
				}
				models = append(models, mongo.NewReplaceOneModel().
					SetFilter(bson.D{{Key: "_id", Value: bson.RawValue{Type: id.Type, Value: id.Data}}}).
					SetReplacement(bson.Raw(full)).SetUpsert(true))
				if len(models) == bulk {
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}
	return nil
}
