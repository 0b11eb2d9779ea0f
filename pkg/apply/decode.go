package apply

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-lambda-go/events"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// partitionRecords returns the event's partitions in a fixed order (topic, then partition) and
// each partition's records in offset order. A partition whose records come in offset order, as
// the event source mapping delivers them, is the event's own slice (nothing here writes to a
// record); one that does not is sorted in a copy, leaving the event as it was.
func partitionRecords(ev events.KafkaEvent) [][]events.KafkaRecord {
	parts := make([][]events.KafkaRecord, 0, len(ev.Records))
	byOffset := func(a, b events.KafkaRecord) int { return cmp.Compare(a.Offset, b.Offset) }
	for _, recs := range ev.Records {
		if len(recs) == 0 {
			continue
		}
		if !slices.IsSortedFunc(recs, byOffset) {
			recs = slices.Clone(recs)
			slices.SortStableFunc(recs, byOffset)
		}
		parts = append(parts, recs)
	}
	sort.Slice(parts, func(i, j int) bool {
		a, b := parts[i][0], parts[j][0]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		return a.Partition < b.Partition
	})
	return parts
}

// decoded is one record's decoding: its item, of which decodeAll fills in the event and
// batch.decode the rest (the items of a batch thus take one allocation per partition), or why it
// cannot be used now (see Handler.decode).
type decoded struct {
	it  item
	err error
}

// Decoding spreads over the function's vCPUs only for batches of at least parallelDecodeMin
// records, in chunks of decodeChunk records per hand-off.
const (
	parallelDecodeMin = 128
	decodeChunk       = 64
)

// decodeAll decodes every record of the partitions (out[p][i] is partitions[p][i]'s). Decoding
// (base64, the BSON walk that validates an event, a claim check's GET) is most of apply's own
// CPU per record and reads nothing of the batch, so a large batch is decoded on up to GOMAXPROCS
// goroutines (a Lambda function has up to 6 vCPUs: one per 1,769 MB); what the batch records of
// each event happens after, in offset order (batch.decode), as if decoded one by one.
func (h *Handler) decodeAll(ctx context.Context, partitions [][]events.KafkaRecord) [][]decoded {
	out := make([][]decoded, len(partitions))
	total := 0
	for p, recs := range partitions {
		out[p] = make([]decoded, len(recs))
		total += len(recs)
	}
	workers := 1
	if total >= parallelDecodeMin {
		workers = min(runtime.GOMAXPROCS(0), total/decodeChunk)
	}
	if workers <= 1 {
		for p, recs := range partitions {
			for i := range recs {
				out[p][i].it.ev, out[p][i].err = h.decode(ctx, &recs[i])
			}
		}
		return out
	}
	type at struct{ p, i int }
	all := make([]at, 0, total)
	for p, recs := range partitions {
		for i := range recs {
			all = append(all, at{p, i})
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				start := int(next.Add(decodeChunk)) - decodeChunk
				if start >= len(all) {
					return
				}
				for _, a := range all[start:min(start+decodeChunk, len(all))] {
					d := &out[a.p][a.i]
					d.it.ev, d.err = h.decode(ctx, &partitions[a.p][a.i])
				}
			}
		})
	}
	wg.Wait()
	return out
}

// formatVersion is the HeaderFormat value of the messages this build reads.
var formatVersion = strconv.Itoa(changeevent.FormatVersion)

// decode turns one Kafka record into a validated change event, fetching a claim-checked body from
// the archive. It returns a *poison error for a record that can never be used, and another error
// when the claim-check object could not be read now (the batch is retried). It is safe to call
// from several goroutines at once (see decodeAll).
func (h *Handler) decode(ctx context.Context, r *events.KafkaRecord) (changeevent.Event, error) {
	if _, err := base64.StdEncoding.DecodeString(r.Key); err != nil {
		return changeevent.Event{}, poisoned("key is not base64: %v", err)
	}
	value, err := base64.StdEncoding.DecodeString(r.Value)
	if err != nil {
		return changeevent.Event{}, poisoned("value is not base64: %v", err)
	}
	if len(value) == 0 {
		return changeevent.Event{}, poisoned("value is empty")
	}
	for _, hdr := range r.Headers {
		if v, ok := hdr[changeevent.HeaderFormat]; ok && string(bytes.TrimSpace(v)) != formatVersion {
			return changeevent.Event{}, poisoned("unknown message format version %q in header %s (this build reads %d)",
				string(v), changeevent.HeaderFormat, changeevent.FormatVersion)
		}
	}
	ev, err := changeevent.Unmarshal(value)
	if err != nil {
		return changeevent.Event{}, poisoned("%v", err)
	}
	if ev.ClaimCheck != nil {
		if ev, err = h.fetchClaimCheck(ctx, &ev); err != nil {
			return changeevent.Event{}, err
		}
	}
	if err := h.check(&ev); err != nil {
		return changeevent.Event{}, err
	}
	return ev, nil
}

