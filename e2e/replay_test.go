package e2e

import (
	"fmt"
	"math/rand/v2"

	"github.com/IBM/sarama"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
)

// rewindGroup moves the consumer group's committed offsets back, as an operator does with
// kafka-consumer-groups --reset-offsets (documented as safe): to the oldest offset when toOldest,
// else to a random offset between the oldest and the committed one, per partition. The group must
// have no members (the pipeline stopped). It returns how many records will be delivered again.
func rewindGroup(st *devstack.Stack, group string, rng *rand.Rand, toOldest bool) (int64, error) {
	client, err := sarama.NewClient(st.KafkaBrokers, sarama.NewConfig())
	if err != nil {
		return 0, fmt.Errorf("rewind: client: %w", err)
	}
	defer client.Close()
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		return 0, fmt.Errorf("rewind: offset manager: %w", err)
	}
	parts, err := client.Partitions(st.Topic)
	if err != nil {
		return 0, fmt.Errorf("rewind: partitions: %w", err)
	}
	var again int64
	var poms []sarama.PartitionOffsetManager
	for _, part := range parts {
		pom, err := om.ManagePartition(st.Topic, part)
		if err != nil {
			return 0, fmt.Errorf("rewind: partition %d: %w", part, err)
		}
		poms = append(poms, pom)
		oldest, err := client.GetOffset(st.Topic, part, sarama.OffsetOldest)
		if err != nil {
			return 0, fmt.Errorf("rewind: oldest offset of %d: %w", part, err)
		}
		committed, _ := pom.NextOffset()
		if committed <= oldest {
			continue // nothing committed yet: the group starts at the oldest anyway
		}
		to := oldest
		if !toOldest {
			to = oldest + rng.Int64N(committed-oldest+1)
		}
		pom.ResetOffset(to, "rewound by the e2e suite")
		again += committed - to
	}
	om.Commit()
	for _, pom := range poms {
		pom.AsyncClose()
		for err := range pom.Errors() {
			return 0, fmt.Errorf("rewind: %w", err)
		}
	}
	if err := om.Close(); err != nil {
		return 0, fmt.Errorf("rewind: close: %w", err)
	}
	return again, nil
}
