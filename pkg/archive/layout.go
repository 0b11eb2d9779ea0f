// Package archive is the S3 side of docdb-dr: where intercepted deletes, dead letters and claim
// checks are stored (the key layout), what the stored objects hold (the record formats), and an
// S3-backed store to put and get them.
//
// Every key is a function of Kafka coordinates or content, never of the time of writing, so a
// redelivered batch overwrites the objects its first delivery wrote instead of adding new ones.
package archive

import (
	"fmt"
	"net/url"
	"time"
)

// Layout builds object keys under a key prefix (ARCHIVE_PREFIX, e.g. "docdbdr/"). The prefix is
// used as given: "docdbdr/" gives "docdbdr/deletes/...", "" gives "deletes/...".
type Layout struct {
	Prefix string
}

// CollectionlessName stands for the collection in the key of a dropDatabase event, which has none.
const CollectionlessName = "_"

// DeleteObject is the key of the object that holds the intercepted deletes (and drops, renames,
// dropDatabase) of one namespace from one Kafka partition in one apply batch:
//
//	<prefix>deletes/db=<db>/coll=<coll>/dt=YYYY-MM-DD/<topic>-<partition>-<firstOffset>.json.gz
//
// firstOffset is the offset of the first record of that namespace in the batch and day is that
// record's cluster time. The key deliberately has no last offset: a redelivered batch may be cut
// at a different end, and keying by the first offset alone makes the retry write the same object.
func (l Layout) DeleteObject(db, coll string, day time.Time, topic string, partition, firstOffset int64) string {
	if coll == "" {
		coll = CollectionlessName
	}
	return fmt.Sprintf("%sdeletes/db=%s/coll=%s/dt=%s/%s-%d-%d.json.gz",
		l.Prefix, segment(db), segment(coll), day.UTC().Format(time.DateOnly), segment(topic), partition, firstOffset)
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
