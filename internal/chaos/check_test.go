//go:build linux

package chaos

import (
	"strings"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

var testLimits = Limits{
	Heartbeat:    100 * time.Millisecond,
	Tolerance:    600 * time.Millisecond,
	GapBound:     1000 * time.Millisecond,
	StopGrace:    100 * time.Millisecond,
	DisableSlack: 100 * time.Millisecond,
}

func kinds(vs []Violation) string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Kind)
	}
	return strings.Join(out, ",")
}

func TestCheck(t *testing.T) {
	const L = "lock"
	m := func(idx int, token, start, stop int64) Mastership {
		return Mastership{Index: idx, Gen: 1, Lock: L, Token: token, Start: start * ms, Stop: stop * ms}
	}
	base := func() *Timeline {
		return &Timeline{From: 0, To: 3000 * ms, Instances: 2, Locks: []string{L}}
	}
	tests := []struct {
		name string
		tl   func() *Timeline
		want string
	}{
		{"clean handover", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1000), m(1, 2, 1500, 3000)}
			return tl
		}, ""},
		{"overlap", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1600), m(1, 2, 1500, 3000)}
			return tl
		}, VOverlap},
		{"overlap excused by SIGSTOP", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 2010), m(1, 2, 900, 3000)}
			tl.Stopped = []Window{{Index: 0, From: 200 * ms, To: 2000 * ms, Cause: "stop"}}
			tl.Down = tl.Stopped
			return tl
		}, ""},
		{"late stop after SIGCONT", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 2300), m(1, 2, 900, 3000)}
			tl.Stopped = []Window{{Index: 0, From: 200 * ms, To: 2000 * ms, Cause: "stop"}}
			tl.Down = tl.Stopped
			return tl
		}, VLateStop},
		{"late stop counted from when the process ran again", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 2300), m(1, 2, 900, 3000)}
			tl.Stopped = []Window{{Index: 0, From: 200 * ms, To: 2000 * ms, Cause: "stop"}}
			tl.Down = tl.Stopped
			tl.Resumed = []Window{{Index: 0, From: 199 * ms, To: 2250 * ms}}
			return tl
		}, ""},
		{"late stop despite a prompt resume", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 2300), m(1, 2, 900, 3000)}
			tl.Stopped = []Window{{Index: 0, From: 200 * ms, To: 2000 * ms, Cause: "stop"}}
			tl.Down = tl.Stopped
			tl.Resumed = []Window{{Index: 0, From: 199 * ms, To: 2001 * ms}}
			return tl
		}, VLateStop},
		{"stopped again right after SIGCONT", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 2560), m(1, 2, 900, 3000)}
			tl.Stopped = []Window{{Index: 0, From: 200 * ms, To: 2000 * ms, Cause: "stop"}, {Index: 0, From: 2010 * ms, To: 2500 * ms, Cause: "stop"}}
			tl.Down = tl.Stopped
			return tl
		}, ""},
		{"SIGSTOP of another instance excuses nothing", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 2010), m(1, 2, 900, 3000)}
			tl.Stopped = []Window{{Index: 1, From: 200 * ms, To: 800 * ms, Cause: "stop"}}
			return tl
		}, VOverlap},
		{"token order", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 5, 0, 1000), m(1, 4, 1500, 3000)}
			return tl
		}, VTokenOrder},
		{"gap", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(1, 2, 1600, 3000)}
			return tl
		}, VGap},
		{"trailing gap", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1500)}
			return tl
		}, VGap},
		{"gap while every instance was down", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(1, 2, 2200, 3000)}
			tl.Down = []Window{{Index: 0, From: 400 * ms, To: 3000 * ms, Cause: "killed"}, {Index: 1, From: 450 * ms, To: 1300 * ms, Cause: "cut"}}
			return tl
		}, ""},
		{"a SIGSTOPped master does not count as running", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 2600), m(1, 2, 2500, 3000)}
			tl.Stopped = []Window{{Index: 0, From: 100 * ms, To: 2590 * ms, Cause: "stop"}}
			tl.Down = tl.Stopped
			return tl
		}, VGap},
		{"gap while disabled", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(1, 2, 2200, 3000)}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 1, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
			return tl
		}, ""},
		{"master running after disable", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 800), m(1, 2, 2200, 3000)}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 1, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
			return tl
		}, VDisabledRunning},
		{"slow stop after disable excused by a cut", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 800), m(1, 2, 2200, 3000)}
			tl.Down = []Window{{Index: 0, From: 300 * ms, To: 1000 * ms, Cause: "cut"}}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 1, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
			return tl
		}, ""},
		{"acquired while disabled", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(1, 2, 1000, 3000)}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 1, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
			return tl
		}, VDisabledAcquire},
		{"stale write accepted", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1000), m(1, 2, 1500, 3000)}
			tl.Writes = []SinkWrite{
				{Lock: L, Token: 2, Accepted: true, At: 1600 * ms},
				{Lock: L, Token: 1, Accepted: true, At: 1700 * ms},
			}
			return tl
		}, VStaleWrite},
		{"problems seen by the driver", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 3000)}
			tl.Problems = []Violation{{Kind: VCrash, Detail: "boom"}}
			return tl
		}, VCrash},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Check(tt.tl(), testLimits)
			if got := kinds(f.Violations); got != tt.want {
				t.Errorf("violations = %q, want %q: %+v", got, tt.want, f.Violations)
			}
		})
	}
}

func TestCheckCounts(t *testing.T) {
	tl := &Timeline{From: 0, To: 3000 * ms, Instances: 2, Locks: []string{"l"}}
	tl.Masterships = []Mastership{
		{Index: 0, Lock: "l", Token: 1, Start: 0, Stop: 2050 * ms},
		{Index: 1, Lock: "l", Token: 2, Start: 900 * ms, Stop: 3000 * ms},
	}
	tl.Stopped = []Window{{Index: 0, From: 200 * ms, To: 2000 * ms}}
	tl.Writes = []SinkWrite{
		{Lock: "l", Token: 1, Accepted: true, At: 100 * ms},
		{Lock: "l", Token: 2, Accepted: true, At: 901 * ms},
		{Lock: "l", Token: 1, Accepted: false, At: 2001 * ms},
	}
	f := Check(tl, testLimits)
	if len(f.Violations) != 0 {
		t.Fatalf("violations: %+v", f.Violations)
	}
	if f.ExcusedOverlaps != 1 || f.RejectedLate != 1 || f.MaxStopAfterCont != 50*time.Millisecond {
		t.Errorf("excused %d, rejected late %d, max stop after SIGCONT %v; want 1, 1, 50ms",
			f.ExcusedOverlaps, f.RejectedLate, f.MaxStopAfterCont)
	}
	if f.MaxGap != 700*time.Millisecond {
		t.Errorf("max gap %v, want 700ms (from SIGSTOP at 200ms to the new master at 900ms)", f.MaxGap)
	}
}

func TestSink(t *testing.T) {
	s := NewSink()
	steps := []struct {
		lock  string
		token int64
		want  bool
	}{
		{"a", 1, true}, {"a", 1, true}, {"a", 3, true}, {"a", 2, false}, {"b", 1, true}, {"a", 3, true}, {"a", 4, true}, {"a", 3, false},
	}
	for i, st := range steps {
		if got := s.Write(st.lock, st.token, 0, 1, 0); got != st.want {
			t.Errorf("step %d: Write(%s, %d) = %v, want %v", i, st.lock, st.token, got, st.want)
		}
	}
	if n := len(s.Log()); n != len(steps) {
		t.Errorf("log has %d entries, want %d", n, len(steps))
	}
}
