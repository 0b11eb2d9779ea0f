package capture

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
)

// DeadLetter is what capture writes to S3 for a change event it cannot convert or publish (a
// document nested deeper than the format allows, a document key too large for any Kafka message):
// the event's bytes exactly as the server sent them, its resume token and why, so that the run
// goes on and `docdbdr replay-deadletters` can publish it after a fix. It is JSON; Raw is base64.
type DeadLetter struct {
	Source      string          `json:"source"` // "capture" (apply writes its own dead letters)
	Scope       string          `json:"scope"`
	Reason      string          `json:"reason"`
	Operation   string          `json:"operationType,omitempty"`
	DB          string          `json:"db,omitempty"`
	Coll        string          `json:"coll,omitempty"`
	ClusterTime ClusterTime     `json:"clusterTime"`
	ResumeToken json.RawMessage `json:"resumeToken"` // canonical Extended JSON of the event's _id
	Raw         []byte          `json:"raw"`         // the change stream event's BSON
	At          time.Time       `json:"at"`          // when it was dead-lettered
}

// DeadLetterPrefix is where capture's dead letters live in the archive bucket: under the
// dead-letter prefix apply also uses, in a folder of their own.
func DeadLetterPrefix(prefix string) string { return prefix + "deadletter/capture/" }

// DeadLetterKey is the object of one dead-lettered event:
//
//	<prefix>deadletter/capture/scope=<scope>/dt=YYYY-MM-DD/<T>-<I>-<sha256(resume token)[:16]>.json
//
// It depends only on the event, so a run that dead-letters the same event again (after a crash)
// writes the same object.
func DeadLetterKey(prefix, scope string, ts primitive.Timestamp, token bson.Raw) string {
	sum := sha256.Sum256(token)
	return fmt.Sprintf("%sscope=%s/dt=%s/%d-%d-%s.json", DeadLetterPrefix(prefix), url.PathEscape(scope),
		changeevent.Time(ts).Format(time.DateOnly), ts.T, ts.I, hex.EncodeToString(sum[:8]))
}

// deadLetter sets aside an event that failed with err when err is poison: it writes the event to
// the dead-letter prefix and queues its position, so that the checkpoint moves past it once the
// events before it are acknowledged. Any other error, or a failure to write the dead letter,
// fails the run: an event is never skipped without a record of it.
func (r *run) deadLetter(ctx context.Context, raw bson.Raw, err error) error {
	if !isPoison(err) {
		return err
	}
	token, ok := raw.Lookup("_id").DocumentOK()
	if !ok {
		return fmt.Errorf("%w (and the event has no resume token, so it cannot be set aside)", err)
	}
	t, i, _ := raw.Lookup("clusterTime").TimestampOK()
	pos := checkpoint.Position{ResumeToken: token, ClusterTime: primitive.Timestamp{T: t, I: i}}
	ev := rawOutline(raw)
	if ev.NS.DB != "" && !r.opts.Scope.Contains(&ev) {
		// Out of scope: it would not be published even if it converted.
		r.sum.Skipped++
		r.acks.Track(pos, 0, 0)
		return nil
	}
	if r.c.deps.Blobs == nil {
		return fmt.Errorf("%w (and no dead-letter store is configured)", err)
	}
	tokenJSON, jerr := bson.MarshalExtJSON(token, true, false)
	if jerr != nil {
		tokenJSON = []byte(`null`)
	}
	dl := DeadLetter{Source: "capture", Scope: r.opts.Scope.ID(), Reason: err.Error(), Operation: string(ev.Operation),
		DB: ev.NS.DB, Coll: ev.NS.Coll, ClusterTime: ClusterTime{T: pos.ClusterTime.T, I: pos.ClusterTime.I, Time: changeevent.Time(pos.ClusterTime)},
		ResumeToken: tokenJSON, Raw: raw, At: r.c.deps.Now().UTC()}
	body, jerr := json.Marshal(dl)
	if jerr != nil {
		return fmt.Errorf("%w (and encoding its dead letter failed: %v)", err, jerr)
	}
	key := DeadLetterKey(r.opts.ArchivePrefix, dl.Scope, pos.ClusterTime, token)
	if perr := r.c.deps.Blobs.Put(ctx, key, body); perr != nil {
		return fmt.Errorf("%w (and writing its dead letter failed: %w)", err, perr)
	}
	r.c.deps.Logger.Warn("dead-lettered a change event capture cannot publish",
		slog.String("key", "s3://"+r.c.deps.Blobs.Bucket()+"/"+key), slog.String("op", dl.Operation),
		slog.String("ns", ev.NS.String()), slog.String("reason", dl.Reason))
	r.sum.DeadLettered++
	r.lastClusterTime = pos.ClusterTime
	r.acks.Track(pos, 0, 0)
	return nil
}

// rawOutline reads what it can of an event that does not convert: operation and namespaces.
func rawOutline(raw bson.Raw) changeevent.Event {
	var ev changeevent.Event
	if op, ok := raw.Lookup("operationType").StringValueOK(); ok {
		ev.Operation = changeevent.OperationType(op)
	}
	ns := func(key string) *changeevent.Namespace {
		d, ok := raw.Lookup(key).DocumentOK()
		if !ok {
			return nil
		}
		db, _ := d.Lookup("db").StringValueOK()
		coll, _ := d.Lookup("coll").StringValueOK()
		return &changeevent.Namespace{DB: db, Coll: coll}
	}
	if n := ns("ns"); n != nil {
		ev.NS = *n
	}
	ev.To = ns("to")
	return ev
}
