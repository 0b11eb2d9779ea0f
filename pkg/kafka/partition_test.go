package kafka

import (
	"fmt"
	"testing"

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
