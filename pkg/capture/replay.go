package capture

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// DeadLetterStore is the bucket capture's dead letters live in (*archive.S3 implements it). Replay
// calls it from one goroutine.
type DeadLetterStore interface {
	Blob
	Get(ctx context.Context, key string) ([]byte, error)
	List(ctx context.Context, prefix string) ([]string, error)
}

// ReplayOptions say which dead letters to replay and how (`docdbdr replay-deadletters`).
type ReplayOptions struct {
	Store  DeadLetterStore
	Prefix string // ARCHIVE_PREFIX
	Scope  string // only this scope's dead letters (a scope id such as "bar.foo"); "": every scope
	// MaxMessageBytes is KAFKA_MAX_MESSAGE_BYTES: larger messages are claim-checked, as capture does.
	MaxMessageBytes int
	// Apply publishes; otherwise (a dry run) nothing is written. Publisher is required with Apply.
	Apply     bool
	Publisher *kafka.Publisher
	Now       func() time.Time // nil: time.Now

	convert func(bson.Raw) converted // nil: convertEvent (tests stand in a fixed converter)
}

// Replay statuses.
const (
	ReplayWould    = "would-replay"     // dry run: it converts and would be published
	ReplayDone     = "replayed"         // published and marked replayed
	ReplayFails    = "still-fails"      // the current code still cannot convert or publish it
	ReplayNothing  = "nothing-to-send"  // it converts to nothing capture publishes (invalidate, unknown operation)
	ReplayEarlier  = "already-replayed" // a replayed marker exists
	replayedFolder = "replayed/"
)

// ReplayItem is one dead letter in a replay report.
type ReplayItem struct {
	Key         string       `json:"key"`
	Scope       string       `json:"scope"`
	Operation   string       `json:"operationType"`
	Namespace   string       `json:"ns"`
	ClusterTime *ClusterTime `json:"clusterTime,omitempty"`
	Reason      string       `json:"reason"` // why capture dead-lettered it
	Status      string       `json:"status"`
	Error       string       `json:"error,omitempty"` // why it still fails
	Messages    int          `json:"messages,omitempty"`

	raw  bson.Raw        // the dead-lettered change event
	msgs []kafka.Message // what publishes it, once prepared
}

// ReplayReport is what Replay did or, in a dry run, would do.
type ReplayReport struct {
	Apply       bool         `json:"apply"`
	DeadLetters []ReplayItem `json:"deadLetters"`
	Replayed    int          `json:"replayed"`
	WouldReplay int          `json:"wouldReplay"`
	StillFails  int          `json:"stillFails"`
	Earlier     int          `json:"alreadyReplayed"`
}

// ReplayedKey is the marker Replay writes once it published a dead letter:
// <prefix>deadletter/capture/replayed/<the dead letter's key below deadletter/capture/>.
func ReplayedKey(prefix, key string) string {
	return DeadLetterPrefix(prefix) + replayedFolder + strings.TrimPrefix(key, DeadLetterPrefix(prefix))
}

// Replay re-publishes capture's dead letters, in cluster-time order, with the current code: each
// is converted from its raw bytes as capture would (claim-checked when too large, copied to every
// partition when it is a collection event); those that still fail are reported and left. With
// Apply, what converts is published, and once Kafka acknowledged all of it each dead letter gets a
// replayed marker, so that a second replay skips it. A failed publish aborts the producer and
// marks nothing (replaying again republishes: apply is idempotent).
//
// A replayed document change reaches apply after the document's later changes, so it can put an
// older version of the document back in DR; the report's cluster times say how old each one is.
func Replay(ctx context.Context, o ReplayOptions) (ReplayReport, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.convert == nil {
		o.convert = func(raw bson.Raw) converted { return convertEvent(raw, func(*changeevent.Event) bool { return true }) }
	}
	if o.Apply && o.Publisher == nil {
		return ReplayReport{}, errors.New("replay with apply needs a Kafka publisher")
	}
	rep := ReplayReport{Apply: o.Apply, DeadLetters: []ReplayItem{}}
	items, err := loadDeadLetters(ctx, o)
	if err != nil {
		return rep, err
	}
	var parts int32
	var toSend []int
	for i := range items {
		it := &items[i]
		if it.Status != "" {
			continue
		}
		if err := prepare(ctx, o, it, &parts); err != nil {
			return rep, err
		}
		if it.Status == ReplayWould {
			toSend = append(toSend, i)
		}
	}
	if o.Apply && len(toSend) > 0 {
		if err := publishReplay(ctx, o, items, toSend); err != nil {
			return rep, err
		}
	}
	for _, it := range items {
		switch it.Status {
		case ReplayWould:
			rep.WouldReplay++
		case ReplayDone:
			rep.Replayed++
		case ReplayFails:
			rep.StillFails++
		case ReplayEarlier:
			rep.Earlier++
		}
		rep.DeadLetters = append(rep.DeadLetters, it)
	}
	return rep, nil
}

