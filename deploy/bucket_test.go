package deploy

import (
	"maps"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7/cloudformation/cloudwatch"
	"github.com/awslabs/goformation/v7/cloudformation/policies"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

func TestArchiveBucket(t *testing.T) {
	eachVariant(t, func(t *testing.T, s *stack) {
		buckets := s.tpl.GetAllS3BucketResources()
		if s.params["ArchiveBucketName"] != "" {
			if len(buckets) != 0 || s.has("ArchiveBucketPolicy") {
				t.Fatalf("an existing bucket was named, yet the stack creates %d buckets", len(buckets))
			}
			return
		}
		b, ok := buckets["ArchiveBucket"]
		if !ok || len(buckets) != 1 {
			t.Fatalf("buckets = %v, want ArchiveBucket only", buckets)
		}
		if b.AWSCloudFormationDeletionPolicy != policies.DeletionPolicy("Retain") ||
			b.AWSCloudFormationUpdateReplacePolicy != policies.UpdateReplacePolicy("Retain") {
			t.Errorf("the archive holds the only copy of intercepted deletes: DeletionPolicy and UpdateReplacePolicy must be Retain")
		}

		if b.BucketEncryption == nil || len(b.BucketEncryption.ServerSideEncryptionConfiguration) != 1 {
			t.Fatal("no default encryption")
		}
		sse := b.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault
		if s.params["ArchiveKmsKeyArn"] != "" {
			if sse.SSEAlgorithm != "aws:kms" || str(sse.KMSMasterKeyID) != archiveKey {
				t.Errorf("SSE = %s/%s, want aws:kms with ArchiveKmsKeyArn", sse.SSEAlgorithm, str(sse.KMSMasterKeyID))
			}
		} else if sse.SSEAlgorithm != "AES256" {
			t.Errorf("SSE = %s, want AES256", sse.SSEAlgorithm)
		}

		pab := b.PublicAccessBlockConfiguration
		if pab == nil || !isTrue(pab.BlockPublicAcls) || !isTrue(pab.BlockPublicPolicy) ||
			!isTrue(pab.IgnorePublicAcls) || !isTrue(pab.RestrictPublicBuckets) {
			t.Errorf("public access block = %+v, want all four true", pab)
		}
		if b.VersioningConfiguration == nil || b.VersioningConfiguration.Status != "Enabled" {
			t.Errorf("versioning = %+v, want Enabled", b.VersioningConfiguration)
		}

		if b.LifecycleConfiguration == nil || len(b.LifecycleConfiguration.Rules) != 1 {
			t.Fatal("want one lifecycle rule")
		}
		r := b.LifecycleConfiguration.Rules[0]
		if r.Status != "Enabled" || str(r.Prefix) != s.params["ArchivePrefix"] {
			t.Errorf("lifecycle rule status %s prefix %q, want Enabled on ArchivePrefix", r.Status, str(r.Prefix))
		}
		days := s.params["ArchiveTransitionDays"].(float64)
		if days == 0 && len(r.Transitions) != 0 || days != 0 && (len(r.Transitions) != 1 ||
			r.Transitions[0].StorageClass != s.params["ArchiveTransitionStorageClass"] ||
			r.Transitions[0].TransitionInDays == nil || float64(*r.Transitions[0].TransitionInDays) != days) {
			t.Errorf("transitions = %+v for ArchiveTransitionDays %v", r.Transitions, days)
		}
		exp := s.params["ArchiveExpirationDays"].(float64)
		if exp == 0 && r.ExpirationInDays != nil || exp != 0 && (r.ExpirationInDays == nil || float64(*r.ExpirationInDays) != exp) {
			t.Errorf("ExpirationInDays = %v for ArchiveExpirationDays %v", r.ExpirationInDays, exp)
		}
		if r.NoncurrentVersionExpiration == nil || r.AbortIncompleteMultipartUpload == nil {
			t.Errorf("lifecycle rule must expire noncurrent versions and abort incomplete uploads")
		}

		if s.params["ObjectLockMode"] == "NONE" {
			if b.ObjectLockEnabled != nil || b.ObjectLockConfiguration != nil {
				t.Errorf("Object Lock set although ObjectLockMode is NONE")
			}
		} else {
			c := b.ObjectLockConfiguration
			if !isTrue(b.ObjectLockEnabled) || c == nil || str(c.ObjectLockEnabled) != "Enabled" || c.Rule == nil ||
				c.Rule.DefaultRetention == nil || str(c.Rule.DefaultRetention.Mode) != s.params["ObjectLockMode"] ||
				c.Rule.DefaultRetention.Days == nil || float64(*c.Rule.DefaultRetention.Days) != s.params["ObjectLockRetentionDays"] {
				t.Errorf("Object Lock = %v %+v, want mode %v for %v days", b.ObjectLockEnabled, c,
					s.params["ObjectLockMode"], s.params["ObjectLockRetentionDays"])
			}
		}
	})
}

func isTrue(b *bool) bool { return b != nil && *b }

// TestBucketPolicyDeniesInsecureTransport checks that the created bucket refuses every request
// not made over TLS (and TLS older than 1.2), for every principal.
func TestBucketPolicyDeniesInsecureTransport(t *testing.T) {
	s := render(t, required(nil))
	pol := s.resource(t, "ArchiveBucketPolicy")["Properties"].(map[string]any)
	if pol["Bucket"] != "<ArchiveBucket>" {
		t.Fatalf("bucket policy applies to %v", pol["Bucket"])
	}
	var tls, tlsVersion bool
	for _, st := range pol["PolicyDocument"].(map[string]any)["Statement"].([]any) {
		m := st.(map[string]any)
		if m["Effect"] != "Deny" || m["Principal"] != "*" || m["Action"] != "s3:*" {
			continue
		}
		res := asList(m["Resource"])
		if len(res) != 2 || res[0] != "<ArchiveBucket.Arn>" || res[1] != "<ArchiveBucket.Arn>/*" {
			t.Errorf("statement %v covers %v, want the bucket and its objects", m["Sid"], res)
			continue
		}
		cond, _ := m["Condition"].(map[string]any)
		if b, ok := cond["Bool"].(map[string]any); ok && b["aws:SecureTransport"] == "false" {
			tls = true
		}
		if n, ok := cond["NumericLessThan"].(map[string]any); ok && n["s3:TlsVersion"] == "1.2" {
			tlsVersion = true
		}
	}
	if !tls {
		t.Error("no Deny of s3:* for aws:SecureTransport false")
	}
	if !tlsVersion {
		t.Error("no Deny of s3:* for s3:TlsVersion < 1.2")
	}

	q := s.resource(t, "ApplyFailureQueuePolicy")["Properties"].(map[string]any)
	st := q["PolicyDocument"].(map[string]any)["Statement"].([]any)[0].(map[string]any)
	if st["Effect"] != "Deny" || st["Action"] != "sqs:*" ||
		st["Condition"].(map[string]any)["Bool"].(map[string]any)["aws:SecureTransport"] != "false" {
		t.Errorf("on-failure queue policy does not deny insecure transport: %v", st)
	}
}

// TestGlueTables checks that each Glue table reads the area of the archive that pkg/archive
// writes: the delete archive and the version history, partitioned by db, coll and dt.
func TestGlueTables(t *testing.T) {
	s := render(t, required(map[string]any{"CreateGlueTable": "true", "ArchivePrefix": "dr/"}))
	tables := s.tpl.GetAllGlueTableResources()
	layout := archive.Layout{Prefix: "dr/"}
	ns := changeevent.Namespace{DB: "DB", Coll: "COLL"}
	ts := primitive.Timestamp{T: 1714564800, I: 1}
	for _, tc := range []struct {
		resource, name string
		key            string // an object key pkg/archive writes
	}{
		{"ArchiveDeletesTable", "deletes", layout.ArchiveObject(ns, ts, "e", "c")},
		{"ArchiveHistoryTable", "history", layout.HistoryObject(ns, ts, "e", "c")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, ok := tables[tc.resource]
			if !ok {
				t.Fatalf("no %s", tc.resource)
			}
			in := tbl.TableInput
			if in == nil || in.StorageDescriptor == nil {
				t.Fatal("table has no input or storage descriptor")
			}
			if str(in.Name) != tc.name {
				t.Errorf("Name = %q, want %q", str(in.Name), tc.name)
			}
			// The key's directory, with its partition values replaced by the projection's names.
			dir := tc.key[:strings.LastIndex(tc.key, "/")+1]
			tmpl := strings.NewReplacer("db=DB/", "db=${db}/", "coll=COLL/", "coll=${coll}/", "dt=2024-05-01/", "dt=${dt}/").Replace(dir)
			params := in.Parameters.(map[string]any)
			if got := params["storage.location.template"]; got != "s3://<ArchiveBucket>/"+tmpl {
				t.Errorf("storage.location.template = %v, want s3://<ArchiveBucket>/%s (pkg/archive's layout)", got, tmpl)
			}
			if got, want := str(in.StorageDescriptor.Location), "s3://<ArchiveBucket>/"+tmpl[:strings.Index(tmpl, "db=")]; got != want {
				t.Errorf("Location = %q, want %q", got, want)
			}
			var keys []string
			for _, k := range in.PartitionKeys {
				keys = append(keys, k.Name)
			}
			if strings.Join(keys, ",") != "db,coll,dt" {
				t.Errorf("partition keys = %v", keys)
			}
			if sd := in.StorageDescriptor.SerdeInfo; sd == nil || str(sd.SerializationLibrary) != "org.openx.data.jsonserde.JsonSerDe" {
				t.Errorf("SerDe = %+v, want the OpenX JSON SerDe", sd)
			}
		})
	}
	if n := len(render(t, required(nil)).tpl.GetAllGlueTableResources()); n != 0 {
		t.Errorf("%d Glue tables are created although CreateGlueTable is false", n)
	}
}

