package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// metricID is a CloudWatch metric's identity: namespace, name and the whole dimension set with
// its values. CloudWatch matches nothing less: a dimension more or less is another metric.
type metricID struct {
	Namespace, Name, Dimensions string
}

func newMetricID(namespace, name string, dims map[string]string) metricID {
	keys := slices.Sorted(maps.Keys(dims))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + dims[k]
	}
	return metricID{namespace, name, strings.Join(parts, ",")}
}

func (m metricID) String() string { return m.Namespace + " " + m.Name + " {" + m.Dimensions + "}" }

// emitted parses EMF lines (CloudWatch's embedded metric format): every metric of every
// dimension set of every line.
func emitted(lines []byte) (map[metricID]bool, error) {
	out := map[metricID]bool{}
	sc := bufio.NewScanner(bytes.NewReader(lines))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("not an EMF line: %q: %w", sc.Text(), err)
		}
		var aws struct {
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name string }
			}
		}
		raw, _ := json.Marshal(line["_aws"])
		if err := json.Unmarshal(raw, &aws); err != nil || len(aws.CloudWatchMetrics) == 0 {
			return nil, fmt.Errorf("no _aws.CloudWatchMetrics in %q", sc.Text())
		}
		for _, d := range aws.CloudWatchMetrics {
			for _, set := range d.Dimensions {
				dims := map[string]string{}
				for _, name := range set {
					v, ok := line[name].(string)
					if !ok {
						return nil, fmt.Errorf("dimension %s has no string value in %q", name, sc.Text())
					}
					dims[name] = v
				}
				for _, m := range d.Metrics {
					out[newMetricID(d.Namespace, m.Name, dims)] = true
				}
			}
		}
	}
	return out, sc.Err()
}

// watched is every DocdbDR metric the stack's alarms and dashboard read, by where it is read.
func watched(t *testing.T, s *stack) map[string]metricID {
	t.Helper()
	out := map[string]metricID{}
	for name, a := range s.tpl.GetAllCloudWatchAlarmResources() {
		if str(a.Namespace) != "DocdbDR" {
			continue
		}
		dims := map[string]string{}
		for _, d := range a.Dimensions {
			dims[d.Name] = d.Value
		}
		out[name] = newMetricID("DocdbDR", str(a.MetricName), dims)
	}
	body, _ := s.resource(t, "Dashboard")["Properties"].(map[string]any)["DashboardBody"].(string)
	var dash struct {
		Widgets []struct {
			Properties struct {
				Title   string
				Metrics [][]any
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &dash); err != nil {
		t.Fatalf("dashboard body is not JSON: %v\n%s", err, body)
	}
	for _, w := range dash.Widgets {
		for i, m := range w.Properties.Metrics {
			// [namespace, name, dim, value, ..., {options}]; "." shorthands are not used.
			var strs []string
			for _, v := range m {
				if s, ok := v.(string); ok {
					strs = append(strs, s)
				}
			}
			if len(strs) < 2 || len(strs)%2 != 0 || slices.Contains(strs, ".") {
				t.Fatalf("dashboard %q metric %d: %v is not [namespace, name, dimension, value...]", w.Properties.Title, i, m)
			}
			if strs[0] != "DocdbDR" {
				continue
			}
			dims := map[string]string{}
			for j := 2; j < len(strs); j += 2 {
				dims[strs[j]] = strs[j+1]
			}
			out[fmt.Sprintf("dashboard %q metric %d", w.Properties.Title, i)] = newMetricID(strs[0], strs[1], dims)
		}
	}
	return out
}

// unmatched lists what an alarm or a widget reads that nothing emitted.
func unmatched(watch map[string]metricID, got map[metricID]bool) []string {
	var out []string
	for where, id := range watch {
		if !got[id] {
			var near []string
			for e := range got {
				if e.Name == id.Name {
					near = append(near, e.String())
				}
			}
			sort.Strings(near)
			out = append(out, fmt.Sprintf("%s reads %s; emitted with that name: %v", where, id, near))
		}
	}
	sort.Strings(out)
	return out
}

// TestAlarmsWatchEmittedMetrics runs capture and apply (localrun, the shipped constructors) on
// the embedded stack with the scope the template gives them, for a whole database, one
// collection and a list, through a workload that makes every alarm's metric appear (inserts,
// updates, replaces, deletes, a rename, a drop, a poison record, a lease held by someone else),
// collects their EMF lines, and checks that every DocdbDR metric an alarm or the dashboard
// reads — namespace, name, the exact dimension set and its values, computed from the
// parameters — is one the functions emitted. A dimension changed on either side fails it; the
// test also shows that on a copy of the alarms and of the lines.
func TestAlarmsWatchEmittedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the embedded stack")
	}
	for _, c := range []struct{ name, collections string }{
		{"database", ""}, {"one-collection", "foo"}, {"collections", "baz,foo"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := render(t, required(map[string]any{"WatchCollections": c.collections}))
			lines := runWorkload(t, s)
			got, err := emitted(lines)
			if err != nil {
				t.Fatal(err)
			}
			watch := watched(t, s)
			if len(watch) < 10 {
				t.Fatalf("only %d DocdbDR metrics read by alarms and the dashboard: %v", len(watch), watch)
			}
			for _, u := range unmatched(watch, got) {
				t.Error(u)
			}
			distinct := map[metricID]bool{}
			for _, id := range watch {
				distinct[id] = true
			}
			t.Logf("%d metrics read by %d alarms and widgets, checked against the %d emitted (Scope %s)",
				len(distinct), len(watch), len(got), emittedDimensions(s, "capture")["Scope"])

			// Controls: a dimension changed on the template's side, or on the emitting side,
			// must be caught.
			changed := maps.Clone(watch)
			id := changed["HistoryLostAlarm"]
			id.Dimensions = "Function=capture"
			changed["HistoryLostAlarm"] = id
			if len(unmatched(changed, got)) == 0 {
				t.Error("control: an alarm without its Scope dimension was not caught")
			}
			renamed := bytes.ReplaceAll(lines, []byte(`"Scope":"`), []byte(`"Collection":"`))
			renamed = bytes.ReplaceAll(renamed, []byte(`"Scope"]`), []byte(`"Collection"]`))
			gotRenamed, err := emitted(renamed)
			if err != nil {
				t.Fatal(err)
			}
			if u := unmatched(watch, gotRenamed); len(u) == 0 {
				t.Error("control: capture emitting Collection instead of Scope was not caught")
			}
		})
	}
}

