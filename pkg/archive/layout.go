// Package archive is the S3 side of docdb-dr: where intercepted deletes, dead letters and claim
// checks are stored (the key layout), what the stored objects hold (the record formats), and an
// S3-backed store to put and get them.
//
// Objects are write-once: every write is conditional (If-None-Match: *), so an object, once
// written, is never replaced. Which delete archive object holds which line is decided once, by
// apply's ledger in DR, not by where a Kafka batch was cut (docs/apply.md).
package archive

import (
	"fmt"
	"net/url"
	"time"

	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Layout builds object keys under a key prefix (ARCHIVE_PREFIX, e.g. "docdbdr/"). The prefix is
// used as given: "docdbdr/" gives "docdbdr/deletes/...", "" gives "deletes/...".
type Layout struct {
	Prefix string
}

// CollectionlessName stands for the collection in the key of a dropDatabase event, which has none.
const CollectionlessName = "_"

// ArchiveObject is the key of one delete archive object: intercepted events (deletes, drops,
// renames, dropDatabase) of one primary namespace, claimed together by one apply invocation:
//
//	<prefix>deletes/db=<db>/coll=<coll>/dt=YYYY-MM-DD/<T>-<I>-<eventId[0:16]>-<claim>.json.gz
//
// T and I are the cluster time of the object's first line, eventId that line's event id, and dt
// the cluster time's day (UTC); coll is "_" for dropDatabase. claim is a random value of the
// claiming invocation: two applies that race for overlapping events (a rebalance) never name the
// same object, so neither's conditional write can swallow the other's lines. The key is recorded
// in the ledger with each line it holds; readers take lines from objects and never need to derive
// a key.
func (l Layout) ArchiveObject(ns changeevent.Namespace, first primitive.Timestamp, eventID, claim string) string {
	coll := ns.Coll
	if coll == "" {
		coll = CollectionlessName
	}
	return l.object(DeletesArea, ns.DB, coll, first, eventID, claim)
}

// The areas of the layout: the first key segment after the prefix.
const (
	DeletesArea = "deletes" // intercepted deletes and collection events
	HistoryArea = "history" // version history (ARCHIVE_HISTORY=on)
)

// HistoryObject is the key of one version history object (ARCHIVE_HISTORY=on): the before-images
// of the document changes of one primary namespace claimed together by one apply invocation, in
// the delete archive's layout under its own area:
//
//	<prefix>history/db=<db>/coll=<coll>/dt=YYYY-MM-DD/<T>-<I>-<eventId[0:16]>-<claim>.json.gz
func (l Layout) HistoryObject(ns changeevent.Namespace, first primitive.Timestamp, eventID, claim string) string {
	return l.object(HistoryArea, ns.DB, ns.Coll, first, eventID, claim)
}

func (l Layout) object(area, db, coll string, first primitive.Timestamp, eventID, claim string) string {
	if len(eventID) > 16 {
		eventID = eventID[:16]
	}
	return fmt.Sprintf("%s%s/db=%s/coll=%s/dt=%s/%d-%d-%s-%s.json.gz",
		l.Prefix, area, segment(db), segment(coll), changeevent.Time(first).Format(time.DateOnly), first.T, first.I, eventID, segment(claim))
}

// HistoryPrefix is the key prefix of the version history objects of one collection.
func (l Layout) HistoryPrefix(db, coll string) string {
	return fmt.Sprintf("%s%s/db=%s/coll=%s/", l.Prefix, HistoryArea, segment(db), segment(coll))
}

// DeletesPrefix is the key prefix of every delete object of one namespace (coll "" means all
// collections of db), for listing by restore and verify.
func (l Layout) DeletesPrefix(db, coll string) string {
	if coll == "" {
		return fmt.Sprintf("%sdeletes/db=%s/", l.Prefix, segment(db))
	}
	return fmt.Sprintf("%sdeletes/db=%s/coll=%s/", l.Prefix, segment(db), segment(coll))
}

// DeadLetter is the key of the dead-letter object of one Kafka record that apply could not use:
//
//	<prefix>deadletter/dt=YYYY-MM-DD/<topic>-<partition>-<offset>.json
//
// day is the Kafka record's timestamp (a poison record may have no readable cluster time).
func (l Layout) DeadLetter(day time.Time, topic string, partition, offset int64) string {
	return fmt.Sprintf("%sdeadletter/dt=%s/%s-%d-%d.json",
		l.Prefix, day.UTC().Format(time.DateOnly), segment(topic), partition, offset)
}

// segment escapes a name for use as one key segment. Database, collection and topic names are
// normally left unchanged; a "/" or other reserved character is percent-encoded.
func segment(s string) string {
	return url.PathEscape(s)
}
