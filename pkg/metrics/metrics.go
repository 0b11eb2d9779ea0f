// Package metrics writes CloudWatch Embedded Metric Format (EMF) lines: JSON log lines that
// CloudWatch Logs turns into metrics without any API call from the function.
//
// A Set collects values during one invocation; Emit writes them as one line. The zero Set is
// ready to use.
package metrics

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"
)

// Namespace is the CloudWatch namespace of every metric the product emits.
const Namespace = "DocdbDR"

// Unit is a CloudWatch metric unit.
type Unit string

// The units the product uses.
const (
	Count        Unit = "Count"
	Bytes        Unit = "Bytes"
	Milliseconds Unit = "Milliseconds"
	Seconds      Unit = "Seconds"
	Percent      Unit = "Percent"
	None         Unit = "None"
)

// Set is a group of metric values that share dimensions and are emitted together.
type Set struct {
	mu         sync.Mutex
	dimensions map[string]string
	values     map[string]float64
	units      map[string]Unit
}

// Dimension sets a dimension (e.g. "Function" = "capture", "Scope" = "bar.foo").
func (s *Set) Dimension(name, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dimensions == nil {
		s.dimensions = map[string]string{}
	}
	s.dimensions[name] = value
}

// Add adds v to the metric name (creating it at 0).
func (s *Set) Add(name string, unit Unit, v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.values[name] += v
	s.units[name] = unit
}

// Put sets the metric name to v, replacing an earlier value.
func (s *Set) Put(name string, unit Unit, v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.values[name] = v
	s.units[name] = unit
}

// Duration sets the metric name to d in milliseconds.
func (s *Set) Duration(name string, d time.Duration) {
	s.Put(name, Milliseconds, float64(d)/float64(time.Millisecond))
}

// Value returns the current value of a metric and whether it was set.
func (s *Set) Value(name string) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[name]
	return v, ok
}

func (s *Set) init() {
	if s.values == nil {
		s.values = map[string]float64{}
		s.units = map[string]Unit{}
	}
}

// Emit writes the set as one EMF JSON line to w, stamped with now. A set with no values writes
// nothing.
func (s *Set) Emit(w io.Writer, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.values) == 0 {
		return nil
	}
	names := make([]string, 0, len(s.values))
	for n := range s.values {
		names = append(names, n)
	}
	sort.Strings(names)
	dims := make([]string, 0, len(s.dimensions))
	for d := range s.dimensions {
		dims = append(dims, d)
	}
	sort.Strings(dims)

	type metricDef struct {
		Name string `json:"Name"`
		Unit Unit   `json:"Unit"`
	}
	defs := make([]metricDef, 0, len(names))
	line := map[string]any{}
	for _, n := range names {
		defs = append(defs, metricDef{n, s.units[n]})
		line[n] = s.values[n]
	}
	for _, d := range dims {
		line[d] = s.dimensions[d]
	}
	line["_aws"] = map[string]any{
		"Timestamp": now.UnixMilli(),
		"CloudWatchMetrics": []any{map[string]any{
			"Namespace":  Namespace,
			"Dimensions": [][]string{dims},
			"Metrics":    defs,
		}},
	}
	b, err := json.Marshal(line)
	if err != nil {
		return fmt.Errorf("encode metrics: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
