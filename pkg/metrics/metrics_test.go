package metrics

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestEmitWritesEMF(t *testing.T) {
	var s Set
	s.Dimension("Function", "capture")
	s.Add("Events.insert", Count, 2)
	s.Add("Events.insert", Count, 3)
	s.Duration("DrainTime", 1500*time.Millisecond)

	var buf bytes.Buffer
	if err := s.Emit(&buf, time.UnixMilli(1658233222000)); err != nil {
		t.Fatal(err)
	}
	var line struct {
		AWS struct {
			Timestamp         int64
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		} `json:"_aws"`
		Function  string  `json:"Function"`
		Inserts   float64 `json:"Events.insert"`
		DrainTime float64 `json:"DrainTime"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not JSON: %v: %s", err, buf.String())
	}
	if line.AWS.Timestamp != 1658233222000 || line.Function != "capture" || line.Inserts != 5 || line.DrainTime != 1500 {
		t.Errorf("unexpected line: %s", buf.String())
	}
	d := line.AWS.CloudWatchMetrics[0]
	if d.Namespace != Namespace || len(d.Dimensions) != 1 || d.Dimensions[0][0] != "Function" || len(d.Metrics) != 2 || d.Metrics[0].Name != "DrainTime" || d.Metrics[0].Unit != "Milliseconds" {
		t.Errorf("unexpected metric directive: %+v", d)
	}
	if bytes.Count(buf.Bytes(), []byte("\n")) != 1 {
		t.Errorf("want exactly one line")
	}
}

func TestEmptySetWritesNothing(t *testing.T) {
	var s Set
	var buf bytes.Buffer
	if err := s.Emit(&buf, time.Now()); err != nil || buf.Len() != 0 {
		t.Fatalf("err=%v out=%q", err, buf.String())
	}
}
