package reliability

import (
	"context"
	"encoding/base64"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// TestLedgerDetectsLoss is the control for every fault test: a deliberately broken apply that
// silently skips two records (the insert of _id 7 and the delete of _id 9) while reporting
// success must be caught. The skipped delete is lost (it is in no archive object) and leaves a
// DR document without its archived delete; the skipped insert counts as applied (its invocation
// said so) but DR lacks the document, which the comparison with the primary catches. Without
// this, a ledger that always says "0 lost" would make every fault test pass.
func TestLedgerDetectsLoss(t *testing.T) {
	h := newHarness(t, harnessOptions{
		Handler: func(next applyFunc) applyFunc {
			return func(ctx context.Context, ev events.KafkaEvent) (apply.Summary, error) {
				for key, recs := range ev.Records {
					kept := recs[:0:0]
					for _, r := range recs {
						if !skipped(r) {
							kept = append(kept, r)
						}
					}
					ev.Records[key] = kept
				}
				return next(ctx, ev)
			}
		},
	})
	h.write(1)
	h.settle()
	l, _ := h.measure()
	if l.Lost != 1 || l.DRMismatch != 1 || l.DRUnexplained != 1 {
		t.Fatalf("ledger of a pipeline that skipped 2 records: %+v; want Lost 1, DRMismatch 1, DRUnexplained 1", l)
	}
}

// skipped picks the records the broken apply drops.
func skipped(r events.KafkaRecord) bool {
	value, err := base64.StdEncoding.DecodeString(r.Value)
	if err != nil {
		return false
	}
	ev, err := changeevent.Unmarshal(value)
	if err != nil {
		return false
	}
	id, err := ev.ID()
	if err != nil {
		return false
	}
	n, ok := id.AsInt64OK()
	return ok && (ev.Operation == changeevent.Insert && n == 7 || ev.Operation == changeevent.Delete && n == 9)
}
