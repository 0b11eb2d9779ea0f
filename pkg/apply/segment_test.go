package apply

import (
	"testing"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// TestTracksVersions: only a segment of inserts and replaces, without the history, skips the
// versions; an update, a delete or the history needs them.
func TestTracksVersions(t *testing.T) {
	items := func(ops ...changeevent.OperationType) []*item {
		var out []*item
		for _, op := range ops {
			out = append(out, &item{ev: changeevent.Event{Operation: op}})
		}
		return out
	}
	tests := []struct {
		name    string
		history bool
		items   []*item
		want    bool
	}{
		{"inserts", false, items(changeevent.Insert, changeevent.Insert), false},
		{"inserts and replaces", false, items(changeevent.Insert, changeevent.Replace), false},
		{"an update", false, items(changeevent.Insert, changeevent.Update), true},
		{"a delete last", false, items(changeevent.Insert, changeevent.Insert, changeevent.Delete), true},
		{"inserts with the history", true, items(changeevent.Insert), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &batch{h: &Handler{opts: Options{History: tt.history}}}
			if got := b.tracksVersions(tt.items); got != tt.want {
				t.Errorf("tracksVersions = %v, want %v", got, tt.want)
			}
		})
	}
}
