package capture

import "github.com/docdb-dr/docdb-dr/pkg/checkpoint"

// acks follows the events a run has read, in stream order, until Kafka has acknowledged the
// messages they need, and so knows the newest position the checkpoint may take. It is modelled on
// Redpanda Connect's checkpoint tracker (its MongoDB CDC input tracks resume tokens the same
// way): Track each item as it is handed on, with its size; Advance when acknowledgements arrive,
// in whatever order Kafka gave them; the checkpoint is the newest item with every earlier one
// done; Room caps what is outstanding.
//
// Acknowledgements come from the batch as a watermark: kafka.Batch.Acked is the highest n with
// messages 1..n all acknowledged, so out-of-order acknowledgements across partitions are already
// folded into it (see kafka's TestAckedIsContiguousWhateverTheOrder). An event needs the last of
// its messages (a collection event has one per partition), and an event that published nothing
// (out of scope, or a post-batch resume token) needs the last message published before it.
//
// acks is used by the drain goroutine only; it is not safe for concurrent use.
type acks struct {
	limit    int64     // most unacknowledged bytes Room allows (one message may exceed it alone)
	queue    []tracked // read, not yet covered by the watermark, in stream order
	last     uint64    // sequence number of the last message tracked
	inFlight int64     // bytes of tracked, unacknowledged messages
	position checkpoint.Position
}

type tracked struct {
	needs     uint64
	pos       checkpoint.Position
	size      int64
	published bool
}

func newAcks(limit int64) *acks { return &acks{limit: limit} }

// Track queues the next event of the stream at pos. last is the sequence number of its last
// message, 0 when it published none; size is the bytes of its messages.
func (a *acks) Track(pos checkpoint.Position, last uint64, size int64) {
	published := last > 0
	if published {
		a.last = last
	}
	a.queue = append(a.queue, tracked{needs: a.last, pos: pos, size: size, published: published})
	a.inFlight += size
}

// Advance moves past every queued event whose messages, and every earlier one, are acknowledged
// (messages 1..acked). It returns how many published events it passed.
func (a *acks) Advance(acked uint64) int {
	n, events := 0, 0
	for n < len(a.queue) && a.queue[n].needs <= acked {
		t := a.queue[n]
		a.position = t.pos
		a.inFlight -= t.size
		if t.published {
			events++
		}
		n++
	}
	if n > 0 {
		clear(a.queue[:n])
		a.queue = a.queue[n:]
	}
	return events
}

// Room reports whether size more bytes may be published now: the unacknowledged bytes stay
// within the limit, except that a message larger than the limit may go out alone.
func (a *acks) Room(size int64) bool {
	return a.inFlight == 0 || a.inFlight+size <= a.limit
}

// Position is the newest position whose events were all acknowledged (zero before any).
func (a *acks) Position() checkpoint.Position { return a.position }

// InFlight is the bytes published and not yet acknowledged.
func (a *acks) InFlight() int64 { return a.inFlight }
