package deploy

import (
	"slices"
	"sort"
	"strings"
	"testing"
)

// statement is one IAM policy statement with Action and Resource normalised to lists.
type statement struct {
	Role      string
	Sid       string
	Effect    string
	Actions   []string
	Resources []string
	Condition map[string]any
}

func asList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, e.(string))
		}
		return out
	}
	return nil
}

// statements returns the inline policy statements of every IAM role of the stack.
func statements(t *testing.T, s *stack) []statement {
	t.Helper()
	var out []statement
	for _, role := range s.resourcesOfType("AWS::IAM::Role") {
		props := s.resource(t, role)["Properties"].(map[string]any)
		policies, _ := props["Policies"].([]any)
		for _, p := range policies {
			doc := p.(map[string]any)["PolicyDocument"].(map[string]any)
			for _, st := range doc["Statement"].([]any) {
				m := st.(map[string]any)
				if _, ok := m["NotAction"]; ok {
					t.Errorf("%s uses NotAction", role)
				}
				if _, ok := m["NotResource"]; ok {
					t.Errorf("%s uses NotResource", role)
				}
				cond, _ := m["Condition"].(map[string]any)
				sid, _ := m["Sid"].(string)
				effect, _ := m["Effect"].(string)
				out = append(out, statement{role, sid, effect, asList(m["Action"]), asList(m["Resource"]), cond})
			}
		}
	}
	return out
}

// grants reports whether role has an Allow statement with action on exactly resource.
func grants(t *testing.T, s *stack, role, action, resource string) bool {
	t.Helper()
	for _, st := range statements(t, s) {
		if st.Role == role && st.Effect == "Allow" && slices.Contains(st.Actions, action) && slices.Contains(st.Resources, resource) {
			return true
		}
	}
	return false
}

// wildcardResourceAllowed lists the only actions that may be granted on Resource "*", with the
// reason AWS gives no narrower resource.
var wildcardResourceAllowed = map[string]string{
	"ec2:DescribeVpcs":           "Describe* actions support no resource-level permissions; the MSK event source mapping needs it",
	"ec2:DescribeSecurityGroups": "Describe* actions support no resource-level permissions; the MSK event source mapping needs it",
}

// managedPoliciesAllowed lists the AWS managed policies a role may carry, with what they grant on "*".
var managedPoliciesAllowed = map[string]string{
	"arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole": "ENI create/describe/delete and CloudWatch Logs writes: AWS requires Resource * for the ENI actions",
}

func TestIAMLeastPrivilege(t *testing.T) {
	eachVariant(t, func(t *testing.T, s *stack) {
		roles := s.resourcesOfType("AWS::IAM::Role")
		if !slices.Equal(roles, []string{"ApplyRole", "CaptureRole"}) {
			t.Fatalf("roles = %v, want one per function", roles)
		}
		for _, role := range roles {
			props := s.resource(t, role)["Properties"].(map[string]any)
			for _, arn := range asList(props["ManagedPolicyArns"]) {
				if managedPoliciesAllowed[arn] == "" {
					t.Errorf("%s carries managed policy %s", role, arn)
				}
			}
			trust := props["AssumeRolePolicyDocument"].(map[string]any)["Statement"].([]any)
			if len(trust) != 1 || trust[0].(map[string]any)["Principal"].(map[string]any)["Service"] != "lambda.amazonaws.com" {
				t.Errorf("%s trust policy = %v, want lambda.amazonaws.com only", role, trust)
			}
		}
		sts := statements(t, s)
		if len(sts) == 0 {
			t.Fatal("no inline statements")
		}
		for _, st := range sts {
			where := st.Role + "/" + st.Sid
			if st.Effect != "Allow" {
				t.Errorf("%s: Effect %q", where, st.Effect)
			}
			if st.Sid == "" {
				t.Errorf("%s: statement without Sid", st.Role)
			}
			if len(st.Actions) == 0 || len(st.Resources) == 0 {
				t.Errorf("%s: no actions or no resources", where)
			}
			for _, a := range st.Actions {
				if strings.Contains(a, "*") {
					t.Errorf("%s: wildcard action %q", where, a)
				}
			}
			for _, r := range st.Resources {
				if r == "" || strings.HasSuffix(r, ":") || strings.Contains(r, "::/") {
					t.Errorf("%s: resource %q is empty or has an empty part", where, r)
				}
				if r == "*" {
					for _, a := range st.Actions {
						if wildcardResourceAllowed[a] == "" {
							t.Errorf("%s: %s on Resource \"*\"", where, a)
						}
					}
				} else if strings.Contains(strings.TrimSuffix(r, "*"), "*") {
					t.Errorf("%s: resource %q has a wildcard other than a trailing one", where, r)
				}
			}
		}
	})
}