// alarmFor finds the alarm on a metric (namespace, name) with the given dimension value.
func alarmFor(t *testing.T, s *stack, namespace, metric, dimValue string) string {
	t.Helper()
	var found []string
	for name, a := range s.tpl.GetAllCloudWatchAlarmResources() {
		if str(a.Namespace) != namespace || str(a.MetricName) != metric {
			continue
		}
		for _, d := range a.Dimensions {
			if d.Value == dimValue {
				found = append(found, name)
			}
		}
	}
	if len(found) != 1 {
		t.Errorf("alarms on %s %s for %s = %v, want exactly one", namespace, metric, dimValue, found)
		return ""
	}
	return found[0]
}

// emittedDimensions is the dimension set each function emits its DocdbDR metrics with
// (pkg/capture: Function and Scope, the scope's id; pkg/apply: Function and Topic, the records'
// topic), for a stack's parameters. alarms_test.go checks it against what the functions really
// emit.
func emittedDimensions(s *stack, function string) map[string]string {
	if function != "capture" {
		return map[string]string{"Function": function, "Topic": s.params["KafkaTopic"].(string)}
	}
	return map[string]string{"Function": "capture", "Scope": stackScope(s).ID()}
}

// stackScope is the scope a stack's parameters select (WatchDb, WatchCollections).
func stackScope(s *stack) scope.Scope {
	sc := scope.Scope{DB: s.params["WatchDb"].(string)}
	if c, _ := s.params["WatchCollections"].(string); c != "" {
		sc.Collections = strings.Split(c, ",")
	}
	return sc
}

