package apply

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// readCountingDR counts the documents apply asks DR for, and the bytes of the lines it claims in
// the ledger.
type readCountingDR struct {
	DR
	finds, ids, ledgerBytes atomic.Int64
}

func (c *readCountingDR) FindByIDs(ctx context.Context, ns changeevent.Namespace, ids []bson.RawValue) (map[IDKey]bson.Raw, error) {
	c.finds.Add(1)
	c.ids.Add(int64(len(ids)))
	return c.DR.FindByIDs(ctx, ns, ids)
}

func (c *readCountingDR) Claim(ctx context.Context, entries []LedgerEntry) (map[string]bool, error) {
	for _, e := range entries {
		c.ledgerBytes.Add(int64(len(e.Line)))
	}
	return c.DR.Claim(ctx, entries)
}

// BenchmarkHistory10k applies batches of 10,000 updates (or replaces) of ~200-byte documents to
// the embedded DR server, with objects written to gofakes3, with the version history off and on:
// the same DR writes either way; "on" adds one line per event (claimed in the ledger, PUT in
// one object per namespace and partition). It reports records/s and, scaled to 1M events, the
// DR reads (finds and ids), the S3 PUTs and bytes, and the ledger line bytes. Run the off and on
// cases alternately (bench/history.sh) for interleaved rounds.
func BenchmarkHistory10k(b *testing.B) {
	for _, kind := range []changeevent.OperationType{changeevent.Update, changeevent.Replace} {
		for _, history := range []bool{false, true} {
			b.Run(fmt.Sprintf("%ss/history=%t", kind, history), func(b *testing.B) { historyBench(b, kind, history) })
		}
	}
}

func historyBench(b *testing.B, kind changeevent.OperationType, history bool) {
	ctx := context.Background()
	client := startMongo(b)
	coll := client.Database(fooNS.DB).Collection(fooNS.Coll)
	const n = 10_000
	var docs []any
	for i := range n {
		docs = append(docs, append(bson.D{{Key: "_id", Value: int32(i)}}, benchDoc(i)...))
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		b.Fatal(err)
	}
	var s3c *countingS3
	store := startS3(b, func(api archive.S3API) archive.S3API { s3c = &countingS3{S3API: api}; return s3c })
	dr := &readCountingDR{DR: NewMongoWriter(client)}
	h, err := New(dr, store, Options{Logger: discardLogger(), Metrics: &bytes.Buffer{}, History: history})
	if err != nil {
		b.Fatal(err)
	}
	round := func(r int) events.KafkaEvent {
		evs := make([]changeevent.Event, n)
		for i := range evs {
			full := append(bson.D{{Key: "_id", Value: int32(i)}}, benchDoc(i)...)
			full[2].Value = int32(r)
			if kind == changeevent.Update {
				evs[i] = update(b, fooNS, int32(i), bson.D{{Key: "n", Value: int32(r)}}, nil, nil)
				evs[i].FullDocument = raw(b, full)
			} else {
				evs[i] = evt(b, changeevent.Replace, fooNS, int32(i), full[1:])
			}
			evs[i].ResumeToken = raw(b, bson.D{{Key: "_data", Value: fmt.Sprintf("%s%d-%d", kind, r, i)}})
		}
		return later(batchOf(b, evs...), r)
	}
	b.ReportAllocs()
	events := 0
	for b.Loop() {
		b.StopTimer()
		batch := round(nextDelivery())
		b.StartTimer()
		sum, err := h.Handle(ctx, batch)
		if err != nil || sum.Applied != n {
			b.Fatal(sum, err)
		}
		if history && sum.HistoryLines != n {
			b.Fatalf("%d history lines, want %d", sum.HistoryLines, n)
		}
		events += n
	}
	per1M := 1e6 / float64(events)
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(dr.finds.Load())*per1M, "finds/1M")
	b.ReportMetric(float64(dr.ids.Load())*per1M, "idsRead/1M")
	b.ReportMetric(float64(s3c.puts.Load())*per1M, "PUTs/1M")
	b.ReportMetric(float64(s3c.bytes.Load())*per1M/1e6, "S3MB/1M")
	b.ReportMetric(float64(dr.ledgerBytes.Load())*per1M/1e6, "ledgerMB/1M")
	if history { // what stays in the ledger per event once its object is written
		e, err := client.Database(DefaultStateDB).Collection(LedgerCollection).FindOne(ctx, bson.D{{Key: "state", Value: StateWritten}}).Raw()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(e)), "ledgerEntryB")
	}
}
