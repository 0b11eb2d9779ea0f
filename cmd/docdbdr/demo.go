package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
)

func init() {
	register(command{
		name:    "demo",
		summary: "run capture and apply on the local stack and replay the original write-up's 5 checks",
		run:     runDemo,
	})
}

// The demo's names are the original write-up's.
const (
	demoDB        = "bar"
	demoWatched   = "foo"
	demoUnwatched = "exa"
)

// demoOverrides are the variables the demo insists on, whatever the environment says: the
// scope, and short bounds so that an idle capture invocation ends quickly.
func demoOverrides() map[string]string {
	return map[string]string{
		"WATCH_DB":          demoDB,
		"WATCH_COLLECTIONS": demoWatched,
		"IDLE_TIMEOUT":      "300ms",
		"MAX_AWAIT":         "100ms",
		"CONTINUOUS_DRAIN":  "0",
		"DEADLINE_MARGIN":   "2s",
	}
}

// runDemo replays the original write-up's verification (docs/demo.md) through the real capture
// and apply code: on the embedded stack, or on real services when PRIMARY_URI or
// PRIMARY_SECRET_ARN is set in the environment.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	interval := fs.Duration("interval", 200*time.Millisecond, "capture schedule")
	stepTimeout := fs.Duration("step-timeout", 30*time.Second, "longest wait for one step's result")
	logLevel := fs.String("log-level", envOr("LOG_LEVEL", "warn"), "debug, info, warn or error (logs go to stderr)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr demo [flags]

Starts the embedded local stack (or, when PRIMARY_URI or PRIMARY_SECRET_ARN is set, uses the
services the environment names), enables change streams on bar.foo, runs capture on a schedule and
apply through the local event source mapping, and replays the original write-up's checks: insert,
update, an unwatched collection, an intercepted delete, and the archived delete record. Prints each
result and a pass/fail table; exits 1 when a check fails.

flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}

	env, err := openEnvironment(ctx, demoOverrides(), log)
	if err != nil {
		return err
	}
	defer env.close()
	fmt.Fprintf(stdout, "docdb-dr demo on %s\n", env.description)

	p, err := localrun.New(ctx, localrun.Options{
		Getenv:          env.getenv,
		CaptureInterval: *interval,
		BatchingWindow:  100 * time.Millisecond,
		GroupID:         "docdbdr-demo-" + primitive.NewObjectID().Hex(),
		Logger:          log,
	})
	if err != nil {
		return err
	}
	defer p.Close()

	d := &demo{p: p, out: stdout, timeout: *stepTimeout}
	if err := d.setup(ctx, env.embedded); err != nil {
		return err
	}
	p.Start(ctx)
	d.run(ctx)
	return d.report()
}

// environment is where the demo and the bench run: the embedded stack, or real services.
type environment struct {
	getenv      func(string) string
	embedded    bool
	description string
	close       func()
}

// openEnvironment starts the embedded stack unless the process environment already names a
// primary (PRIMARY_URI or PRIMARY_SECRET_ARN): then every variable comes from the environment.
// overrides win over both.
func openEnvironment(ctx context.Context, overrides map[string]string, log *slog.Logger) (environment, error) {
	if os.Getenv("PRIMARY_URI") != "" || os.Getenv("PRIMARY_SECRET_ARN") != "" {
		return environment{
			getenv:      localrun.Getenv(overrides, nil, os.Getenv),
			description: "the services named by the environment (PRIMARY_*, DR_*, KAFKA_*, ARCHIVE_*)",
			close:       func() {},
		}, nil
	}
	st, err := devstack.Start(ctx, devstack.Options{Logger: log.With("component", "devstack")})
	if err != nil {
		return environment{}, fmt.Errorf("start the embedded stack: %w", err)
	}
	return environment{
		// The stack's endpoints win over the process environment, which may still tune the rest
		// (LOG_LEVEL, INTERCEPT_POLICY, ...).
		getenv:      localrun.Getenv(overrides, st.Env(), os.Getenv),
		embedded:    true,
		description: fmt.Sprintf("the embedded local stack (DocumentDB-like primary, DR, Kafka %s, S3 %s)", strings.Join(st.KafkaBrokers, ","), st.S3Endpoint),
		close:       func() { _ = st.Close() },
	}, nil
}

