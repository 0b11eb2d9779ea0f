package deploy

import (
	"testing"
	"time"

	"github.com/docdb-dr/docdb-dr/internal/localrun"
)

// TestMSKMappingNeverDiscards: in every variant, and with bisecting on, the apply mapping
// retries without limit and never lets records age out. A batch the mapping gives up on
// reaches the SQS destination as offsets only, its changes missing from DR; apply dead-letters
// poison itself and fails a batch only for transient errors, which must be retried.
func TestMSKMappingNeverDiscards(t *testing.T) {
	check := func(t *testing.T, s *stack) {
		p := mskEvent(t, s)
		for _, k := range []string{"MaximumRetryAttempts", "MaximumRecordAgeInSeconds"} {
			if v, ok := p[k]; ok && v != float64(-1) {
				t.Errorf("%s = %v: a finite limit discards records; want it absent or -1", k, v)
			}
		}
		bisect := s.params["ApplyBisectBatchOnError"] == "true"
		if got, _ := p["BisectBatchOnFunctionError"].(bool); got != bisect {
			t.Errorf("BisectBatchOnFunctionError = %v with ApplyBisectBatchOnError %v", p["BisectBatchOnFunctionError"], s.params["ApplyBisectBatchOnError"])
		}
		ppc, provisioned := p["ProvisionedPollerConfig"].(map[string]any)
		if provisioned != bisect {
			t.Errorf("provisioned mode %v with bisecting %v: the error controls need provisioned mode, nothing else does", provisioned, bisect)
		}
		if bisect {
			if p["MaximumRetryAttempts"] != float64(-1) || p["MaximumRecordAgeInSeconds"] != float64(-1) {
				t.Errorf("in provisioned mode the limits must be set to -1 explicitly: %v, %v", p["MaximumRetryAttempts"], p["MaximumRecordAgeInSeconds"])
			}
			if ppc["MinimumPollers"] != float64(1) || ppc["MaximumPollers"] != s.params["ApplyMaximumPollers"] {
				t.Errorf("ProvisionedPollerConfig = %v", ppc)
			}
		}
	}
	eachVariant(t, check)
	t.Run("bisect", func(t *testing.T) {
		check(t, render(t, required(map[string]any{"ApplyBisectBatchOnError": "true", "ApplyMaximumPollers": float64(4)})))
	})
}

// TestLocalRunMirrorsTheTemplate: internal/localrun invokes the functions the way the template
// configures them (timeouts, the schedule's retries); internal/esm retries a failed batch
// without limit, as the mapping does.
func TestLocalRunMirrorsTheTemplate(t *testing.T) {
	s := render(t, required(nil))
	c := function(t, s, "CaptureFunction")
	if c.EventInvokeConfig == nil || c.EventInvokeConfig.MaximumRetryAttempts == nil || c.EventInvokeConfig.MaximumEventAgeInSeconds == nil {
		t.Fatal("CaptureFunction has no EventInvokeConfig with MaximumRetryAttempts and MaximumEventAgeInSeconds")
	}
	if got := *c.EventInvokeConfig.MaximumRetryAttempts; got != localrun.TemplateCaptureRetryAttempts {
		t.Errorf("template MaximumRetryAttempts %d, localrun.TemplateCaptureRetryAttempts %d", got, localrun.TemplateCaptureRetryAttempts)
	}
	if got := time.Duration(*c.EventInvokeConfig.MaximumEventAgeInSeconds) * time.Second; got != localrun.TemplateCaptureMaxEventAge {
		t.Errorf("template MaximumEventAgeInSeconds %v, localrun.TemplateCaptureMaxEventAge %v", got, localrun.TemplateCaptureMaxEventAge)
	}
	if got := time.Duration(s.params["CaptureTimeout"].(float64)) * time.Second; got != localrun.DefaultCaptureTimeout {
		t.Errorf("CaptureTimeout default %v, localrun.DefaultCaptureTimeout %v", got, localrun.DefaultCaptureTimeout)
	}
	if got := time.Duration(s.params["ApplyTimeout"].(float64)) * time.Second; got != localrun.DefaultApplyTimeout {
		t.Errorf("ApplyTimeout default %v, localrun.DefaultApplyTimeout %v", got, localrun.DefaultApplyTimeout)
	}
	if _, limited := mskEvent(t, s)["MaximumRetryAttempts"]; limited {
		t.Error("the template limits the mapping's retries; internal/esm retries for ever")
	}
}
