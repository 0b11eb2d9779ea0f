package apply

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestApplyMainOnlyWires: functions/apply/main.go stays a few lines that build the function with
// NewFunction and hand it to the Lambda runtime (the clients and configuration live in Function,
// where they are tested), and the apply binary links no Kafka client: it reads its records from
// the event source mapping's payload, so sarama would only add to its size and cold start.
func TestApplyMainOnlyWires(t *testing.T) {
	src, err := os.ReadFile("../../functions/apply/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(src, []byte("\n")); n >= 40 {
		t.Errorf("functions/apply/main.go has %d lines, want under 40", n)
	}
	for _, want := range []string{"apply.NewFunction(", "lambda.StartWithOptions(f.Handle, lambda.WithEnableSIGTERM(f.Close))"} {
		if !bytes.Contains(src, []byte(want)) {
			t.Errorf("functions/apply/main.go does not call %s", want)
		}
	}
	for _, banned := range []string{"mongo.", "s3.", "archive.", "docdb.", "kafka", "sarama"} {
		if bytes.Contains(src, []byte(banned)) {
			t.Errorf("functions/apply/main.go builds %s itself: wiring belongs in apply.NewFunction", banned)
		}
	}

	out, err := exec.Command("go", "list", "-deps", "../../functions/apply").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps ./functions/apply: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/IBM/sarama") || strings.HasPrefix(dep, "github.com/twmb/franz-go") {
			t.Errorf("functions/apply links %s: apply needs no Kafka client", dep)
		}
	}
}
