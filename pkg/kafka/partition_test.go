package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// TestPartitionAgreesWithSarama: apply computes which partition owns a document with
// changeevent.Partition; capture's producer places it with sarama's hash partitioner. They must
// agree on every key and partition count.
func TestPartitionAgreesWithSarama(t *testing.T) {
	sp := sarama.NewHashPartitioner("changevents")
	for _, n := range []int32{1, 2, 3, 7, 12, 64} {
		for i := range 2000 {
			key := []byte(fmt.Sprintf("shop|n:%d", i))
			if i%3 == 0 {
				key = []byte(fmt.Sprintf(`shop|{"$oid":"62d70f2e9416e4a2538%05x"}`, i))
			}
			want, err := sp.Partition(&sarama.ProducerMessage{Key: sarama.ByteEncoder(key)}, n)
			if err != nil {
				t.Fatal(err)
			}
			if got := changeevent.Partition(key, n); got != want {
				t.Fatalf("key %q, %d partitions: changeevent.Partition = %d, sarama = %d", key, n, got, want)
			}
		}
	}
}

// TestPartitionerHashesLikeSaramaAndHonoursPins: the producer's partitioner places an unpinned
// message exactly where sarama's hash partitioner would (and so where changeevent.Partition says),
// and a pinned one on its partition; a pin beyond the partition count is an error.
func TestPartitionerHashesLikeSaramaAndHonoursPins(t *testing.T) {
	sp := sarama.NewHashPartitioner("changevents")
	ours := newPartitioner("changevents")
	if !ours.RequiresConsistency() {
		t.Error("a key must always map to the same partition")
	}
	for _, n := range []int32{1, 3, 12} {
		for i := range 500 {
			key := sarama.ByteEncoder(fmt.Sprintf("shop|n:%d", i))
			want, _ := sp.Partition(&sarama.ProducerMessage{Key: key}, n)
			got, err := ours.Partition(&sarama.ProducerMessage{Key: key, Metadata: &flight{}}, n)
			if err != nil || got != want {
				t.Fatalf("key %s, %d partitions: got %d (%v), sarama %d", key, n, got, err, want)
			}
			pin := int32(i) % n
			got, err = ours.Partition(&sarama.ProducerMessage{Key: key, Metadata: &flight{partition: pin, pinned: true}}, n)
			if err != nil || got != pin {
				t.Fatalf("pinned to %d of %d: got %d (%v)", pin, n, got, err)
			}
		}
	}
	if _, err := ours.Partition(&sarama.ProducerMessage{Key: sarama.ByteEncoder("k"), Metadata: &flight{partition: 3, pinned: true}}, 3); err == nil {
		t.Error("a pin to partition 3 of 3 was accepted")
	}
}

// TestPinnedMessagesLandOnTheirPartition: at the broker, pinned messages are where they were
// pinned and unpinned ones where changeevent.Partition says.
func TestPinnedMessagesLandOnTheirPartition(t *testing.T) {
	c := newCluster(t)
	p, err := NewPublisher(context.Background(), Settings{Brokers: c.ListenAddrs(), Topic: "changevents"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(5 * time.Second)
	n, err := p.Partitions()
	if err != nil || n != 3 {
		t.Fatalf("Partitions() = %d, %v; want 3", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := p.Begin(100)
	for i := range 30 {
		m := Message{Key: []byte(fmt.Sprintf("bar|n:%d", i)), Value: []byte(fmt.Sprint(i))}
		if i%5 == 0 {
			m.Key, m.Pinned, m.Partition = []byte("bar.foo"), true, int32(i/5)%n
		}
		if _, err := b.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range consume(t, c.ListenAddrs(), "changevents", 30) {
		var i int
		fmt.Sscan(string(r.Value), &i)
		want := changeevent.Partition(r.Key, n)
		if i%5 == 0 {
			want = int32(i/5) % n
		}
		if r.Partition != want {
			t.Errorf("message %d (key %s) in partition %d, want %d", i, r.Key, r.Partition, want)
		}
	}
}
