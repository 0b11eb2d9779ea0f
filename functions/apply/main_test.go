package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestSetupReportsEveryConfigurationProblem(t *testing.T) {
	env := map[string]string{
		"DR_URI":           "mongodb://127.0.0.1:1/",
		"DR_TLS":           "disabled",
		"ARCHIVE_BUCKET":   "archive",
		"KAFKA_TOPIC":      "changevents",
		"INTERCEPT_POLICY": "delete=keep",
		"NAMESPACE_MAP":    "bar=bar_dr.foo",
	}
	_, err := setup(context.Background(), func(k string) string { return env[k] }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Fatal("setup accepted a bad policy and namespace map")
	}
	for _, want := range []string{"INTERCEPT_POLICY", "NAMESPACE_MAP"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}
