package capture

import (
	"testing"
	"time"
)

// TestLeaseGuardLeavesRoomForTheNextRenewal: for every LEASE_TTL > DEADLINE_MARGIN (the
// configuration rule), the stop before an unrenewed expiry comes after the next renewal is due.
func TestLeaseGuardLeavesRoomForTheNextRenewal(t *testing.T) {
	for _, ttl := range []time.Duration{time.Second, 3 * time.Second, 30 * time.Second, 15 * time.Minute} {
		for _, margin := range []time.Duration{0, ttl / 3, ttl / 2, ttl - time.Millisecond} {
			guard := leaseGuard(margin, ttl)
			if stop, renew := ttl-guard, ttl/3; stop <= renew || guard <= 0 {
				t.Errorf("LEASE_TTL %v, DEADLINE_MARGIN %v: stop %v after a renewal, next renewal due after %v (guard %v)", ttl, margin, stop, renew, guard)
			}
		}
	}
}
