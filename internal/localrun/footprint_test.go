package localrun

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/esm"
	"github.com/docdb-dr/docdb-dr/internal/lambdarun"
	"github.com/docdb-dr/docdb-dr/internal/workload"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
)

// measureEnv, set to 1, turns TestMeasureFootprint on. It starts three local stacks and loads
// 130,000 documents (about 15 s on 2 cores), so `make test` skips it.
const measureEnv = "DOCDBDR_MEASURE"

// What issue #14 asks of the bootstrap processes.
const (
	applyRSSTargetMiB   = 128 // one MSK batch of 10,000 records, about 6 MB
	captureRSSTargetMiB = 256 // one invocation with MAX_EVENTS=100000, 100,000 events waiting
	coldStartTargetMs   = 50  // exec to the first /next, median of 10
)

// TestMeasureFootprint measures the real bootstraps behind the Runtime API stand-in: the peak
// RSS of apply for one batch of 10,000 records (about 6 MB of payload), the peak RSS of capture
// for one invocation that drains 100,000 waiting inserts, and the cold start of each binary.
// Each RSS round runs in a new process, so that its peak is that invocation's alone. It logs
// min/median/max with the commit, CPU count and load average, and fails when a figure misses
// its target (docs/benchmarks.md has the command and the figures).
func TestMeasureFootprint(t *testing.T) {
	if os.Getenv(measureEnv) != "1" {
		t.Skipf("set %s=1 to measure the bootstraps' peak RSS and cold start", measureEnv)
	}
	if runtime.GOOS != "linux" {
		t.Skip("peak RSS is read from /proc: Linux only")
	}
	t.Logf("commit %s, %s, %d CPUs, load average before: %s", gitCommit(), runtime.Version(), runtime.NumCPU(), loadAverage())
	defer func() { t.Logf("load average after: %s", loadAverage()) }()
	t.Run("apply", measureApply)
	t.Run("capture", measureCapture)
	t.Run("coldstart", measureColdStarts)
}

// measureApply: each round, 10,000 new inserts are read from the primary's change stream and
// handed to a new apply process as one MSK batch (mskBatch), at new offsets.
func measureApply(t *testing.T) {
	const records, rounds = 10_000, 3
	logs := &lines{}
	p, ctx := startPipeline(t, Options{ManualCapture: true, ApplyBootstrap: bootstrap(t, "apply"), FunctionLogs: logs}, nil)
	state, err := p.Checkpoints().Load(ctx, p.Scope().ID())
	if err != nil || len(state.ResumeToken) == 0 {
		t.Fatalf("the pinned checkpoint has no resume token (%v)", err)
	}
	after := state.ResumeToken
	offsets := map[int32]int64{}
	var rss []float64
	for round := range rounds {
		insertDocs(ctx, t, p.Primary().Database("bar").Collection("foo"), round*records, records, smallDoc)
		var batch events.KafkaEvent
		batch, after = mskBatch(ctx, t, p, after, records, offsets)
		payload, err := json.Marshal(batch)
		if err != nil {
			t.Fatal(err)
		}
		p.ApplySandbox().Kill() // a new process for every round
		r, err := p.ApplySandbox().Invoke(ctx, payload)
		var sum apply.Summary
		if err == nil && r.Err == nil {
			err = json.Unmarshal(r.Payload, &sum)
		}
		if err != nil || r.Err != nil || sum.Applied != records || !r.ColdStart || r.PeakRSS == 0 {
			t.Fatalf("round %d: apply of %d records in %d bytes: applied %d, cold %v, peak RSS %d, err %v %v\nfunction logs:\n%s",
				round, records, len(payload), sum.Applied, r.ColdStart, r.PeakRSS, err, r.Err, logs)
		}
		t.Logf("apply round %d: %d records, payload %.2f MB, handled in %v, peak RSS %.1f MiB",
			round+1, sum.Records, float64(len(payload))/1e6, r.Ended.Sub(r.Started).Round(time.Millisecond), mib(r.PeakRSS))
		rss = append(rss, mib(r.PeakRSS))
	}
	if s := logSpread(t, "apply peak RSS, MiB", rss); s.max > applyRSSTargetMiB {
		t.Errorf("apply peak RSS up to %.1f MiB, over the %d MiB target", s.max, applyRSSTargetMiB)
	}
}