func TestAlarms(t *testing.T) {
	eachVariant(t, func(t *testing.T, s *stack) {
		emf := []struct{ metric, function string }{
			{"ReplicationLagSeconds", "capture"},
			{"HistoryLost", "capture"},
			{"LeaseHeld", "capture"},
			{"DeadLettered", "apply"},
		}
		for _, m := range emf {
			name := alarmFor(t, s, "DocdbDR", m.metric, m.function)
			if name == "" {
				continue
			}
			// CloudWatch matches a metric by its whole dimension set: the alarm must name every
			// dimension the function emits, with the same values, and no other.
			a := s.tpl.GetAllCloudWatchAlarmResources()[name]
			got := map[string]string{}
			for _, d := range a.Dimensions {
				got[d.Name] = d.Value
			}
			if want := emittedDimensions(s, m.function); !maps.Equal(got, want) {
				t.Errorf("%s dimensions = %v, want %v (what %s emits)", name, got, want, m.function)
			}
		}
		alarms := s.tpl.GetAllCloudWatchAlarmResources()
		lag := alarms[alarmFor(t, s, "DocdbDR", "ReplicationLagSeconds", "capture")]
		if lag == nil || lag.Threshold == nil || *lag.Threshold != s.params["ReplicationLagThresholdSeconds"] {
			t.Errorf("ReplicationLagSeconds alarm threshold is not ReplicationLagThresholdSeconds")
		}
		// Every capture run emits the lag: its absence (capture silent, or a Scope spelled
		// differently) must alarm.
		if lag != nil && str(lag.TreatMissingData) != "breaching" {
			t.Errorf("ReplicationLagAlarm TreatMissingData = %q, want breaching", str(lag.TreatMissingData))
		}
		lease := alarms[alarmFor(t, s, "DocdbDR", "LeaseHeld", "capture")]
		if lease == nil || lease.EvaluationPeriods != int(s.params["LeaseHeldAlarmMinutes"].(float64)) ||
			lease.DatapointsToAlarm == nil || *lease.DatapointsToAlarm != lease.EvaluationPeriods {
			t.Errorf("LeaseHeldAlarm must need LeaseHeldAlarmMinutes consecutive minutes of LeaseHeld")
		}
		for _, m := range []struct{ metric, fn string }{
			{"Errors", "<CaptureFunction>"}, {"Invocations", "<CaptureFunction>"},
			{"Errors", "<ApplyFunction>"}, {"OffsetLag", "<ApplyFunction>"},
		} {
			alarmFor(t, s, "AWS/Lambda", m.metric, m.fn)
		}
		alarmFor(t, s, "AWS/SQS", "ApproximateNumberOfMessagesVisible", "<ApplyFailureQueue.QueueName>")

		for name, a := range alarms {
			if str(a.AlarmDescription) == "" {
				t.Errorf("%s has no description", name)
			}
			if s.params["AlarmEmail"] != "" {
				if len(a.AlarmActions) != 1 || a.AlarmActions[0] != "<AlarmTopic>" {
					t.Errorf("%s AlarmActions = %v, want the alarm topic", name, a.AlarmActions)
				}
			} else if len(a.AlarmActions) != 0 {
				t.Errorf("%s AlarmActions = %v without an alarm topic", name, a.AlarmActions)
			}
		}
		if _, ok := s.tpl.GetAllSNSTopicResources()["AlarmTopic"]; ok != (s.params["AlarmEmail"] != "") {
			t.Errorf("AlarmTopic exists = %v with AlarmEmail %q", ok, s.params["AlarmEmail"])
		}
	})
}

