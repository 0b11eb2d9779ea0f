package scope

import (
	"testing"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

func TestID(t *testing.T) {
	tests := []struct {
		s    Scope
		want string
	}{
		{Scope{DB: "bar"}, "bar"},
		{Scope{DB: "bar", Collections: []string{"foo"}}, "bar.foo"},
		{Scope{DB: "bar", Collections: []string{"x", "foo"}}, "bar.foo,bar.x"},
	}
	for _, tt := range tests {
		if got := tt.s.ID(); got != tt.want {
			t.Errorf("%+v.ID() = %s, want %s", tt.s, got, tt.want)
		}
	}
}

func TestContains(t *testing.T) {
	list := Scope{DB: "bar", Collections: []string{"foo", "x"}}
	ev := func(op changeevent.OperationType, db, coll string, to *changeevent.Namespace) *changeevent.Event {
		return &changeevent.Event{Operation: op, NS: changeevent.Namespace{DB: db, Coll: coll}, To: to}
	}
	tests := []struct {
		name string
		s    Scope
		ev   *changeevent.Event
		want bool
	}{
		{"listed collection", list, ev(changeevent.Insert, "bar", "foo", nil), true},
		{"unlisted collection", list, ev(changeevent.Insert, "bar", "y", nil), false},
		{"other database", list, ev(changeevent.Insert, "baz", "foo", nil), false},
		{"dropDatabase of the scope's database", list, ev(changeevent.DropDatabase, "bar", "", nil), true},
		{"rename into a listed collection", list, ev(changeevent.Rename, "bar", "y", &changeevent.Namespace{DB: "bar", Coll: "x"}), true},
		{"rename between unlisted collections", list, ev(changeevent.Rename, "bar", "y", &changeevent.Namespace{DB: "bar", Coll: "z"}), false},
		{"whole database", Scope{DB: "bar"}, ev(changeevent.Delete, "bar", "any", nil), true},
	}
	for _, tt := range tests {
		if got := tt.s.Contains(tt.ev); got != tt.want {
			t.Errorf("%s: Contains = %v, want %v", tt.name, got, tt.want)
		}
	}
}
