package deploy

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/awslabs/goformation/v7/cloudformation/serverless"

	"github.com/docdb-dr/docdb-dr/pkg/config"
)

// Values for the parameters that have no default.
const (
	primarySecret = "arn:aws:secretsmanager:us-west-2:123456789012:secret:docdbdr/primary-AbCdEf"
	drSecret      = "arn:aws:secretsmanager:us-west-2:123456789012:secret:docdbdr/dr-GhIjKl"
	kafkaSecret   = "arn:aws:secretsmanager:us-west-2:123456789012:secret:AmazonMSK_docdbdr-MnOpQr"
	secretsKey    = "arn:aws:kms:us-west-2:123456789012:key/1111aaaa-2222-bbbb-3333-cccc4444dddd"
	archiveKey    = "arn:aws:kms:us-west-2:123456789012:key/5555eeee-6666-ffff-7777-0000aaaa1111"
	clusterARN    = "arn:aws:kafka:us-west-2:123456789012:cluster/docdbdr/6f9d2c1e-0c5b-4f7e-9b1a-2d3c4e5f6a7b-2"
	brokers       = "b-1.docdbdr.abc123.c2.kafka.us-west-2.amazonaws.com:9098"
)

// required returns the parameters without default plus the given overrides.
func required(extra map[string]any) map[string]any {
	p := map[string]any{
		"SubnetIds":             []any{"subnet-0a", "subnet-0b"},
		"SecurityGroupIds":      []any{"sg-0c"},
		"PrimarySecretArn":      primarySecret,
		"DrSecretArn":           drSecret,
		"MskClusterArn":         clusterARN,
		"KafkaBootstrapBrokers": brokers,
		"WatchDb":               "bar",
	}
	for k, v := range extra {
		p[k] = v
	}
	return p
}

// variants are the parameter sets every structural test runs on: each condition of the template
// is exercised both ways by at least one of them.
var variants = []struct {
	name   string
	params map[string]any
}{
	{"defaults", required(nil)},
	{"scram+existing-bucket", required(map[string]any{
		"KafkaAuth": "scram-sha-512", "KafkaSecretArn": kafkaSecret, "SecretsKmsKeyArn": secretsKey,
		"ArchiveBucketName": "corp-dr-archive", "ArchivePrefix": "dr/prod/",
		"WatchCollections": "baz,foo", "NamespaceMap": "bar.foo=bar_dr.foo",
	})},
	{"tls-only+object-lock+kms+alarms+glue", required(map[string]any{
		"KafkaAuth": "none", "ObjectLockMode": "COMPLIANCE", "ObjectLockRetentionDays": float64(30),
		"ArchiveKmsKeyArn": archiveKey, "ArchiveTransitionDays": float64(0), "ArchiveExpirationDays": float64(3650),
		"AlarmEmail": "oncall@example.com", "CreateGlueTable": "true", "ArchiveHistory": "on",
	})},
}

func eachVariant(t *testing.T, f func(t *testing.T, s *stack)) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) { f(t, render(t, v.params)) })
	}
}

