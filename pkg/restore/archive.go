package restore

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// ObjectStore is what the archive reader needs from S3; *archive.S3 implements it. ArchiveReader
// calls it from the goroutine that called the reader, one request at a time.
type ObjectStore interface {
	List(ctx context.Context, prefix string) ([]string, error)
	Get(ctx context.Context, key string) ([]byte, error)
}

// ArchiveReader reads the delete archive that apply writes (see pkg/archive's Layout): gzip'd
// NDJSON objects under <prefix>deletes/db=<db>/coll=<coll>/dt=<day>/. It implements
// DeleteArchive for restore and verify.InterceptedLog for verify.
type ArchiveReader struct {
	Store  ObjectStore
	Layout archive.Layout
}

// Records calls fn for every archived record of db (and coll, unless coll is "") whose cluster
// time is in [from, to); a zero from or to leaves that side open. Objects are read one at a time,
// in key order (collection, day, Kafka partition and offset); day folders outside the range are
// not read at all.
func (a ArchiveReader) Records(ctx context.Context, db, coll string, from, to time.Time, fn func(archive.Record) error) error {
	return a.area(ctx, "delete archive", a.Layout.DeletesPrefix(db, coll), db, coll, from, to, fn)
}

// Versions implements VersionArchive: every line of one collection in the version history and
// in the delete archive (whose deletes carry their before-images) with a cluster time in
// [from, to), the history's first. Lines come in key order within each area, not in cluster-time
// order.
func (a ArchiveReader) Versions(ctx context.Context, db, coll string, from, to time.Time, fn func(archive.Record) error) error {
	if err := a.area(ctx, "version history", a.Layout.HistoryPrefix(db, coll), db, coll, from, to, fn); err != nil {
		return err
	}
	return a.Records(ctx, db, coll, from, to, fn)
}

// Objects implements ObjectReader: every line of the objects at keys, in the order given.
func (a ArchiveReader) Objects(ctx context.Context, keys []string, fn func(archive.Record) error) error {
	for _, key := range keys {
		if err := a.object(ctx, key, fn); err != nil {
			return err
		}
	}
	return nil
}

// object reads the lines of one object.
func (a ArchiveReader) object(ctx context.Context, key string, fn func(archive.Record) error) error {
	body, err := a.Store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read archive object %s: %w", key, err)
	}
	lines, err := archive.DecodeObject(body)
	if err != nil {
		return fmt.Errorf("archive object %s: %w", key, err)
	}
	for i, line := range lines {
		rec, err := archive.ParseLine(line)
		if err != nil {
			return fmt.Errorf("archive object %s line %d: %w", key, i+1, err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	return nil
}

func (a ArchiveReader) area(ctx context.Context, what, prefix, db, coll string, from, to time.Time, fn func(archive.Record) error) error {
	keys, err := a.Store.List(ctx, prefix)
	if err != nil {
		return fmt.Errorf("list the %s of %s: %w", what, nsString(db, coll), err)
	}
	slices.Sort(keys)
	for _, key := range keys {
		if !dayInRange(key, from, to) {
			continue
		}
		err := a.object(ctx, key, func(rec archive.Record) error {
			at := time.Unix(rec.Timestamp, 0)
			if (!from.IsZero() && at.Before(from)) || (!to.IsZero() && !at.Before(to)) {
				return nil
			}
			if coll != "" && cmp.Or(rec.Coll, archive.CollectionlessName) != coll {
				return nil // a prefix match of a longer collection name
			}
			return fn(rec)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Intercepted implements verify.InterceptedLog: the archived deletes, drops and renames of ns,
// and the dropDatabase of its database.
func (a ArchiveReader) Intercepted(ctx context.Context, ns changeevent.Namespace, fn func(op string, id bson.RawValue) error) error {
	visit := func(rec archive.Record) error {
		if rec.Operation != string(changeevent.Delete) {
			return fn(rec.Operation, bson.RawValue{})
		}
		id, err := rec.IDValue()
		if err != nil {
			return err
		}
		return fn(rec.Operation, id)
	}
	if err := a.Records(ctx, ns.DB, ns.Coll, time.Time{}, time.Time{}, visit); err != nil {
		return err
	}
	return a.Records(ctx, ns.DB, archive.CollectionlessName, time.Time{}, time.Time{}, func(rec archive.Record) error {
		if rec.Operation != string(changeevent.DropDatabase) {
			return nil
		}
		return visit(rec)
	})
}

// dayInRange reports whether the dt=YYYY-MM-DD segment of key can hold records in [from, to).
// Keys without a readable day are kept (their records are filtered one by one).
func dayInRange(key string, from, to time.Time) bool {
	i := strings.Index(key, "/dt=")
	if i < 0 || len(key) < i+4+len(time.DateOnly) {
		return true
	}
	day, err := time.Parse(time.DateOnly, key[i+4:i+4+len(time.DateOnly)])
	if err != nil {
		return true
	}
	if !from.IsZero() && !day.Add(24*time.Hour).After(from.UTC()) {
		return false
	}
	if !to.IsZero() && !day.Before(to.UTC()) {
		return false
	}
	return true
}

func nsString(db, coll string) string {
	if coll == "" {
		return db
	}
	return db + "." + coll
}
