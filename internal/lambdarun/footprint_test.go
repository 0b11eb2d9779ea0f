//go:build unix

package lambdarun

import (
	"runtime"
	"testing"
	"time"
)

// TestFootprint: a cold start reports its init duration (the function's own slow init
// included), a warm invocation none; on Linux every invocation reports the process's peak RSS,
// which keeps memory the function touched and gave back to the OS; a dead sandbox reports none.
func TestFootprint(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name      string
		initDelay time.Duration // the function sleeps this long before its runtime starts
		touchMiB  int           // the second invocation writes to this much memory, then frees it
	}{
		{name: "fast init, nothing touched"},
		{name: "slow init", initDelay: 300 * time.Millisecond},
		{name: "64 MiB touched and released", touchMiB: 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, out := testFunction(t, "go", 10*time.Second, func(c *Config) { c.Env[testInitDelayEnv] = tc.initDelay.String() })
			cold, _ := invoke(t, f, order{})
			warm, _ := invoke(t, f, order{TouchMiB: tc.touchMiB})
			if cold.Err != nil || warm.Err != nil {
				t.Fatalf("invocations failed: %v, %v", cold.Err, warm.Err)
			}
			if !cold.ColdStart || cold.InitDuration <= 0 || cold.InitDuration < tc.initDelay || cold.InitDuration > tc.initDelay+5*time.Second {
				t.Errorf("first invocation: cold %v, init %v; want a cold start whose init includes the function's %v sleep, and not seconds more",
					cold.ColdStart, cold.InitDuration, tc.initDelay)
			}
			if warm.ColdStart || warm.InitDuration != 0 {
				t.Errorf("second invocation: cold %v, init %v; want a warm one, without init", warm.ColdStart, warm.InitDuration)
			}
			if n := out.count("Init Duration: "); n != 1 {
				t.Errorf("%d REPORT lines with an Init Duration, want 1 (the cold start's)", n)
			}
			dead, _ := invoke(t, f, order{Exit: 3})
			if !dead.Killed || dead.PeakRSS != 0 {
				t.Errorf("a process that exited during its invocation: killed %v, peak RSS %d; want 0", dead.Killed, dead.PeakRSS)
			}

			if runtime.GOOS != "linux" {
				if cold.PeakRSS != 0 || warm.PeakRSS != 0 {
					t.Errorf("peak RSS %d and %d bytes: want 0 off Linux", cold.PeakRSS, warm.PeakRSS)
				}
				return
			}
			if cold.PeakRSS < mib || cold.PeakRSS > 1<<30 {
				t.Errorf("peak RSS after the first invocation: %d bytes, want the few MiB of a Go process", cold.PeakRSS)
			}
			// Up to three times what was touched: under the race detector (make race), the test
			// function's shadow memory doubles it.
			grew := warm.PeakRSS - cold.PeakRSS
			low, high := int64(tc.touchMiB)*mib*15/16, int64(3*tc.touchMiB+32)*mib
			if grew < low || grew > high {
				t.Errorf("peak RSS grew by %.1f MiB in an invocation that touched %d MiB; want %.1f to %.1f MiB",
					float64(grew)/mib, tc.touchMiB, float64(low)/mib, float64(high)/mib)
			}
			if n := out.count("Max Memory Used: "); n != 2 {
				t.Errorf("%d REPORT lines with Max Memory Used, want 2 (the invocations that ended alive)", n)
			}
		})
	}
}