// demo holds the run's state and the results of its checks.
type demo struct {
	p       *localrun.Pipeline
	out     io.Writer
	timeout time.Duration
	results []stepResult

	id       primitive.ObjectID // the document of steps 1, 2, 4 and 5
	afterSet bson.Raw           // the primary's document after step 2
}

type stepResult struct {
	n      int
	check  string
	ok     bool
	detail string
}

func (d *demo) primary(coll string) *mongo.Collection {
	return d.p.Primary().Database(demoDB).Collection(coll)
}

// setup enables change streams on bar.foo and runs a first capture invocation, which pins the
// checkpoint at "now" (START_AT): everything written afterwards is captured.
func (d *demo) setup(ctx context.Context, embedded bool) error {
	if !embedded {
		n, err := d.primary(demoWatched).CountDocuments(ctx, bson.D{})
		if err != nil {
			return fmt.Errorf("count %s.%s on the primary: %w", demoDB, demoWatched, err)
		}
		if n > 0 {
			return fmt.Errorf("%s.%s on the primary holds %d documents: the demo needs it empty (step 4 checks that it is)", demoDB, demoWatched, n)
		}
	}
	if err := docdb.EnableChangeStreams(ctx, d.p.Primary(), d.p.Scope()); err != nil {
		if embedded {
			return err
		}
		// A MongoDB primary has change streams on and no such command.
		fmt.Fprintf(d.out, "note: %v (fine on MongoDB)\n", err)
	}
	sum, err := d.p.CaptureOnce(ctx, capture.Overrides{})
	if err != nil {
		return fmt.Errorf("first capture invocation: %w", err)
	}
	fmt.Fprintf(d.out, "setup: change streams enabled on %s.%s (modifyChangeStreams); first capture invocation saved the checkpoint (%s)\n",
		demoDB, demoWatched, sum.StopReason)
	fmt.Fprintln(d.out, "       capture now runs on a schedule; apply through the local event source mapping")
	return nil
}

// run performs the five steps in order. A step whose precondition failed is still reported.
func (d *demo) run(ctx context.Context) {
	steps := []struct {
		check string
		do    func(context.Context) (string, error)
	}{
		{"insert {x:1} into bar.foo -> DR has {_id: same ObjectId, x: 1}", d.stepInsert},
		{"updateOne {x:1} -> {$set:{x:2}} -> DR has {_id, x: 2}", d.stepUpdate},
		{"insert {y:1} into unwatched bar.exa -> primary lists exa and foo, DR only foo", d.stepUnwatched},
		{"deleteOne {x:2} -> primary foo empty, DR still has {_id, x: 2}", d.stepDelete},
		{"the archive object holds the delete record", d.stepArchive},
	}
	for i, s := range steps {
		fmt.Fprintf(d.out, "\n[%d] %s\n", i+1, s.check)
		detail, err := s.do(ctx)
		r := stepResult{n: i + 1, check: s.check, ok: err == nil, detail: detail}
		if err != nil {
			r.detail = err.Error()
			fmt.Fprintf(d.out, "    FAIL: %v\n", err)
		}
		d.results = append(d.results, r)
	}
}

func (d *demo) stepInsert(ctx context.Context) (string, error) {
	res, err := d.primary(demoWatched).InsertOne(ctx, bson.D{{Key: "x", Value: int32(1)}})
	if err != nil {
		return "", fmt.Errorf("insert on the primary: %w", err)
	}
	d.id = res.InsertedID.(primitive.ObjectID)
	want, err := d.findRaw(ctx, d.p.Primary(), d.id)
	if err != nil {
		return "", err
	}
	return d.waitSameInDR(ctx, want)
}

