package capture

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// From a raw change stream event to the Kafka messages that publish it. A run (drain.go) and
// the replay of dead letters (replay.go) share these steps.

// poisonError marks an event that capture can never convert or publish as it is (retrying the
// same bytes fails the same way): it is dead-lettered instead of failing every run.
type poisonError struct{ err error }

func (p poisonError) Error() string { return p.err.Error() }
func (p poisonError) Unwrap() error { return p.err }

func isPoison(err error) bool {
	var p poisonError
	return errors.As(err, &p)
}

// converted is an event after the pure, parallelisable part of handling it: decoded, checked
// against the scope and encoded as a Kafka message.
type converted struct {
	raw  bson.Raw // the change stream event as the server sent it
	ev   changeevent.Event
	msg  kafka.Message // empty when skip or invalidate
	skip bool          // out of scope or an unknown operation type: not published
	err  error         // a poisonError: the event cannot be converted
	// weight is the read-ahead credit the event holds until it is handled (drain).
	weight int64
}

// convertEvent decodes a raw change stream event and encodes its message; contains says whether
// the event is in scope. raw is the caller's own copy: the event points into it.
func convertEvent(raw bson.Raw, contains func(*changeevent.Event) bool) converted {
	ev, err := changeevent.FromOwnedChangeStream(raw)
	if err != nil {
		return converted{raw: raw, err: poisonError{err}}
	}
	c := converted{raw: raw, ev: ev}
	switch {
	case ev.Operation == changeevent.Invalidate:
		return c
	case !ev.Operation.Known() || !contains(&ev):
		c.skip = true
		return c
	}
	value, err := changeevent.Marshal(&ev)
	if err != nil {
		return converted{raw: raw, err: poisonError{err}}
	}
	key, err := changeevent.Key(&ev)
	if err != nil {
		return converted{raw: raw, err: poisonError{fmt.Errorf("key of %s event on %s: %w", ev.Operation, ev.NS, err)}}
	}
	c.msg = kafka.Message{Key: key, Value: value, Headers: changeevent.Headers(&ev)}
	return c
}

// fitMessage returns msg, or when it is over maxBytes, the claim-check message that replaces it
// (the full message goes to blobs under prefix). An event whose claim-check message is still too
// large is poison; a failed S3 write is not.
func fitMessage(ctx context.Context, blobs Blob, prefix string, maxBytes int, ev *changeevent.Event, msg kafka.Message) (kafka.Message, bool, error) {
	if msg.Size() <= maxBytes {
		return msg, false, nil
	}
	if blobs == nil {
		return kafka.Message{}, false, fmt.Errorf("%s event on %s is %d bytes, over the %d-byte Kafka limit, and no claim-check store is configured",
			ev.Operation, ev.NS, msg.Size(), maxBytes)
	}
	stub, err := claimCheck(ctx, blobs, prefix, ev, msg.Value)
	if err != nil {
		return kafka.Message{}, false, err
	}
	if msg.Value, err = changeevent.Marshal(stub); err != nil {
		return kafka.Message{}, false, poisonError{err}
	}
	if msg.Size() > maxBytes {
		return kafka.Message{}, false, poisonError{fmt.Errorf("%s event on %s: even the claim-check message is %d bytes, over the %d-byte Kafka limit (document key too large?)",
			ev.Operation, ev.NS, msg.Size(), maxBytes)}
	}
	return msg, true, nil
}

// barrierCopies is a collection event's message copied to each of n partitions, each pinned to
// its partition and carrying the barrier header naming n, so that every partition sees the event
// at the same point relative to its own document changes.
func barrierCopies(ev *changeevent.Event, msg kafka.Message, n int32) []kafka.Message {
	headers := append(slices.Clip(msg.Headers), [2]string{changeevent.HeaderBarrier, strconv.Itoa(int(n))})
	out := make([]kafka.Message, n)
	for p := range n {
		out[p] = kafka.Message{Key: msg.Key, Value: msg.Value, Headers: headers, Partition: p, Pinned: true}
	}
	return out
}