// actionsOn returns, for a role, every allowed action of a service (prefix "s3:") mapped to the
// sorted resources it is granted on.
func actionsOn(t *testing.T, s *stack, role, service string) map[string][]string {
	out := map[string][]string{}
	for _, st := range statements(t, s) {
		if st.Role != role {
			continue
		}
		for _, a := range st.Actions {
			if strings.HasPrefix(a, service) {
				out[a] = append(out[a], st.Resources...)
				sort.Strings(out[a])
			}
		}
	}
	return out
}

func TestIAMResourcesAreTheNamedOnes(t *testing.T) {
	eachVariant(t, func(t *testing.T, s *stack) {
		bucket := "<ArchiveBucket>"
		if name := s.params["ArchiveBucketName"].(string); name != "" {
			bucket = name
		}
		prefix := "arn:aws:s3:::" + bucket + "/" + s.params["ArchivePrefix"].(string)
		scram := s.params["KafkaAuth"] == "scram-sha-512"
		iam := s.params["KafkaAuth"] == "iam"
		topic := "arn:aws:kafka:us-west-2:123456789012:topic/docdbdr/6f9d2c1e-0c5b-4f7e-9b1a-2d3c4e5f6a7b-2/" + s.params["KafkaTopic"].(string)
		group := "arn:aws:kafka:us-west-2:123456789012:group/docdbdr/6f9d2c1e-0c5b-4f7e-9b1a-2d3c4e5f6a7b-2/" + s.params["ConsumerGroupId"].(string)

		secrets := func(own string) map[string][]string {
			r := []string{own}
			if scram {
				r = append(r, kafkaSecret)
			}
			sort.Strings(r)
			return map[string][]string{"secretsmanager:GetSecretValue": r}
		}
		kms := func(archive bool) map[string][]string {
			out := map[string][]string{}
			if s.params["SecretsKmsKeyArn"] != "" {
				out["kms:Decrypt"] = append(out["kms:Decrypt"], s.params["SecretsKmsKeyArn"].(string))
			}
			if archive && s.params["ArchiveKmsKeyArn"] != "" {
				out["kms:Decrypt"] = append(out["kms:Decrypt"], archiveKey)
				out["kms:GenerateDataKey"] = []string{archiveKey}
			}
			for _, v := range out {
				sort.Strings(v)
			}
			return out
		}
		want := map[string]map[string]map[string][]string{
			"CaptureRole": {
				"secretsmanager:": secrets(primarySecret),
				"s3:":             {"s3:PutObject": {prefix + "claimcheck/*", prefix + "deadletter/capture/*"}},
				"kms:":            kms(true),
				"kafka-cluster:":  {},
				"kafka:":          {},
				"sqs:":            {},
			},
			"ApplyRole": {
				"secretsmanager:": secrets(drSecret),
				// Conditional PUTs of archive objects and dead letters; GETs of claim checks only.
				"s3:":            {"s3:PutObject": {prefix + "deadletter/*", prefix + "deletes/*"}, "s3:GetObject": {prefix + "claimcheck/*"}},
				"kms:":           kms(true),
				"kafka-cluster:": {},
				"kafka:":         {"kafka:DescribeClusterV2": {clusterARN}, "kafka:GetBootstrapBrokers": {clusterARN}},
				"sqs:":           {"sqs:SendMessage": {"<ApplyFailureQueue.Arn>"}},
			},
		}
		if s.params["ArchiveHistory"] == "on" { // the version history's objects
			want["ApplyRole"]["s3:"]["s3:PutObject"] = append(want["ApplyRole"]["s3:"]["s3:PutObject"], prefix+"history/*")
		}
		if iam {
			want["CaptureRole"]["kafka-cluster:"] = map[string][]string{
				"kafka-cluster:Connect":               {clusterARN},
				"kafka-cluster:WriteDataIdempotently": {clusterARN},
				"kafka-cluster:DescribeTopic":         {topic},
				"kafka-cluster:WriteData":             {topic},
			}
			want["ApplyRole"]["kafka-cluster:"] = map[string][]string{
				"kafka-cluster:Connect":                             {clusterARN},
				"kafka-cluster:DescribeClusterDynamicConfiguration": {clusterARN},
				"kafka-cluster:DescribeTopic":                       {topic},
				"kafka-cluster:ReadData":                            {topic},
				"kafka-cluster:DescribeGroup":                       {group},
				"kafka-cluster:AlterGroup":                          {group},
			}
		}
		for role, services := range want {
			for service, w := range services {
				got := actionsOn(t, s, role, service)
				if !equalGrants(got, w) {
					t.Errorf("%s %s* grants = %v, want %v", role, service, got, w)
				}
			}
		}
		for _, st := range statements(t, s) {
			if slices.Contains(st.Actions, "kms:Decrypt") && slices.Contains(st.Resources, secretsKey) {
				via, _ := st.Condition["StringEquals"].(map[string]any)["kms:ViaService"].(string)
				if via != "secretsmanager.us-west-2.amazonaws.com" {
					t.Errorf("%s/%s: kms:Decrypt of the secrets key without kms:ViaService secretsmanager", st.Role, st.Sid)
				}
			}
		}
	})
}

func equalGrants(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