func (d *demo) stepUpdate(ctx context.Context) (string, error) {
	if d.id.IsZero() {
		return "", errors.New("skipped: step 1 inserted nothing")
	}
	res, err := d.primary(demoWatched).UpdateOne(ctx, bson.D{{Key: "x", Value: int32(1)}}, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: int32(2)}}}})
	if err != nil {
		return "", fmt.Errorf("update on the primary: %w", err)
	}
	if res.ModifiedCount != 1 {
		return "", fmt.Errorf("update on the primary modified %d documents, want 1", res.ModifiedCount)
	}
	if d.afterSet, err = d.findRaw(ctx, d.p.Primary(), d.id); err != nil {
		return "", err
	}
	return d.waitSameInDR(ctx, d.afterSet)
}

func (d *demo) stepUnwatched(ctx context.Context) (string, error) {
	if _, err := d.primary(demoUnwatched).InsertOne(ctx, bson.D{{Key: "y", Value: int32(1)}}); err != nil {
		return "", fmt.Errorf("insert on the primary: %w", err)
	}
	inv, err := d.waitCaptured(ctx, time.Now())
	if err != nil {
		return "", err
	}
	fmt.Fprintf(d.out, "    capture invocation %s started after the exa insert and saved its checkpoint (stop: %s, events: %d)\n",
		inv.Owner, inv.Summary.StopReason, inv.Summary.Events)
	primary, err := d.p.Primary().Database(demoDB).ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return "", fmt.Errorf("list collections on the primary: %w", err)
	}
	dr, err := d.p.DR().Database(demoDB).ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return "", fmt.Errorf("list collections on DR: %w", err)
	}
	slices.Sort(primary)
	slices.Sort(dr)
	fmt.Fprintf(d.out, "    primary %s: %v\n    DR      %s: %v\n", demoDB, primary, demoDB, dr)
	if !slices.Equal(primary, []string{demoUnwatched, demoWatched}) {
		return "", fmt.Errorf("primary lists %v, want [%s %s]", primary, demoUnwatched, demoWatched)
	}
	if !slices.Equal(dr, []string{demoWatched}) {
		return "", fmt.Errorf("DR lists %v, want [%s]", dr, demoWatched)
	}
	return fmt.Sprintf("primary %v, DR %v", primary, dr), nil
}

func (d *demo) stepDelete(ctx context.Context) (string, error) {
	if d.afterSet == nil {
		return "", errors.New("skipped: step 2 did not update the document")
	}
	res, err := d.primary(demoWatched).DeleteOne(ctx, bson.D{{Key: "x", Value: int32(2)}})
	if err != nil {
		return "", fmt.Errorf("delete on the primary: %w", err)
	}
	if res.DeletedCount != 1 {
		return "", fmt.Errorf("delete on the primary deleted %d documents, want 1", res.DeletedCount)
	}
	if _, err := d.waitCaptured(ctx, time.Now()); err != nil {
		return "", err
	}
	n, err := d.primary(demoWatched).CountDocuments(ctx, bson.D{})
	if err != nil {
		return "", fmt.Errorf("count on the primary: %w", err)
	}
	fmt.Fprintf(d.out, "    primary %s.%s: %d documents\n", demoDB, demoWatched, n)
	if n != 0 {
		return "", fmt.Errorf("primary %s.%s has %d documents, want 0", demoDB, demoWatched, n)
	}
	got, err := d.findRaw(ctx, d.p.DR(), d.id)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return "", errors.New("DR no longer has the document: the delete was applied, not intercepted")
	case err != nil:
		return "", err
	}
	fmt.Fprintf(d.out, "    DR:      %s\n", extJSON(got))
	if !bytes.Equal(got, d.afterSet) {
		return "", fmt.Errorf("DR has %s, want %s", extJSON(got), extJSON(d.afterSet))
	}
	return "DR keeps " + extJSON(got), nil
}

