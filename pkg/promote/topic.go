package promote

import (
	"context"
	"fmt"
	"time"

	"github.com/IBM/sarama"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Topic is the change-event topic as promote reads it: how far each partition goes, and when
// its newest record's event happened. Calls come from one goroutine.
type Topic interface {
	// Name is the topic's name (the applied frontiers are recorded under it).
	Name() string
	// Ends returns, per partition, the offset the next record will get.
	Ends(ctx context.Context) (map[int64]int64, error)
	// Newest returns the time of the newest event among the records just before ends (per
	// partition, the record at end-1; partitions with end 0 have none): its cluster time, or,
	// for a record that does not carry the event (a claim check), the record's timestamp (exact
	// false). Zero when there is no record.
	Newest(ctx context.Context, ends map[int64]int64) (t time.Time, exact bool, err error)
}

// KafkaTopic is a Topic over a sarama client.
type KafkaTopic struct {
	Client sarama.Client
	Topic  string
}

// Name is the topic's name.
func (k KafkaTopic) Name() string { return k.Topic }

// Ends reads every partition's newest offset.
func (k KafkaTopic) Ends(ctx context.Context) (map[int64]int64, error) {
	if err := k.Client.RefreshMetadata(k.Topic); err != nil {
		return nil, fmt.Errorf("metadata of topic %s: %w", k.Topic, err)
	}
	parts, err := k.Client.Partitions(k.Topic)
	if err != nil {
		return nil, fmt.Errorf("partitions of topic %s: %w", k.Topic, err)
	}
	out := make(map[int64]int64, len(parts))
	for _, p := range parts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		off, err := k.Client.GetOffset(k.Topic, p, sarama.OffsetNewest)
		if err != nil {
			return nil, fmt.Errorf("end offset of %s-%d: %w", k.Topic, p, err)
		}
		out[int64(p)] = off
	}
	return out, nil
}

// Newest consumes the one record at end-1 of each partition, with one consumer.
func (k KafkaTopic) Newest(ctx context.Context, ends map[int64]int64) (time.Time, bool, error) {
	c, err := sarama.NewConsumerFromClient(k.Client)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("consumer of %s: %w", k.Topic, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var newest time.Time
	var exact bool
	for p, end := range ends {
		if end <= 0 {
			continue
		}
		t, ex, err := k.recordTime(ctx, c, p, end-1)
		if err != nil {
			return time.Time{}, false, err
		}
		if t.After(newest) {
			newest, exact = t, ex
		}
	}
	return newest, exact, nil
}

func (k KafkaTopic) recordTime(ctx context.Context, c sarama.Consumer, partition, offset int64) (time.Time, bool, error) {
	pc, err := c.ConsumePartition(k.Topic, int32(partition), offset)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read %s-%d@%d: %w", k.Topic, partition, offset, err)
	}
	defer pc.AsyncClose()
	select {
	case m := <-pc.Messages():
		if ev, err := changeevent.Unmarshal(m.Value); err == nil {
			return changeevent.Time(ev.ClusterTime), true, nil
		}
		return m.Timestamp.UTC(), false, nil
	case err := <-pc.Errors():
		return time.Time{}, false, fmt.Errorf("read %s-%d@%d: %w", k.Topic, partition, offset, err)
	case <-ctx.Done():
		return time.Time{}, false, fmt.Errorf("read %s-%d@%d: %w", k.Topic, partition, offset, ctx.Err())
	}
}
