package restore

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// TestAsOfRefusals: a T the archive cannot answer for is refused, naming the limit; nothing is
// read for writing.
func TestAsOfRefusals(t *testing.T) {
	ctx := context.Background()
	client := newCluster(t)
	ns := changeevent.Namespace{DB: "bar", Coll: "foo"}
	asOf := time.Date(2024, 5, 1, 10, 42, 0, 0, time.UTC)
	store := memStore{}
	rename := &changeevent.Event{Version: 1, Operation: changeevent.Rename, NS: ns, To: &changeevent.Namespace{DB: "bar", Coll: "old"},
		ClusterTime: primitive.Timestamp{T: uint32(asOf.Unix()) + 60, I: 1}, ResumeToken: must(bson.Marshal(bson.D{{Key: "_data", Value: "r"}}))}
	rec := must(archive.NewRecord(rename, archive.Kafka{}, nil))
	store[layout.ArchiveObject(ns, rename.ClusterTime, "r", "c")] = must(archive.EncodeObject([][]byte{must(rec.MarshalLine())}))
	base := AsOfOptions{Primary: client, DR: client, Archive: ArchiveReader{Store: store, Layout: layout}, NS: ns,
		Limits: fixedLimits(asOf.Add(-time.Hour)), Now: func() time.Time { return asOf.Add(48 * time.Hour) }}
	for _, tc := range []struct {
		name string
		edit func(*AsOfOptions)
		want string
	}{
		{"before the history", func(o *AsOfOptions) { o.AsOf = asOf.Add(-2 * time.Hour) }, "the earliest time that can be restored is 2024-05-01T09:42:01Z"},
		{"history off", func(o *AsOfOptions) { o.Limits = noHistory{} }, "is not archived"},
		{"beyond the retention", func(o *AsOfOptions) { o.Retention = 24 * time.Hour }, "older than the archive's retention"},
		{"across a rename", func(o *AsOfOptions) {}, "was renamed to bar.old at 2024-05-01 10:43:00"},
		{"ids and a filter", func(o *AsOfOptions) { o.IDs, o.Filter = []string{"1"}, must(bson.Marshal(bson.D{})) }, "not both"},
		{"into itself", func(o *AsOfOptions) { o.Into = "foo" }, "is the collection being restored"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			o.AsOf = asOf
			tc.edit(&o)
			if _, err := RunAsOf(ctx, o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
	o := base
	o.AsOf = asOf.Add(2 * time.Minute) // after the rename: answered
	if _, err := RunAsOf(ctx, o); err != nil {
		t.Errorf("a T after the rename: %v", err)
	}
}

type noHistory struct{}

func (noHistory) HistorySince(context.Context, changeevent.Namespace) (time.Time, bool, error) {
	return time.Time{}, false, nil
}