// loadDeadLetters reads the dead letters of the selected scope, oldest cluster time first, with
// those already replayed marked so.
func loadDeadLetters(ctx context.Context, o ReplayOptions) ([]ReplayItem, error) {
	base := DeadLetterPrefix(o.Prefix)
	prefix := base
	if o.Scope != "" {
		prefix += "scope=" + url.PathEscape(o.Scope) + "/"
	}
	keys, err := o.Store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	marked, err := o.Store.List(ctx, base+replayedFolder)
	if err != nil {
		return nil, err
	}
	done := map[string]bool{}
	for _, m := range marked {
		done[m] = true
	}
	type loaded struct {
		item ReplayItem
		dl   DeadLetter
	}
	var all []loaded
	for _, key := range keys {
		if !strings.HasSuffix(key, ".json") || strings.HasPrefix(key, base+replayedFolder) {
			continue
		}
		body, err := o.Store.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		var dl DeadLetter
		if err := json.Unmarshal(body, &dl); err != nil || dl.Source != "capture" {
			return nil, fmt.Errorf("s3://%s/%s is not a capture dead letter (%v)", o.Store.Bucket(), key, err)
		}
		ct := dl.ClusterTime
		it := ReplayItem{Key: key, Scope: dl.Scope, Operation: dl.Operation, Namespace: changeevent.Namespace{DB: dl.DB, Coll: dl.Coll}.String(),
			ClusterTime: &ct, Reason: dl.Reason}
		if done[ReplayedKey(o.Prefix, key)] {
			it.Status = ReplayEarlier
		}
		all = append(all, loaded{it, dl})
	}
	slices.SortStableFunc(all, func(a, b loaded) int {
		return cmp.Or(cmp.Compare(a.dl.ClusterTime.T, b.dl.ClusterTime.T), cmp.Compare(a.dl.ClusterTime.I, b.dl.ClusterTime.I))
	})
	items := make([]ReplayItem, len(all))
	for i, l := range all {
		items[i] = l.item
		items[i].raw = l.dl.Raw
	}
	return items, nil
}

// prepare converts one dead letter's raw event into the messages that would publish it, and sets
// its status. parts caches the topic's partition count.
func prepare(ctx context.Context, o ReplayOptions, it *ReplayItem, parts *int32) error {
	c := o.convert(it.raw)
	if c.err != nil {
		it.Status, it.Error = ReplayFails, c.err.Error()
		return nil
	}
	if c.skip || c.ev.Operation == changeevent.Invalidate {
		it.Status = ReplayNothing
		return nil
	}
	msg, _, err := fitMessage(ctx, o.Store, o.Prefix, o.MaxMessageBytes, &c.ev, c.msg)
	switch {
	case isPoison(err):
		it.Status, it.Error = ReplayFails, err.Error()
		return nil
	case err != nil:
		return err // S3 failed writing a claim check
	}
	it.Status, it.msgs = ReplayWould, []kafka.Message{msg}
	if !c.ev.Operation.IsDocumentChange() {
		if o.Publisher == nil {
			it.Messages = 0 // one per partition, counted when publishing
			return nil
		}
		if *parts == 0 {
			if *parts, err = o.Publisher.Partitions(); err != nil {
				return err
			}
		}
		it.msgs = barrierCopies(&c.ev, msg, *parts)
	}
	it.Messages = len(it.msgs)
	return nil
}

// publishReplay publishes the prepared messages in order, waits for every acknowledgement and
// marks each dead letter replayed.
func publishReplay(ctx context.Context, o ReplayOptions, items []ReplayItem, send []int) error {
	n := 0
	for _, i := range send {
		n += len(items[i].msgs)
	}
	batch := o.Publisher.Begin(n)
	defer func() {
		batch.End()
		if why := batch.Unfinished(); why != nil {
			_ = o.Publisher.Abort(ctx)
		}
	}()
	for _, i := range send {
		for _, m := range items[i].msgs {
			if _, err := batch.Publish(ctx, m); err != nil {
				return fmt.Errorf("replay %s: %w", items[i].Key, err)
			}
		}
	}
	if err := batch.Flush(ctx); err != nil {
		return fmt.Errorf("replay: %w (nothing was marked replayed; replaying again republishes)", err)
	}
	now := o.Now().UTC()
	for _, i := range send {
		marker, _ := json.Marshal(map[string]any{"key": items[i].Key, "replayedAt": now, "messages": len(items[i].msgs)})
		if err := o.Store.Put(ctx, ReplayedKey(o.Prefix, items[i].Key), marker); err != nil {
			return fmt.Errorf("replay: published, but marking %s replayed failed: %w", items[i].Key, err)
		}
		items[i].Status = ReplayDone
	}
	return nil
}

// WriteJSON writes the report as one JSON document.
func (r ReplayReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for people.
func (r ReplayReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCLUSTER TIME\tOP\tNS\tMESSAGES\tKEY\tWHY")
	for _, it := range r.DeadLetters {
		ct := ""
		if it.ClusterTime != nil {
			ct = fmt.Sprintf("%s (%d,%d)", it.ClusterTime.Time.Format(time.RFC3339), it.ClusterTime.T, it.ClusterTime.I)
		}
		why := it.Reason
		if it.Error != "" {
			why = it.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", it.Status, ct, it.Operation, it.Namespace, it.Messages, it.Key, why)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verb := "would replay"
	if r.Apply {
		verb = "replayed"
	}
	n := r.WouldReplay
	if r.Apply {
		n = r.Replayed
	}
	_, err := fmt.Fprintf(w, "\n%d dead letters: %s %d, %d still fail, %d replayed before.%s\n", len(r.DeadLetters), verb, n, r.StillFails, r.Earlier,
		map[bool]string{true: "", false: " Dry run: add --apply to publish."}[r.Apply])
	return err
}