// mskBatch reads the n events after the resume token after from the primary's change stream and
// returns them as the event source mapping delivers them to apply: each converted, keyed and
// partitioned as capture publishes it (the same changeevent calls), at the next offset of its
// partition (offsets is advanced), in the shape internal/esm gives an MSK event. It also returns
// the last event's resume token.
func mskBatch(ctx context.Context, t *testing.T, p *Pipeline, after bson.Raw, n int, offsets map[int32]int64) (events.KafkaEvent, bson.Raw) {
	t.Helper()
	const partitions = 3 // the local stack's topic
	topic := p.ApplyConfig().Topic
	streams := capture.MongoStreams{Client: p.Primary(), MaxAwait: 50 * time.Millisecond}
	st, err := streams.Open(ctx, p.Scope(), capture.Start{ResumeAfter: after})
	if err != nil {
		t.Fatalf("open the change stream: %v", err)
	}
	defer st.Close(ctx)
	batch := events.KafkaEvent{EventSource: esm.EventSourceKafka, EventSourceARN: esm.DefaultEventSourceARN,
		BootstrapServers: strings.Join(p.CaptureConfig().Kafka.Brokers, ","), Records: map[string][]events.KafkaRecord{}}
	for read := 0; read < n; {
		if !st.TryNext(ctx) {
			if err := st.Err(); err != nil {
				t.Fatalf("change stream: %v", err)
			}
			continue
		}
		read++
		ev, err := changeevent.FromChangeStream(st.Current())
		if err != nil {
			t.Fatal(err)
		}
		value, err := changeevent.Marshal(&ev)
		if err != nil {
			t.Fatal(err)
		}
		key, err := changeevent.Key(&ev)
		if err != nil {
			t.Fatal(err)
		}
		part := changeevent.Partition(key, partitions)
		rec := events.KafkaRecord{Topic: topic, Partition: int64(part), Offset: offsets[part],
			Timestamp: events.MilliSecondsEpochTime{Time: time.UnixMilli(time.Now().UnixMilli())}, TimestampType: "CREATE_TIME",
			Key: base64.StdEncoding.EncodeToString(key), Value: base64.StdEncoding.EncodeToString(value)}
		for _, h := range changeevent.Headers(&ev) {
			rec.Headers = append(rec.Headers, map[string]events.JSONNumberBytes{h[0]: events.JSONNumberBytes(h[1])})
		}
		offsets[part]++
		k := fmt.Sprintf("%s-%d", topic, part)
		batch.Records[k] = append(batch.Records[k], rec)
		after = ev.ResumeToken
	}
	return batch, after
}

// measureCapture: 100,000 inserts wait in the primary's change stream; each round resets the
// checkpoint to before them and one invocation of a new capture process drains them all.
func measureCapture(t *testing.T) {
	const events, rounds = 100_000, 3
	logs := &lines{}
	p, ctx := startPipeline(t, Options{
		ManualCapture:    true,
		CaptureBootstrap: bootstrap(t, "capture"),
		CaptureTimeout:   5 * time.Minute,
		FunctionLogs:     logs,
	}, map[string]string{"MAX_EVENTS": strconv.Itoa(events)})
	state, err := p.Checkpoints().Load(ctx, p.Scope().ID())
	if err != nil || len(state.ResumeToken) == 0 {
		t.Fatalf("the pinned checkpoint has no resume token (%v)", err)
	}
	insertDocs(ctx, t, p.Primary().Database("bar").Collection("foo"), 0, events, workload.Order)
	var rss []float64
	for round := range rounds {
		if err := p.Checkpoints().Reset(ctx, p.Scope().ID(), checkpoint.ResetTo{ResumeToken: state.ResumeToken}, "TestMeasureFootprint"); err != nil {
			t.Fatal(err)
		}
		p.CaptureSandbox().Kill() // a new process for every round
		r := p.invoke(ctx, lambdarun.NewRequestID(), 0, capture.Overrides{})
		if r.Err != nil || r.Summary.Events != events || r.Summary.Acknowledged != events || !r.ColdStart || r.PeakRSS == 0 {
			t.Fatalf("round %d: capture of %d events (want %d), %d acknowledged, stop %q, cold %v, peak RSS %d, err %v\nfunction logs:\n%s",
				round, r.Summary.Events, events, r.Summary.Acknowledged, r.Summary.StopReason, r.ColdStart, r.PeakRSS, r.Err, logs)
		}
		t.Logf("capture round %d: %d events, %.1f MB published, stop %s, in %v, peak RSS %.1f MiB",
			round+1, r.Summary.Events, float64(r.Summary.Bytes)/1e6, r.Summary.StopReason, r.Ended.Sub(r.Started).Round(time.Millisecond), mib(r.PeakRSS))
		rss = append(rss, mib(r.PeakRSS))
	}
	if s := logSpread(t, "capture peak RSS, MiB", rss); s.max > captureRSSTargetMiB {
		t.Errorf("capture peak RSS up to %.1f MiB, over the %d MiB target", s.max, captureRSSTargetMiB)
	}
}