func function(t *testing.T, s *stack, name string) *serverless.Function {
	t.Helper()
	fn, err := s.tpl.GetServerlessFunctionWithName(name)
	if err != nil {
		t.Fatal(err)
	}
	return fn
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func TestTemplateRendersForEveryVariant(t *testing.T) {
	eachVariant(t, func(t *testing.T, s *stack) {
		if len(s.tpl.Resources) == 0 {
			t.Fatal("no resources")
		}
		if got := str(s.tpl.Transform.String); got != "AWS::Serverless-2016-10-31" {
			t.Errorf("Transform = %q", got)
		}
	})
}

func TestRequiredParametersHaveNoDefault(t *testing.T) {
	// Deploying without them must fail at CloudFormation, not at the functions' cold start.
	if _, err := renderFile("../template.yaml", map[string]any{}); err == nil ||
		!strings.Contains(err.Error(), "no Default and no override") {
		t.Fatalf("rendering without the required parameters: err = %v", err)
	}
}

func TestFunctions(t *testing.T) {
	eachVariant(t, func(t *testing.T, s *stack) {
		for _, name := range []string{"CaptureFunction", "ApplyFunction"} {
			fn := function(t, s, name)
			if got := str(fn.Runtime); got != "provided.al2023" {
				t.Errorf("%s Runtime = %q", name, got)
			}
			if !slices.Equal(fn.Architectures, []string{"arm64"}) {
				t.Errorf("%s Architectures = %v", name, fn.Architectures)
			}
			if got := str(fn.Handler); got != "bootstrap" {
				t.Errorf("%s Handler = %q", name, got)
			}
			if got := fn.AWSCloudFormationMetadata["BuildMethod"]; got != "makefile" {
				t.Errorf("%s Metadata.BuildMethod = %v (the Makefile's build-%s target builds it)", name, got, name)
			}
			if fn.CodeUri == nil || str(fn.CodeUri.String) != "." {
				t.Errorf("%s CodeUri must be the repository root, where the Makefile is", name)
			}
			if fn.VpcConfig == nil ||
				!slices.Equal(fn.VpcConfig.SubnetIds, []string{"subnet-0a", "subnet-0b"}) ||
				!slices.Equal(fn.VpcConfig.SecurityGroupIds, []string{"sg-0c"}) {
				t.Errorf("%s VpcConfig = %+v, want the SubnetIds and SecurityGroupIds parameters", name, fn.VpcConfig)
			}
			role := strings.TrimSuffix(name, "Function") + "Role"
			if got := str(fn.Role); got != "<"+role+".Arn>" {
				t.Errorf("%s Role = %q, want its own role %s", name, got, role)
			}
			if fn.Policies != nil {
				t.Errorf("%s has SAM Policies; permissions belong in %s", name, role)
			}
			if fn.Timeout == nil || fn.MemorySize == nil {
				t.Errorf("%s has no Timeout or MemorySize", name)
			}
		}

		capture := function(t, s, "CaptureFunction")
		if capture.ReservedConcurrentExecutions == nil || *capture.ReservedConcurrentExecutions != 1 {
			t.Errorf("capture ReservedConcurrentExecutions is not 1")
		}
		if *capture.Timeout != int(s.params["CaptureTimeout"].(float64)) {
			t.Errorf("capture Timeout = %d, want the CaptureTimeout parameter", *capture.Timeout)
		}
		if c := capture.EventInvokeConfig; c == nil || c.MaximumRetryAttempts == nil || *c.MaximumRetryAttempts != 0 {
			t.Errorf("capture EventInvokeConfig = %+v, want MaximumRetryAttempts 0 (the next run resumes)", c)
		}
		apply := function(t, s, "ApplyFunction")
		if *apply.Timeout > 840 {
			t.Errorf("apply Timeout = %d: MSK event source mappings allow at most 14 minutes", *apply.Timeout)
		}
	})
}

func TestCaptureSchedule(t *testing.T) {
	eachVariant(t, func(t *testing.T, s *stack) {
		fn := function(t, s, "CaptureFunction")
		if len(fn.Events) != 1 {
			t.Fatalf("capture events = %v, want one schedule", fn.Events)
		}
		for name, ev := range fn.Events {
			if ev.Type != "Schedule" {
				t.Fatalf("capture event %s has type %s", name, ev.Type)
			}
			if ev.Properties == nil || ev.Properties.ScheduleEvent == nil {
				t.Fatalf("capture event %s is not a valid SAM Schedule (unknown property?)", name)
			}
			if got := ev.Properties.ScheduleEvent.Schedule; got != "rate(1 minute)" {
				t.Errorf("Schedule = %q, want the default rate(1 minute)", got)
			}
		}
	})
	s := render(t, required(map[string]any{"ScheduleExpression": "rate(5 minutes)"}))
	for _, ev := range function(t, s, "CaptureFunction").Events {
		if got := ev.Properties.ScheduleEvent.Schedule; got != "rate(5 minutes)" {
			t.Errorf("Schedule = %q, want the ScheduleExpression parameter", got)
		}
	}
}

// mskEvent returns the apply function's MSK event properties as resolved JSON: goformation v7
// has no type for SAM's MSK event source.
func mskEvent(t *testing.T, s *stack) map[string]any {
	t.Helper()
	events := s.resource(t, "ApplyFunction")["Properties"].(map[string]any)["Events"].(map[string]any)
	if len(events) != 1 {
		t.Fatalf("apply events = %v, want one MSK event", events)
	}
	for name, ev := range events {
		ev := ev.(map[string]any)
		if ev["Type"] != "MSK" {
			t.Fatalf("apply event %s has type %v", name, ev["Type"])
		}
		return ev["Properties"].(map[string]any)
	}
	return nil
}

func TestApplyMSKEvent(t *testing.T) {
	eachVariant(t, func(t *testing.T, s *stack) {
		p := mskEvent(t, s)
		want := map[string]any{
			"Stream":                         clusterARN,
			"StartingPosition":               "TRIM_HORIZON",
			"BatchSize":                      s.params["BatchSize"],
			"MaximumBatchingWindowInSeconds": s.params["MaximumBatchingWindowInSeconds"],
			"ConsumerGroupId":                s.params["ConsumerGroupId"],
		}
		for k, v := range want {
			if p[k] != v {
				t.Errorf("MSK %s = %v, want %v", k, p[k], v)
			}
		}
		if topics, _ := p["Topics"].([]any); len(topics) != 1 || topics[0] != s.params["KafkaTopic"] {
			t.Errorf("MSK Topics = %v, want [KafkaTopic]", p["Topics"])
		}
		allowed := []string{"Stream", "Topics", "StartingPosition", "StartingPositionTimestamp", "BatchSize",
			"MaximumBatchingWindowInSeconds", "ConsumerGroupId", "SourceAccessConfigurations",
			"DestinationConfig", "Enabled", "FilterCriteria", "KmsKeyArn", "ProvisionedPollerConfig", "SchemaRegistryConfig",
			"BisectBatchOnFunctionError", "MaximumRetryAttempts", "MaximumRecordAgeInSeconds"}
		for k := range p {
			if !slices.Contains(allowed, k) {
				t.Errorf("MSK event property %s is not a SAM MSK property", k)
			}
		}

		sac, hasSAC := p["SourceAccessConfigurations"].([]any)
		if s.params["KafkaAuth"] == "scram-sha-512" {
			if !hasSAC || len(sac) != 1 {
				t.Fatalf("SCRAM: SourceAccessConfigurations = %v", p["SourceAccessConfigurations"])
			}
			c := sac[0].(map[string]any)
			if c["Type"] != "SASL_SCRAM_512_AUTH" || c["URI"] != kafkaSecret {
				t.Errorf("SCRAM access configuration = %v, want SASL_SCRAM_512_AUTH with the KafkaSecretArn", c)
			}
		} else if _, present := p["SourceAccessConfigurations"]; present {
			t.Errorf("%s: SourceAccessConfigurations = %v, want none (the ESM uses the execution role)",
				s.params["KafkaAuth"], p["SourceAccessConfigurations"])
		}

		dest, _ := p["DestinationConfig"].(map[string]any)
		onFailure, _ := dest["OnFailure"].(map[string]any)
		if onFailure["Destination"] != "<ApplyFailureQueue.Arn>" {
			t.Fatalf("DestinationConfig = %v, want OnFailure to the ApplyFailureQueue", p["DestinationConfig"])
		}
		if _, ok := onFailure["Type"]; ok {
			t.Errorf("OnFailure.Type makes SAM add its own policy; the apply role grants sqs:SendMessage")
		}
		if !grants(t, s, "ApplyRole", "sqs:SendMessage", "<ApplyFailureQueue.Arn>") {
			t.Errorf("ApplyRole cannot send to the on-failure queue")
		}
	})
}

// notDeployed are variables that pkg/config reads but the template deliberately never sets.
var notDeployed = map[string]string{
	"PRIMARY_URI":    "credentials come from Secrets Manager (PRIMARY_SECRET_ARN), never from the environment",
	"DR_URI":         "credentials come from Secrets Manager (DR_SECRET_ARN)",
	"KAFKA_USERNAME": "local runs only; MSK SCRAM credentials come from KAFKA_SECRET_ARN",
	"KAFKA_PASSWORD": "local runs only; MSK SCRAM credentials come from KAFKA_SECRET_ARN",
	"S3_ENDPOINT":    "local stack / MinIO only; Lambda uses the regional S3 endpoint",
	"ALLOW_INSECURE": "TLS is always required in AWS",
}

// conditional are variables set only for some parameter values (AWS::NoValue otherwise), with
// the variants that must set them.
var conditional = map[string]func(p map[string]any) bool{
	"KAFKA_SECRET_ARN":  func(p map[string]any) bool { return p["KafkaAuth"] == "scram-sha-512" },
	"WATCH_COLLECTIONS": func(p map[string]any) bool { return p["WatchCollections"] != "" },
	"NAMESPACE_MAP":     func(p map[string]any) bool { return p["NamespaceMap"] != "" },
}

var functionsByResource = map[string]string{
	"CaptureFunction": config.FuncCapture,
	"ApplyFunction":   config.FuncApply,
}

func TestEnvironmentMatchesConfig(t *testing.T) {
	known := map[string]bool{}
	for _, v := range config.Variables() {
		known[v.Name] = true
	}
	for name := range notDeployed {
		if !known[name] {
			t.Errorf("notDeployed lists %s, which pkg/config no longer reads", name)
		}
	}
	eachVariant(t, func(t *testing.T, s *stack) {
		for resource, fnName := range functionsByResource {
			fn := function(t, s, resource)
			var set map[string]string
			if fn.Environment != nil {
				set = fn.Environment.Variables
			}
			reads := config.VariablesOf(fnName)
			if len(reads) == 0 {
				t.Fatalf("pkg/config lists no variable for %s", fnName)
			}
			for _, name := range reads {
				_, isSet := set[name]
				switch {
				case notDeployed[name] != "":
					if isSet {
						t.Errorf("%s sets %s: %s", resource, name, notDeployed[name])
					}
				case conditional[name] != nil:
					if want := conditional[name](s.params); isSet != want {
						t.Errorf("%s: %s set = %v, want %v for these parameters", resource, name, isSet, want)
					}
				case !isSet:
					t.Errorf("%s does not set %s, which %s reads", resource, name, fnName)
				}
			}
			for name, value := range set {
				if !slices.Contains(reads, name) {
					t.Errorf("%s sets %s, which %s does not read", resource, name, fnName)
				}
				if value == "" {
					t.Errorf("%s sets %s to the empty string; use AWS::NoValue", resource, name)
				}
			}
		}
	})
}

// TestEnvironmentDefaultsMatchConfig checks that the template's parameter defaults do not drift
// from pkg/config's defaults, so that a deployment with defaults behaves like the documentation.
func TestEnvironmentDefaultsMatchConfig(t *testing.T) {
	// Deliberate differences, with the reason.
	differs := map[string]string{
		"KAFKA_SASL": "MSK deployments default to IAM auth; pkg/config's none suits the local stack",
	}
	s := render(t, required(nil))
	for resource, fnName := range functionsByResource {
		vars := function(t, s, resource).Environment.Variables
		for _, v := range config.Variables() {
			if !slices.Contains(v.Functions, fnName) || v.Default == "" || differs[v.Name] != "" {
				continue
			}
			if got, ok := vars[v.Name]; ok && got != v.Default {
				t.Errorf("%s %s = %q by default, pkg/config's default is %q", resource, v.Name, got, v.Default)
			}
		}
	}
}

func TestNoSecretsInEnvironment(t *testing.T) {
	arn := regexp.MustCompile(`^arn:aws[a-z-]*:secretsmanager:`)
	eachVariant(t, func(t *testing.T, s *stack) {
		for resource := range functionsByResource {
			for name, value := range function(t, s, resource).Environment.Variables {
				if strings.HasSuffix(name, "_URI") || strings.HasSuffix(name, "_PASSWORD") || strings.HasSuffix(name, "_USERNAME") {
					t.Errorf("%s sets %s: secrets go by ARN", resource, name)
				}
				if strings.HasSuffix(name, "_SECRET_ARN") && !arn.MatchString(value) {
					t.Errorf("%s %s = %q is not a secret ARN", resource, name, value)
				}
				if strings.Contains(value, "mongodb://") || strings.Contains(value, "mongodb+srv://") {
					t.Errorf("%s %s holds a connection string", resource, name)
				}
			}
		}
	})
}

func TestSecretsAndCAForTLS(t *testing.T) {
	s := render(t, required(nil))
	capture := function(t, s, "CaptureFunction").Environment.Variables
	apply := function(t, s, "ApplyFunction").Environment.Variables
	checks := []struct{ got, want, what string }{
		{capture["PRIMARY_SECRET_ARN"], primarySecret, "capture PRIMARY_SECRET_ARN"},
		{apply["DR_SECRET_ARN"], drSecret, "apply DR_SECRET_ARN"},
		{capture["PRIMARY_TLS"], "required", "capture PRIMARY_TLS"},
		{apply["DR_TLS"], "required", "apply DR_TLS"},
		// The Makefile's build-*Function targets put global-bundle.pem next to bootstrap.
		{capture["PRIMARY_TLS_CA_FILE"], "/var/task/global-bundle.pem", "capture PRIMARY_TLS_CA_FILE"},
		{apply["DR_TLS_CA_FILE"], "/var/task/global-bundle.pem", "apply DR_TLS_CA_FILE"},
		{capture["KAFKA_TLS"], "true", "capture KAFKA_TLS"},
		{capture["KAFKA_BROKERS"], brokers, "capture KAFKA_BROKERS"},
		{capture["ARCHIVE_BUCKET"], "<ArchiveBucket>", "capture ARCHIVE_BUCKET"},
		{apply["ARCHIVE_BUCKET"], "<ArchiveBucket>", "apply ARCHIVE_BUCKET"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
}

func TestLogGroups(t *testing.T) {
	eachVariant(t, func(t *testing.T, s *stack) {
		groups := s.tpl.GetAllLogsLogGroupResources()
		for resource, short := range map[string]string{"CaptureFunction": "Capture", "ApplyFunction": "Apply"} {
			fn := function(t, s, resource)
			lg, ok := groups[short+"LogGroup"]
			if !ok {
				t.Fatalf("no %sLogGroup", short)
			}
			if want := "/aws/lambda/" + str(fn.FunctionName); str(lg.LogGroupName) != want {
				t.Errorf("%sLogGroup name = %q, want %q (Lambda's log group of the function)", short, str(lg.LogGroupName), want)
			}
			if lg.RetentionInDays == nil || float64(*lg.RetentionInDays) != s.params["LogRetentionDays"] {
				t.Errorf("%sLogGroup retention = %v, want LogRetentionDays", short, lg.RetentionInDays)
			}
			if !slices.Contains(fn.AWSCloudFormationDependsOn, short+"LogGroup") {
				t.Errorf("%s must depend on %sLogGroup, or Lambda may create the group without retention first", resource, short)
			}
		}
	})
}

func TestOutputs(t *testing.T) {
	eachVariant(t, func(t *testing.T, s *stack) {
		want := []string{"CaptureFunctionArn", "ApplyFunctionArn", "ArchiveBucketName", "ArchivePrefix",
			"CaptureLogGroupName", "ApplyLogGroupName", "ApplyFailureQueueUrl", "DashboardName"}
		if s.params["AlarmEmail"] != "" {
			want = append(want, "AlarmTopicArn")
		}
		if s.params["CreateGlueTable"] == "true" {
			want = append(want, "DeletesTable")
		}
		var got []string
		for name := range s.tpl.Outputs {
			got = append(got, name)
		}
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("outputs = %v, want %v", got, want)
		}
	})
}

func TestSamconfigParameterNames(t *testing.T) {
	b, err := os.ReadFile("../samconfig.toml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := loadLongForm("../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	params := m["Parameters"].(map[string]any)
	// Every Name=value in the (commented) parameter_overrides example must be a parameter.
	names := regexp.MustCompile(`(?m)^#?\s*"?([A-Z][A-Za-z0-9]+)=`).FindAllStringSubmatch(string(b), -1)
	if len(names) < 5 {
		t.Fatalf("samconfig.toml has no parameter_overrides example (found %d names)", len(names))
	}
	for _, n := range names {
		if _, ok := params[n[1]]; !ok {
			t.Errorf("samconfig.toml names parameter %s, which template.yaml does not have", n[1])
		}
	}
	for name, p := range params {
		if _, hasDefault := p.(map[string]any)["Default"]; !hasDefault && !strings.Contains(string(b), name+"=") {
			t.Errorf("required parameter %s is missing from samconfig.toml's example", name)
		}
	}
}

// TestDocsMentionEveryParameter keeps docs/deployment.md in step with the template.
func TestDocsMentionEveryParameter(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "deployment.md"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := loadLongForm("../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name := range m["Parameters"].(map[string]any) {
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/deployment.md does not mention parameter `%s`", name)
		}
	}
	for name := range m["Resources"].(map[string]any) {
		if strings.HasSuffix(name, "Alarm") && !strings.Contains(string(doc), name) {
			t.Errorf("docs/deployment.md does not say what to do about %s", name)
		}
	}
}

func TestEveryParameterIsUsed(t *testing.T) {
	b, err := os.ReadFile("../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := loadLongForm("../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	body := string(b)
	body = body[strings.Index(body, "\nConditions:"):]
	for name := range m["Parameters"].(map[string]any) {
		if !regexp.MustCompile(`(!Ref |\$\{)` + name + `\b`).MatchString(body) {
			t.Errorf("parameter %s is never used", name)
		}
	}
}

func TestRulesRejectInconsistentParameters(t *testing.T) {
	for _, c := range []struct {
		rule   string
		params map[string]any
	}{
		{"ScramNeedsSecret", required(map[string]any{"KafkaAuth": "scram-sha-512"})},
		{"SecretOnlyForScram", required(map[string]any{"KafkaSecretArn": kafkaSecret})},
		{"ObjectLockNeedsNewBucket", required(map[string]any{"ObjectLockMode": "GOVERNANCE", "ArchiveBucketName": "corp-dr-archive"})},
	} {
		_, err := renderFile("../template.yaml", c.params)
		if err == nil || !strings.Contains(err.Error(), "rule "+c.rule+" fails") {
			t.Errorf("%s: err = %v", c.rule, err)
		}
	}
}

// TestCfnLint runs cfn-lint (which also applies the SAM transform) when it is installed. Errors
// fail the test; warnings are logged (a newer cfn-lint may add checks).
func TestCfnLint(t *testing.T) {
	lint, err := exec.LookPath("cfn-lint")
	if err != nil {
		t.Skip("cfn-lint not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, lint, "--", filepath.Join("..", "template.yaml")).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode()&2 == 0 && exit.ExitCode() > 0:
		t.Logf("cfn-lint warnings (exit %d):\n%s", exit.ExitCode(), out)
	default:
		t.Fatalf("cfn-lint template.yaml: %v\n%s", err, out)
	}
}
