package capture

import (
	"testing"

	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
)

func pos(n int) checkpoint.Position { return checkpoint.Position{ResumeToken: token(n)} }

func posIndex(p checkpoint.Position) int {
	if len(p.ResumeToken) == 0 {
		return 0
	}
	return tokenIndex(p.ResumeToken)
}

// TestAcksAdvance: the position only ever names an event whose messages, and every earlier
// event's, are acknowledged, whatever order the partitions acknowledged in (the watermark jumps
// when a late partition catches up).
func TestAcksAdvance(t *testing.T) {
	type step struct {
		track  []int  // events to track: >0 its last message's sequence number, 0 unpublished
		acked  uint64 // then the watermark
		want   int    // position (event index) after Advance
		events int    // published events passed by this Advance
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{
			{track: []int{1, 2, 3}, acked: 1, want: 1, events: 1},
			{acked: 3, want: 3, events: 2},
		}},
		{"out of order: messages 2 and 3 acknowledged before 1", []step{
			{track: []int{1, 2, 3}, acked: 0, want: 0},
			{acked: 0, want: 0}, // 2 and 3 are in, 1 is not: the watermark has not moved
			{acked: 3, want: 3, events: 3},
		}},
		{"collection event needs its last copy", []step{
			{track: []int{1, 4, 5}, acked: 3, want: 1, events: 1}, // event 2 is messages 2..4
			{acked: 4, want: 2, events: 1},
			{acked: 5, want: 3, events: 1},
		}},
		{"unpublished events follow their predecessor", []step{
			{track: []int{0, 0}, acked: 0, want: 2}, // a quiet start: post-batch tokens pass at once
			{track: []int{1, 0, 2, 0}, acked: 1, want: 4, events: 1},
			{acked: 2, want: 6, events: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAcks(1 << 20)
			n := 0
			for i, s := range tt.steps {
				for _, last := range s.track {
					n++
					size := int64(0)
					if last > 0 {
						size = 10
					}
					a.Track(pos(n), uint64(last), size)
				}
				events := a.Advance(s.acked)
				if got := posIndex(a.Position()); got != s.want || events != s.events {
					t.Errorf("step %d: position %d, %d events passed; want %d, %d", i, got, events, s.want, s.events)
				}
			}
		})
	}
}

// TestAcksRoom: unacknowledged bytes stay within the limit; a message over the limit goes out
// alone; acknowledgements give the room back.
func TestAcksRoom(t *testing.T) {
	a := newAcks(100)
	if !a.Room(500) {
		t.Fatal("an oversized message must be able to go out alone")
	}
	a.Track(pos(1), 1, 60)
	if a.Room(50) || !a.Room(40) {
		t.Errorf("60 in flight, limit 100: Room(50)=%v Room(40)=%v", a.Room(50), a.Room(40))
	}
	a.Track(pos(2), 2, 40)
	a.Track(pos(3), 0, 0) // unpublished: no bytes
	if a.Room(1) || a.InFlight() != 100 {
		t.Errorf("full window: Room(1)=%v in flight %d", a.Room(1), a.InFlight())
	}
	a.Advance(1)
	if !a.Room(60) || a.Room(61) || a.InFlight() != 40 {
		t.Errorf("after acknowledging 60 bytes: Room(60)=%v Room(61)=%v in flight %d", a.Room(60), a.Room(61), a.InFlight())
	}
	a.Advance(2)
	if a.InFlight() != 0 || posIndex(a.Position()) != 3 {
		t.Errorf("all acknowledged: in flight %d, position %d", a.InFlight(), posIndex(a.Position()))
	}
}
