package hostclock

import (
	"runtime"
	"testing"
	"time"
)

func TestNowFollowsMonotonicWithoutSuspend(t *testing.T) {
	a, b := time.Now(), Now()
	if d := b.Sub(a); d < 0 || d > time.Second {
		t.Fatalf("Now - time.Now = %v; want a small non-negative difference on a host that did not suspend", d)
	}
	if s := Suspended(); s%suspendQuantum != 0 {
		t.Fatalf("Suspended = %v, not whole milliseconds", s)
	}
}

func TestSuspendedNeverDecreases(t *testing.T) {
	prev := Suspended()
	for range 10000 {
		s := Suspended()
		if s < prev {
			t.Fatalf("Suspended went back from %v to %v", prev, s)
		}
		prev = s
	}
}

func TestBoottimeAndBootID(t *testing.T) {
	if runtime.GOOS != "linux" {
		if _, ok := Boottime(); ok {
			t.Fatal("Boottime available outside Linux")
		}
		return
	}
	a, ok := Boottime()
	if !ok || a <= 0 {
		t.Fatalf("Boottime = %d, %v", a, ok)
	}
	time.Sleep(2 * time.Millisecond)
	b, _ := Boottime()
	if b-a < int64(2*time.Millisecond) {
		t.Fatalf("Boottime advanced %v over a 2ms sleep", time.Duration(b-a))
	}
	id := BootID()
	if len(id) != 36 || id != BootID() {
		t.Fatalf("BootID = %q; want a stable UUID", id)
	}
}