// measureColdStarts starts each bootstrap 10 times, alternately, with the local stack's
// configuration: capture for an idle invocation, apply for an empty batch.
func measureColdStarts(t *testing.T) {
	const starts = 10
	logs := &lines{}
	p, ctx := startPipeline(t, Options{
		ManualCapture:    true,
		CaptureBootstrap: bootstrap(t, "capture"),
		ApplyBootstrap:   bootstrap(t, "apply"),
		FunctionLogs:     logs,
	}, nil)
	emptyBatch := []byte(`{"eventSource":"aws:kafka","records":{}}`)
	var captureMs, applyMs []float64
	for i := range starts {
		p.CaptureSandbox().Kill()
		c := p.invoke(ctx, lambdarun.NewRequestID(), 0, capture.Overrides{IdleTimeout: capture.Duration(10 * time.Millisecond)})
		p.ApplySandbox().Kill()
		a, err := p.ApplySandbox().Invoke(ctx, emptyBatch)
		if c.Err != nil || !c.ColdStart || err != nil || a.Err != nil || !a.ColdStart {
			t.Fatalf("start %d: capture cold %v, %v; apply cold %v, %v %v\nfunction logs:\n%s", i, c.ColdStart, c.Err, a.ColdStart, err, a.Err, logs)
		}
		captureMs = append(captureMs, ms(c.InitDuration))
		applyMs = append(applyMs, ms(a.InitDuration))
	}
	for _, fn := range []struct {
		name string
		ms   []float64
	}{{"capture", captureMs}, {"apply", applyMs}} {
		if s := logSpread(t, fn.name+" cold start (exec to the first /next), ms", fn.ms); s.median >= coldStartTargetMs {
			t.Errorf("%s cold start: median %.1f ms, not under the %d ms target", fn.name, s.median, coldStartTargetMs)
		}
	}
}

// insertDocs inserts n documents doc(first), doc(first+1), ..., 1,000 per InsertMany.
func insertDocs(ctx context.Context, t *testing.T, coll *mongo.Collection, first, n int, doc func(seq int) bson.D) {
	t.Helper()
	docs := make([]any, 0, 1000)
	for seq := first; seq < first+n; seq++ {
		docs = append(docs, doc(seq))
		if len(docs) == cap(docs) || seq == first+n-1 {
			if _, err := coll.InsertMany(ctx, docs); err != nil {
				t.Fatalf("insert: %v", err)
			}
			docs = docs[:0]
		}
	}
}

// smallDoc is the document of the apply batch, an _id and a number: 10,000 of its insert events
// make an MSK event of about 6 MB, just under Lambda's 6 MiB payload limit (the change event
// around a document, its key and the record's fields weigh more than the document).
func smallDoc(seq int) bson.D {
	return bson.D{{Key: "_id", Value: primitive.NewObjectID()}, {Key: "seq", Value: int64(seq)}}
}

type spread struct{ min, median, max float64 }

// logSpread logs the samples and their min, median and max, and returns those.
func logSpread(t *testing.T, what string, xs []float64) spread {
	t.Helper()
	sorted := slices.Sorted(slices.Values(xs))
	n := len(sorted)
	s := spread{min: sorted[0], median: sorted[n/2], max: sorted[n-1]}
	if n%2 == 0 {
		s.median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	samples := make([]string, n)
	for i, x := range xs {
		samples[i] = strconv.FormatFloat(x, 'f', 1, 64)
	}
	t.Logf("%s: min %.1f median %.1f max %.1f (%d samples: %s)", what, s.min, s.median, s.max, n, strings.Join(samples, " "))
	return s
}

func mib(bytes int64) float64    { return float64(bytes) / (1 << 20) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// loadAverage is /proc/loadavg's 1, 5 and 15-minute load ("unknown" where there is none).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// gitCommit is the checkout's commit, marked "+dirty" with uncommitted changes to tracked files.
func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	commit := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		commit += "+dirty"
	}
	return commit
}
