package faults

import "testing"

func TestFaultArmAndTake(t *testing.T) {
	var f Fault
	if n, fail := f.take(5); n != 5 || fail {
		t.Fatalf("unarmed: %d %t", n, fail)
	}
	f.Arm(3, 1)
	if n, fail := f.take(2); n != 2 || fail {
		t.Fatalf("first 2 of 3: %d %t", n, fail)
	}
	if n, fail := f.take(4); n != 1 || !fail {
		t.Fatalf("crossing the limit: %d %t, want 1 true", n, fail)
	}
	if f.Armed() || f.Fired() != 1 {
		t.Fatalf("after one failure: armed %t fired %d", f.Armed(), f.Fired())
	}
	f.Arm(0, -1)
	for i := 0; i < 3; i++ {
		if _, fail := f.take(1); !fail {
			t.Fatal("unbounded fault let a call through")
		}
	}
	f.Disarm()
	if _, fail := f.take(1); fail {
		t.Fatal("disarmed fault failed")
	}
}