// TestScopeDimensionSpelling checks the template's spelling of the Scope dimension against
// scope.ID for every number of collections the template accepts; a list out of order is spelled
// differently (the parameter's description asks for sorted names, and ReplicationLagAlarm then
// alarms on missing data instead of staying quiet).
func TestScopeDimensionSpelling(t *testing.T) {
	names := []string{"a1", "b2", "c3", "d4", "e5", "f6", "g7", "h8", "i9", "j10"}
	for n := 0; n <= len(names); n++ {
		s := render(t, required(map[string]any{"WatchCollections": strings.Join(names[:n], ",")}))
		a := s.tpl.GetAllCloudWatchAlarmResources()["HistoryLostAlarm"]
		want := emittedDimensions(s, "capture")["Scope"]
		if got := dimension(a.Dimensions, "Scope"); got != want {
			t.Errorf("%d collections: Scope %q, want %q", n, got, want)
		}
	}
	s := render(t, required(map[string]any{"WatchCollections": "foo,baz"}))
	if got := dimension(s.tpl.GetAllCloudWatchAlarmResources()["HistoryLostAlarm"].Dimensions, "Scope"); got == emittedDimensions(s, "capture")["Scope"] {
		t.Errorf("an unsorted list is spelled %q, like capture's sorted id: the check above cannot fail", got)
	}
	if _, err := renderFile("../template.yaml", required(map[string]any{"WatchCollections": strings.Join(append(names, "k11"), ",")})); err == nil {
		t.Error("11 collections accepted; the template spells at most 10")
	}
	if _, err := renderFile("../template.yaml", required(map[string]any{"WatchCollections": "foo, baz"})); err == nil {
		t.Error("a space in WatchCollections accepted; capture trims it, the alarms would not")
	}
}

func dimension(ds []cloudwatch.Alarm_Dimension, name string) string {
	for _, d := range ds {
		if d.Name == name {
			return d.Value
		}
	}
	return ""
}
