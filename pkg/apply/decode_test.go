package apply

import (
	"testing"

	"github.com/aws/aws-lambda-go/events"
)

// TestPartitionRecords checks the order partitionRecords gives (topic, partition, offset) and that
// it never reorders the event it was given.
func TestPartitionRecords(t *testing.T) {
	rec := func(topic string, p, off int64) events.KafkaRecord {
		return events.KafkaRecord{Topic: topic, Partition: p, Offset: off}
	}
	tests := []struct {
		name string
		in   map[string][]events.KafkaRecord
		want [][]int64 // offsets, by partition in order
	}{
		{"in order", map[string][]events.KafkaRecord{"t-1": {rec("t", 1, 5), rec("t", 1, 6)}, "t-0": {rec("t", 0, 1), rec("t", 0, 2)}},
			[][]int64{{1, 2}, {5, 6}}},
		{"out of order", map[string][]events.KafkaRecord{"t-0": {rec("t", 0, 9), rec("t", 0, 3), rec("t", 0, 4)}},
			[][]int64{{3, 4, 9}}},
		{"topics first", map[string][]events.KafkaRecord{"b-0": {rec("b", 0, 1)}, "a-2": {rec("a", 2, 7)}, "t-0": {}},
			[][]int64{{7}, {1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := map[string][]int64{}
			for k, recs := range tc.in {
				for _, r := range recs {
					before[k] = append(before[k], r.Offset)
				}
			}
			parts := partitionRecords(events.KafkaEvent{Records: tc.in})
			if len(parts) != len(tc.want) {
				t.Fatalf("%d partitions, want %d", len(parts), len(tc.want))
			}
			for p, recs := range parts {
				if len(recs) != len(tc.want[p]) {
					t.Fatalf("partition %d: %d records, want %d", p, len(recs), len(tc.want[p]))
				}
				for i, r := range recs {
					if r.Offset != tc.want[p][i] {
						t.Errorf("partition %d record %d: offset %d, want %d", p, i, r.Offset, tc.want[p][i])
					}
				}
			}
			for k, recs := range tc.in {
				for i, r := range recs {
					if r.Offset != before[k][i] {
						t.Errorf("the event's %s was reordered: record %d has offset %d, was %d", k, i, r.Offset, before[k][i])
					}
				}
			}
		})
	}
}
