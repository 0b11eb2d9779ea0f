package deploy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// Two scopes are two stacks (docs/deployment.md "Several scopes"). What the stacks name in a
// shared space, per stack:
//   - every physical name a resource sets (FunctionName, LogGroupName, DashboardName, a Glue
//     database's name, ...): account- and region-wide;
//   - the topic and the mapping's consumer group: cluster-wide;
//   - capture's checkpoint document: <StateDb>.<StateCollection>, _id the scope's id, on the primary;
//   - apply's state database (ledger, frontiers, barriers, promote's fence) on DR;
//   - the archive: bucket and prefix;
//   - the scope itself: two stacks of overlapping scopes publish the shared namespaces twice;
//   - the metrics' dimension sets (alarms match a whole set).
type stackNames struct {
	names    map[string]string // what → the name, e.g. "AWS::Serverless::Function FunctionName (CaptureFunction)" → "orders-dr-capture"
	scope    scope.Scope
	bucket   string
	prefix   string
	captureD string // capture's metric dimensions, spelled
	applyD   string
}

func namesOf(t *testing.T, s *stack) stackNames {
	t.Helper()
	n := stackNames{names: map[string]string{}}
	for logical, r := range s.raw["Resources"].(map[string]any) {
		r := r.(map[string]any)
		typ, _ := r["Type"].(string)
		props, _ := r["Properties"].(map[string]any)
		for k, v := range props {
			// Resource names; MetricName and DatabaseName (a Glue table's database) name
			// something else.
			if name, ok := v.(string); ok && strings.HasSuffix(k, "Name") && k != "MetricName" && k != "DatabaseName" {
				n.names[typ+" "+k+" ("+logical+")"] = name
			}
		}
		if in, ok := props["DatabaseInput"].(map[string]any); ok && typ == "AWS::Glue::Database" {
			n.names["Glue database"] = fmt.Sprint(in["Name"])
		}
	}
	capture := function(t, s, "CaptureFunction").Environment.Variables
	apply := function(t, s, "ApplyFunction").Environment.Variables
	n.names["topic"] = capture["KAFKA_TOPIC"]
	if apply["KAFKA_TOPIC"] != capture["KAFKA_TOPIC"] {
		t.Fatalf("capture publishes to %q, apply reads %q", capture["KAFKA_TOPIC"], apply["KAFKA_TOPIC"])
	}
	n.names["consumer group"] = fmt.Sprint(mskEvent(t, s)["ConsumerGroupId"])
	n.names["apply's state database on DR"] = apply["DR_STATE_DB"]
	n.scope = stackScope(s)
	n.names["capture's checkpoint document"] = capture["STATE_DB"] + "." + capture["STATE_COLLECTION"] + " _id " + n.scope.ID()
	n.bucket, n.prefix = capture["ARCHIVE_BUCKET"], capture["ARCHIVE_PREFIX"]
	n.captureD = fmt.Sprint(emittedDimensions(s, "capture"))
	n.applyD = fmt.Sprint(emittedDimensions(s, "apply"))
	return n
}

// collisions lists what two stacks share that must not be shared.
func collisions(a, b stackNames) []string {
	var out []string
	for what, name := range a.names {
		if b.names[what] == name {
			out = append(out, what+" "+name)
		}
	}
	if a.scope.Overlaps(b.scope) {
		out = append(out, "scopes "+a.scope.ID()+" and "+b.scope.ID()+" overlap")
	}
	if a.bucket == b.bucket && (strings.HasPrefix(a.prefix, b.prefix) || strings.HasPrefix(b.prefix, a.prefix)) {
		out = append(out, "archive s3://"+a.bucket+"/"+a.prefix+" and s3://"+b.bucket+"/"+b.prefix)
	}
	if a.captureD == b.captureD {
		out = append(out, "capture metrics "+a.captureD)
	}
	if a.applyD == b.applyD {
		out = append(out, "apply metrics "+a.applyD)
	}
	slices.Sort(out)
	return out
}

// perScope is the parameters docs/deployment.md "Several scopes" tells the second stack to set.
func perScope(stackName, db, archiveBucket string) map[string]any {
	return required(map[string]any{
		stackNameOverride:   stackName,
		"WatchDb":           db,
		"KafkaTopic":        "docdbdr-" + db,
		"ConsumerGroupId":   "docdbdr-apply-" + db,
		"DrStateDb":         "docdbdr_" + db,
		"GlueDatabaseName":  "docdbdr_" + db,
		"CreateGlueTable":   "true",
		"ArchiveBucketName": archiveBucket,
		"ArchivePrefix":     "docdbdr/" + db + "/",
		"AlarmEmail":        "oncall@example.com",
	})
}

func TestTwoStacksDoNotCollide(t *testing.T) {
	orders := namesOf(t, render(t, perScope("orders-dr", "orders", "corp-dr-archive")))
	billing := namesOf(t, render(t, perScope("billing-dr", "billing", "corp-dr-archive")))
	if got := collisions(orders, billing); len(got) > 0 {
		t.Errorf("two stacks set up as docs/deployment.md says share:\n  %s", strings.Join(got, "\n  "))
	}
	if len(orders.names) < 10 {
		t.Errorf("only %d names found in a stack: %v", len(orders.names), orders.names)
	}

	// The check itself: a second stack left at the defaults (another scope, another stack name)
	// collides on every shared name the doc tells it to set.
	defaults := namesOf(t, render(t, required(map[string]any{stackNameOverride: "billing-dr", "WatchDb": "billing",
		"CreateGlueTable": "true", "ArchiveBucketName": "corp-dr-archive"})))
	first := namesOf(t, render(t, required(map[string]any{stackNameOverride: "orders-dr", "WatchDb": "orders",
		"CreateGlueTable": "true", "ArchiveBucketName": "corp-dr-archive"})))
	got := collisions(first, defaults)
	for _, want := range []string{"topic changevents", "consumer group docdbdr-apply", "apply's state database on DR docdbdr",
		"Glue database docdbdr", "archive s3://corp-dr-archive/docdbdr/", "apply metrics map[Function:apply Topic:changevents]"} {
		if !slices.ContainsFunc(got, func(c string) bool { return strings.HasPrefix(c, want) }) {
			t.Errorf("two stacks at the defaults: %q not reported; collisions: %v", want, got)
		}
	}
	// ...and the same stack name collides on its physical names.
	again := namesOf(t, render(t, perScope("orders-dr", "billing", "corp-dr-archive")))
	if got := collisions(orders, again); !slices.ContainsFunc(got, func(c string) bool { return strings.Contains(c, "orders-dr-capture") }) {
		t.Errorf("the same stack name twice: collisions %v; want the capture function's name", got)
	}
}
