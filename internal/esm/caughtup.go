package esm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// Lag is how many records of the topic the group has not yet committed,
// in total and per partition: high watermark minus committed offset (a
// partition without a committed offset counts from the log start).
func (s *EventSource) Lag(ctx context.Context) (int64, map[int32]int64, error) {
	client, err := sarama.NewClient(s.cfg.Brokers, s.sarama)
	if err != nil {
		return 0, nil, fmt.Errorf("eventsource: client: %w", err)
	}
	defer client.Close()
	hwm, err := highWatermarks(client, s.cfg.Topic)
	if err != nil {
		return 0, nil, err
	}
	return s.lagAgainst(ctx, client, hwm)
}

// WaitCaughtUp returns when the group has committed every record produced
// to the topic before the call (the high watermarks taken at the start), or
// with ctx's error. Tests and the demo use it to know the handler has seen
// everything they produced.
func (s *EventSource) WaitCaughtUp(ctx context.Context) error {
	client, err := sarama.NewClient(s.cfg.Brokers, s.sarama)
	if err != nil {
		return fmt.Errorf("eventsource: client: %w", err)
	}
	defer client.Close()
	target, err := highWatermarks(client, s.cfg.Topic)
	if err != nil {
		return err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		total, _, err := s.lagAgainst(ctx, client, target)
		if err != nil {
			return err
		}
		if total == 0 {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("eventsource: waiting for %d records to be committed: %w", total, ctx.Err())
		}
	}
}

// lagAgainst compares the group's committed offsets with target offsets.
func (s *EventSource) lagAgainst(ctx context.Context, client sarama.Client, target map[int32]int64) (int64, map[int32]int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return 0, nil, fmt.Errorf("eventsource: admin: %w", err)
	}
	// Closing an admin made from a client would close the client: not done.
	parts := make([]int32, 0, len(target))
	for p := range target {
		parts = append(parts, p)
	}
	resp, err := admin.ListConsumerGroupOffsets(s.cfg.GroupID, map[string][]int32{s.cfg.Topic: parts})
	switch {
	case errors.Is(err, sarama.ErrGroupIDNotFound):
		resp = &sarama.OffsetFetchResponse{} // the group has not joined yet: nothing committed
	case err != nil:
		return 0, nil, fmt.Errorf("eventsource: committed offsets of group %s: %w", s.cfg.GroupID, err)
	}
	var total int64
	lag := make(map[int32]int64, len(target))
	for p, hw := range target {
		committed := int64(0)
		if b := resp.GetBlock(s.cfg.Topic, p); b != nil && b.Offset >= 0 {
			committed = b.Offset
		} else if oldest, err := client.GetOffset(s.cfg.Topic, p, sarama.OffsetOldest); err == nil {
			committed = oldest
		}
		if l := hw - committed; l > 0 {
			lag[p] = l
			total += l
		}
	}
	return total, lag, nil
}

// highWatermarks returns the next offset to be written, per partition.
func highWatermarks(client sarama.Client, topic string) (map[int32]int64, error) {
	if err := client.RefreshMetadata(topic); err != nil {
		return nil, fmt.Errorf("eventsource: metadata of %s: %w", topic, err)
	}
	parts, err := client.Partitions(topic)
	if err != nil {
		return nil, fmt.Errorf("eventsource: partitions of %s: %w", topic, err)
	}
	hwm := make(map[int32]int64, len(parts))
	for _, p := range parts {
		off, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return nil, fmt.Errorf("eventsource: high watermark of %s-%d: %w", topic, p, err)
		}
		hwm[p] = off
	}
	return hwm, nil
}
