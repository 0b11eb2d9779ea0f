package scope

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
)

func TestParseID(t *testing.T) {
	tests := []struct {
		id      string
		want    Scope
		wantErr bool
	}{
		{id: "bar", want: Scope{DB: "bar"}},
		{id: "bar.foo", want: Scope{DB: "bar", Collections: []string{"foo"}}},
		{id: "bar.foo,bar.x.y", want: Scope{DB: "bar", Collections: []string{"foo", "x.y"}}},
		{id: "", wantErr: true},
		{id: "bar.foo,baz.x", wantErr: true},
		{id: "bar.", wantErr: true},
		{id: ".foo", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseID(tt.id)
		if (err != nil) != tt.wantErr || got.DB != tt.want.DB || !slices.Equal(got.Collections, tt.want.Collections) {
			t.Errorf("ParseID(%q) = %+v, %v; want %+v (error %v)", tt.id, got, err, tt.want, tt.wantErr)
		}
		if err == nil && got.ID() != tt.id && tt.id != "bar.foo,bar.x.y" {
			t.Errorf("ParseID(%q).ID() = %q", tt.id, got.ID())
		}
	}
}

func TestMissing(t *testing.T) {
	srv := mongoserver.New(mongoserver.Options{})
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Not pkg/docdb, which imports this package.
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(srv.URI()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	for _, c := range []string{"foo", "x"} {
		if _, err := client.Database("bar").Collection(c).InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		s    Scope
		want []string
	}{
		{Scope{DB: "bar"}, nil},
		{Scope{DB: "bar", Collections: []string{"foo", "x"}}, nil},
		{Scope{DB: "bra"}, []string{"database bra"}},
		{Scope{DB: "bra", Collections: []string{"fo"}}, []string{"database bra"}},
		{Scope{DB: "bar", Collections: []string{"fo", "x", "y"}}, []string{"collection bar.fo", "collection bar.y"}},
	}
	for _, tt := range tests {
		got, err := tt.s.Missing(ctx, client)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%s: Missing = %q, %v; want %q", tt.s, got, err, tt.want)
		}
	}
}

func TestOverlaps(t *testing.T) {
	bar, foo, fooX, y := Scope{DB: "bar"}, Scope{DB: "bar", Collections: []string{"foo"}},
		Scope{DB: "bar", Collections: []string{"foo", "x"}}, Scope{DB: "bar", Collections: []string{"y"}}
	tests := []struct {
		a, b Scope
		want bool
	}{
		{bar, foo, true}, {foo, bar, true}, {foo, fooX, true}, {foo, y, false}, {fooX, y, false},
		{bar, Scope{DB: "baz"}, false}, {foo, Scope{DB: "baz", Collections: []string{"foo"}}, false},
	}
	for _, tt := range tests {
		if got := tt.a.Overlaps(tt.b); got != tt.want {
			t.Errorf("%s overlaps %s = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