// check refuses an event that apply could only apply wrongly: a full document whose _id is not
// the document key's (one DR server would store it under the other _id, another refuse it), and
// an event whose DR namespace is in apply's state database.
func (h *Handler) check(ev *changeevent.Event) error {
	if ev.FullDocument != nil {
		key, _ := ev.ID()
		id, err := ev.FullDocument.LookupErr("_id")
		if err != nil {
			return poisoned("fullDocument has no _id (documentKey _id is %s)", key)
		}
		if id.Type != key.Type || !bytes.Equal(id.Value, key.Value) {
			return poisoned("fullDocument _id %s differs from documentKey _id %s", id, key)
		}
	}
	for _, ns := range []*changeevent.Namespace{&ev.NS, ev.To} {
		if ns != nil && h.opts.NamespaceMap.Map(*ns).DB == h.dr.StateDB() {
			return poisoned("namespace %s maps into DR_STATE_DB %q, apply's state database", ns, h.dr.StateDB())
		}
	}
	return nil
}

// barrierPartitions reads the barrier header of a collection event's copy: the number of
// partitions capture published it to. An event without the header (a capture that predates
// barriers, or a single-partition topic) counts as published to one partition.
func barrierPartitions(r *events.KafkaRecord) (int, error) {
	for _, hdr := range r.Headers {
		v, ok := hdr[changeevent.HeaderBarrier]
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(v)))
		if err != nil || n < 1 || n > 1<<20 {
			return 0, poisoned("header %s is %q, not a partition count", changeevent.HeaderBarrier, string(v))
		}
		if r.Partition >= int64(n) {
			return 0, poisoned("header %s says %d partitions, but the record is in partition %d", changeevent.HeaderBarrier, n, r.Partition)
		}
		return n, nil
	}
	return 1, nil
}

// fetchClaimCheck reads the full event that a claim-check stub points at and checks that it is
// the object capture wrote (size and SHA-256) and the event the stub describes.
func (h *Handler) fetchClaimCheck(ctx context.Context, stub *changeevent.Event) (changeevent.Event, error) {
	cc := stub.ClaimCheck
	if h.opts.ClaimCheckBucket != "" && cc.Bucket != "" && cc.Bucket != h.opts.ClaimCheckBucket {
		return changeevent.Event{}, poisoned("claim check is in bucket %q, apply reads %q", cc.Bucket, h.opts.ClaimCheckBucket)
	}
	body, err := h.archive.Get(ctx, cc.Key)
	switch {
	case errors.Is(err, archive.ErrNotFound):
		return changeevent.Event{}, poisoned("claim check object %q does not exist", cc.Key)
	case errors.Is(err, archive.ErrAccessDenied):
		// Capture writes the object before it publishes the stub, so a 403 means the object is
		// gone (apply's role has no s3:ListBucket, so S3 answers 403 for a missing key) or the
		// role lacks s3:GetObject on claimcheck/: either way no retry can succeed. The record
		// is dead-lettered with its reason, and replay-deadletters brings it back once fixed.
		return changeevent.Event{}, poisoned("claim check object %q is missing or not readable by this role: %v", cc.Key, err)
	}
	if err != nil {
		return changeevent.Event{}, fmt.Errorf("fetch claim check: %w", err)
	}
	if int64(len(body)) != cc.Size {
		return changeevent.Event{}, poisoned("claim check object %q has %d bytes, the message says %d", cc.Key, len(body), cc.Size)
	}
	sum := sha256.Sum256(body)
	if !strings.EqualFold(hex.EncodeToString(sum[:]), cc.SHA256) {
		return changeevent.Event{}, poisoned("claim check object %q does not match its sha256", cc.Key)
	}
	full, err := changeevent.Unmarshal(body)
	if err != nil {
		return changeevent.Event{}, poisoned("claim check object %q: %v", cc.Key, err)
	}
	if full.ClaimCheck != nil || full.Operation != stub.Operation || full.NS != stub.NS ||
		!bytes.Equal(full.DocumentKey, stub.DocumentKey) {
		return changeevent.Event{}, poisoned("claim check object %q holds a different event than its message", cc.Key)
	}
	return full, nil
}

// deadLetter describes a poison record for the archive.
func deadLetter(r *events.KafkaRecord, reason string) archive.DeadLetter {
	d := archive.DeadLetter{
		Kafka:     archive.Kafka{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset},
		Timestamp: r.Timestamp.UnixMilli(),
		Reason:    reason,
		Key:       r.Key,
		Value:     r.Value,
		Headers:   []archive.Header{},
	}
	for _, hdr := range r.Headers {
		keys := make([]string, 0, len(hdr))
		for k := range hdr {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			d.Headers = append(d.Headers, archive.Header{Key: k, Value: base64.StdEncoding.EncodeToString(hdr[k])})
		}
	}
	return d
}