func (d *demo) stepArchive(ctx context.Context) (string, error) {
	if d.id.IsZero() {
		return "", errors.New("skipped: step 1 inserted nothing")
	}
	layout := archive.Layout{Prefix: d.p.ApplyConfig().Archive.Prefix}
	store := d.p.Archive()
	keys, err := store.List(ctx, layout.DeletesPrefix(demoDB, demoWatched))
	if err != nil {
		return "", fmt.Errorf("list the archive: %w", err)
	}
	var found []string
	for _, key := range keys {
		body, err := store.Get(ctx, key)
		if err != nil {
			return "", fmt.Errorf("read the archive: %w", err)
		}
		lines, err := archive.DecodeObject(body)
		if err != nil {
			return "", fmt.Errorf("decode s3://%s/%s: %w", store.Bucket(), key, err)
		}
		for _, line := range lines {
			rec, err := archive.ParseLine(line)
			if err != nil {
				return "", fmt.Errorf("s3://%s/%s: %w", store.Bucket(), key, err)
			}
			id, err := rec.IDValue()
			if err != nil || rec.Operation != "delete" || id.Type != bson.TypeObjectID || id.ObjectID() != d.id {
				continue
			}
			fmt.Fprintf(d.out, "    s3://%s/%s\n    %s\n", store.Bucket(), key, line)
			found = append(found, string(line))
			before, err := rec.BeforeDocument()
			if err != nil {
				return "", err
			}
			if d.afterSet != nil && !bytes.Equal(before, d.afterSet) {
				return "", fmt.Errorf("the record's before-image is %s, want %s", extJSON(before), extJSON(d.afterSet))
			}
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("%d delete records for %s in %d archive objects, want exactly 1", len(found), d.id.Hex(), len(keys))
	}
	return found[0], nil
}

// waitSameInDR waits until DR holds the very bytes of the primary's document.
func (d *demo) waitSameInDR(ctx context.Context, want bson.Raw) (string, error) {
	fmt.Fprintf(d.out, "    primary: %s\n", extJSON(want))
	start := time.Now()
	var last bson.Raw
	err := waitUntil(ctx, d.timeout, "DR to hold the same document", func(ctx context.Context) (bool, error) {
		got, err := d.findRaw(ctx, d.p.DR(), d.id)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return false, nil
		}
		last = got
		return bytes.Equal(got, want), err
	})
	if err != nil {
		if last != nil {
			err = fmt.Errorf("%w (DR last had %s)", err, extJSON(last))
		}
		return "", err
	}
	fmt.Fprintf(d.out, "    DR:      %s (same bytes, after %s)\n", extJSON(want), time.Since(start).Round(time.Millisecond))
	return "DR has " + extJSON(want), nil
}

// waitCaptured waits for a capture invocation that started after since (so its checkpoint is
// past every write before since) and for apply to handle everything capture published: a check
// made afterwards can fail.
func (d *demo) waitCaptured(ctx context.Context, since time.Time) (localrun.CaptureResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	inv, err := d.p.WaitCapture(ctx, since)
	if err != nil {
		return inv, fmt.Errorf("timed out after %s: %w", d.timeout, err)
	}
	if err := d.p.WaitCaughtUp(ctx); err != nil {
		return inv, fmt.Errorf("timed out after %s: %w", d.timeout, err)
	}
	return inv, nil
}

func (d *demo) findRaw(ctx context.Context, c *mongo.Client, id primitive.ObjectID) (bson.Raw, error) {
	return c.Database(demoDB).Collection(demoWatched).FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Raw()
}

// report prints the pass/fail table and returns an error when a check failed.
func (d *demo) report() error {
	fmt.Fprintln(d.out)
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "step\tcheck\tresult")
	failed := 0
	for _, r := range d.results {
		res := "PASS"
		if !r.ok {
			res = "FAIL"
			failed++
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", r.n, r.check, res)
	}
	_ = tw.Flush()
	if failed > 0 {
		fmt.Fprintf(d.out, "%d of %d checks failed\n", failed, len(d.results))
		return fmt.Errorf("%d of %d checks failed", failed, len(d.results))
	}
	fmt.Fprintf(d.out, "all %d checks passed\n", len(d.results))
	return nil
}

// waitUntil polls cond every 50ms until it holds, returns an error, or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// extJSON renders a document as relaxed Extended JSON, e.g. {"_id":{"$oid":"..."},"x":1}.
func extJSON(doc bson.Raw) string {
	if doc == nil {
		return "null"
	}
	b, err := bson.MarshalExtJSON(doc, false, false)
	if err != nil {
		return doc.String()
	}
	return string(b)
}
