package capture

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Overrides are the bounds a manual invoke may change for one run, e.g.
//
//	{"maxEvents": 10, "maxBytes": 1048576, "idleTimeout": "1s", "continuousDrain": "0s"}
//
// Zero values keep the configured setting.
type Overrides struct {
	MaxEvents       int      `json:"maxEvents,omitempty"`
	MaxBytes        int64    `json:"maxBytes,omitempty"`
	IdleTimeout     Duration `json:"idleTimeout,omitempty"`
	ContinuousDrain Duration `json:"continuousDrain,omitempty"`
}

// Duration is a time.Duration written as Go duration text ("1s") in JSON.
type Duration time.Duration

// UnmarshalJSON accepts "1s"-style text.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"1s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %s is negative", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes "1s"-style text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (o Overrides) apply(opts Options) Options {
	if o.MaxEvents > 0 {
		opts.MaxEvents = o.MaxEvents
	}
	if o.MaxBytes > 0 {
		opts.MaxBytes = o.MaxBytes
	}
	if o.IdleTimeout > 0 {
		opts.IdleTimeout = time.Duration(o.IdleTimeout)
	}
	if o.ContinuousDrain > 0 {
		opts.ContinuousDrain = time.Duration(o.ContinuousDrain)
	}
	return opts
}

// ParseInvocation reads the Lambda payload: an EventBridge scheduled event (no overrides), an
// empty payload, or a manual invoke's Overrides. Unknown fields in a manual invoke are refused so
// that a typo does not silently run with the configured bounds.
func ParseInvocation(payload []byte) (Overrides, error) {
	payload = bytes.TrimSpace(payload)
	if len(payload) == 0 || string(payload) == "null" || string(payload) == "{}" {
		return Overrides{}, nil
	}
	var probe struct {
		Source     string `json:"source"`
		DetailType string `json:"detail-type"`
	}
	if err := json.Unmarshal(payload, &probe); err != nil {
		return Overrides{}, fmt.Errorf("invocation payload is not a JSON object: %w", err)
	}
	if probe.DetailType != "" || probe.Source != "" {
		return Overrides{}, nil // events.CloudWatchEvent from the schedule
	}
	var o Overrides
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return Overrides{}, fmt.Errorf("manual invocation payload: %w (known fields: maxEvents, maxBytes, idleTimeout, continuousDrain)", err)
	}
	if o.MaxEvents < 0 || o.MaxBytes < 0 {
		return Overrides{}, fmt.Errorf("manual invocation payload: maxEvents and maxBytes must be positive")
	}
	return o, nil
}
