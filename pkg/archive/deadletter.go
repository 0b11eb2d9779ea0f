package archive

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// DeadLetter is the content of a dead-letter object: a Kafka record that apply could not use
// (not base64, not BSON, an unknown format version, failed validation, a bad claim check), kept
// exactly as it was received so that it can be inspected and replayed.
type DeadLetter struct {
	Kafka     Kafka  `json:"kafka"`
	Timestamp int64  `json:"timestamp"` // Kafka record timestamp, unix milliseconds
	Reason    string `json:"reason"`
	// Key and Value are the record's key and value as the event source delivered them (base64).
	Key     string   `json:"key"`
	Value   string   `json:"value"`
	Headers []Header `json:"headers"`
}

// Header is one Kafka record header; Value is base64.
type Header struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Marshal renders the dead letter as JSON. The same dead letter always renders to the same bytes.
func (d DeadLetter) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("encode dead letter: %w", err)
	}
	return buf.Bytes(), nil
}