// runWorkload runs the functions with the stack's capture scope on a fresh embedded stack and
// returns every EMF line they wrote.
func runWorkload(t *testing.T, s *stack) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	// The scope and retention come from the template's environment for the capture function.
	env := function(t, s, "CaptureFunction").Environment.Variables
	overrides := map[string]string{
		"WATCH_COLLECTIONS": "", "IDLE_TIMEOUT": "200ms", "MAX_AWAIT": "50ms", "DEADLINE_MARGIN": "1s",
	}
	for _, k := range []string{"WATCH_DB", "WATCH_COLLECTIONS", "CHANGE_STREAM_RETENTION", "STATE_DB", "STATE_COLLECTION"} {
		if v, ok := env[k]; ok {
			overrides[k] = fmt.Sprint(v)
		}
	}
	var emf lockedBuffer
	p, err := localrun.New(ctx, localrun.Options{
		Getenv: localrun.Getenv(overrides, st.Env(), nil), ManualCapture: true, Metrics: &emf,
		Logger: quietLogger(), BatchingWindow: 50 * time.Millisecond, RetryBackoff: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sc := p.Scope()
	if err := docdb.EnableChangeStreams(ctx, p.Primary(), sc); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CaptureOnce(ctx, capture.Overrides{}); err != nil {
		t.Fatal(err)
	}
	p.Start(ctx)
	colls := sc.Collections
	if len(colls) == 0 {
		colls = []string{"foo"}
	}
	db := p.Primary().Database(sc.DB)
	do := func(what string, f func() error) {
		t.Helper()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	for _, name := range colls {
		c := db.Collection(name)
		do("insert", func() error {
			_, err := c.InsertMany(ctx, []any{bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 2}}, bson.D{{Key: "_id", Value: 3}}})
			return err
		})
		do("update", func() error {
			_, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 1}}}})
			return err
		})
		do("replace", func() error {
			_, err := c.ReplaceOne(ctx, bson.D{{Key: "_id", Value: 2}}, bson.D{{Key: "y", Value: 2}})
			return err
		})
		do("delete", func() error { _, err := c.DeleteOne(ctx, bson.D{{Key: "_id", Value: 3}}); return err })
	}
	// A record apply cannot decode: dead-lettered.
	produce(t, st, []byte("not BSON"))
	do("sync", func() error { return p.Sync(ctx) })

	// Another owner holds the lease: capture stops with lease-held.
	lease, err := p.Checkpoints().Acquire(ctx, sc.ID(), "another-capture", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := p.CaptureOnce(ctx, capture.Overrides{}); err != nil || sum.StopReason != capture.StopLeaseHeld {
		t.Fatalf("capture with the lease held: %s, %v", sum.StopReason, err)
	}
	if err := p.Checkpoints().Release(ctx, lease); err != nil {
		t.Fatal(err)
	}

	// A rename and a drop of a watched collection, archived by apply.
	first := db.Collection(colls[0])
	do("rename", func() error {
		return p.Primary().Database("admin").RunCommand(ctx, bson.D{{Key: "renameCollection", Value: sc.DB + "." + colls[0]},
			{Key: "to", Value: sc.DB + "." + colls[0] + "_renamed"}}).Err()
	})
	do("sync", func() error { return p.Sync(ctx) })
	do("recreate", func() error { _, err := first.InsertOne(ctx, bson.D{{Key: "_id", Value: 9}}); return err })
	do("sync", func() error { return p.Sync(ctx) })
	do("drop", func() error { return first.Drop(ctx) })
	do("sync", func() error { return p.Sync(ctx) })
	p.Stop()
	return emf.Bytes()
}

func produce(t *testing.T, st *devstack.Stack, value []byte) {
	t.Helper()
	cfg, err := kafka.SaramaConfig(kafka.Settings{Brokers: st.KafkaBrokers, Topic: st.Topic})
	if err != nil {
		t.Fatal(err)
	}
	pr, err := sarama.NewSyncProducer(st.KafkaBrokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if _, _, err := pr.SendMessage(&sarama.ProducerMessage{Topic: st.Topic, Key: sarama.StringEncoder("poison"), Value: sarama.ByteEncoder(value)}); err != nil {
		t.Fatal(err)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func quietLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }
