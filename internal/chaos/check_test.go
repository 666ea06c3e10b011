//go:build linux

package chaos

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

var testLimits = Limits{
	Heartbeat:    100 * time.Millisecond,
	Tolerance:    600 * time.Millisecond,
	Check:        300 * time.Millisecond,
	GapBound:     1000 * time.Millisecond,
	StopGrace:    100 * time.Millisecond,
	DisableSlack: 100 * time.Millisecond,
	LossSlack:    100 * time.Millisecond,
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
	told := func(m Mastership, at int64) Mastership {
		m.Cancelled = at * ms
		return m
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
		// A runner paused right after it let its child go: the child's
		// own start report comes after the pause began.
		{"runner paused as its child started", func() *Timeline {
			tl := base()
			a := m(0, 1, 100, 2010)
			a.Child = true
			tl.Masterships = []Mastership{a, m(1, 2, 900, 3000)}
			tl.Stopped = []Window{{Index: 0, From: 80 * ms, To: 2000 * ms, Cause: "stop"}}
			tl.Down = tl.Stopped
			return tl
		}, ""},
		{"executor paused before its job started: not excused", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 100, 2010), m(1, 2, 900, 3000)}
			tl.Stopped = []Window{{Index: 0, From: 80 * ms, To: 2000 * ms, Cause: "stop"}}
			tl.Down = tl.Stopped
			return tl
		}, VOverlap},
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
		{"no sign of running between SIGCONT and SIGKILL: not judged", func() *Timeline {
			tl := base()
			a := m(0, 1, 0, 2300)
			a.Reason = "killed"
			tl.Masterships = []Mastership{a, m(1, 2, 900, 3000)}
			tl.Stopped = []Window{{Index: 0, From: 200 * ms, To: 2000 * ms, Cause: "stop"}}
			tl.Down = tl.Stopped
			return tl
		}, ""},
		{"a write after SIGCONT shows it ran", func() *Timeline {
			tl := base()
			a := m(0, 1, 0, 2300)
			a.Reason = "killed"
			tl.Masterships = []Mastership{a, m(1, 2, 900, 3000)}
			tl.Stopped = []Window{{Index: 0, From: 200 * ms, To: 2000 * ms, Cause: "stop"}}
			tl.Down = tl.Stopped
			tl.Writes = []SinkWrite{{Lock: L, Token: 1, Sent: 2010 * ms, At: 2011 * ms}}
			return tl
		}, VLateStop},
		{"store-side loss, the holder's next renewal is slow", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1450), m(1, 2, 1700, 3000)}
			tl.Losses = []StoreLoss{{Lock: L, Mode: LossExpire, Token: 1, Called: 1000 * ms, Returned: 1001 * ms}}
			tl.Renewals = []Renewal{{Index: 0, Gen: 1, Began: 950 * ms, Ended: 990 * ms, OK: true}, {Index: 0, Gen: 1, Began: 1050 * ms, Ended: 1400 * ms, OK: true}}
			return tl
		}, ""},
		{"store-side loss, the holder's next renewal is fast", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1450), m(1, 2, 1700, 3000)}
			tl.Losses = []StoreLoss{{Lock: L, Mode: LossExpire, Token: 1, Called: 1000 * ms, Returned: 1001 * ms}}
			tl.Renewals = []Renewal{{Index: 0, Gen: 1, Began: 1050 * ms, Ended: 1060 * ms, OK: true}}
			return tl
		}, VStoreLossRunning},
		{"store-side loss, the holder's renewals fail", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1450), m(1, 2, 1700, 3000)}
			tl.Losses = []StoreLoss{{Lock: L, Mode: LossExpire, Token: 1, Called: 1000 * ms, Returned: 1001 * ms}}
			tl.Renewals = []Renewal{{Index: 0, Gen: 1, Began: 1050 * ms, Ended: 1150 * ms}}
			return tl
		}, ""},
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
		// An instance whose own store calls failed (a loaded host, no
		// fault) cannot take a lock: no healthy instance, no gap. The
		// same gap with the window on one instance only is still one.
		{"gap while every instance's store calls failed", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(1, 2, 1800, 3000)}
			tl.Down = []Window{{Index: 0, From: 500 * ms, To: 3000 * ms, Cause: "sigterm"}}
			tl.Unreachable = []Window{{Index: 1, From: 400 * ms, To: 1700 * ms, Cause: "store-calls-failed"}}
			return tl
		}, ""},
		{"gap while one instance's store calls failed", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(1, 2, 1800, 3000)}
			tl.Unreachable = []Window{{Index: 1, From: 400 * ms, To: 1700 * ms, Cause: "store-calls-failed"}}
			return tl
		}, VGap},
		{"slow stop after disable excused by failing store calls", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 800), m(1, 2, 2200, 3000)}
			tl.Unreachable = []Window{{Index: 0, From: 300 * ms, To: 900 * ms, Cause: "store-calls-failed"}}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 1, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
			return tl
		}, ""},
		// An instance killed right after it acquired (its job never
		// started) held the lock in the store for a lease.
		{"gap covered by an acquisition whose job never started", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(1, 3, 1800, 3000)}
			tl.Acquisitions = []Demotion{{Index: 1, Gen: 1, Lock: L, Token: 2, Kind: "acquired", At: 600 * ms}}
			return tl
		}, ""},
		{"a mastership counts from its acquisition", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(1, 2, 1800, 3000)}
			tl.Acquisitions = []Demotion{{Index: 1, Gen: 1, Lock: L, Token: 2, Kind: "acquired", At: 600 * ms}}
			return tl
		}, ""},
		// A check in flight when its instance was killed acquired the
		// lock; the instance never reported it. Its successor's takeover
		// tells the lease existed: it counts from the holder's last
		// reported check until the kill.
		{"gap covered by a lease acquired by a check in flight at a kill", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(0, 3, 2100, 3000)}
			tl.Lives = []Life{{ID: "b", Index: 1, Gen: 1, Hello: 10 * ms, LastCheck: 1100 * ms, Gone: 1200 * ms, KilledAt: 1150 * ms}}
			tl.Takeovers = []Takeover{{Lock: L, Token: 3, PrevHolder: "b", PrevToken: 2, At: 2100 * ms}}
			return tl
		}, ""},
		{"an unreported lease of an instance that was not killed covers nothing", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(0, 3, 2100, 3000)}
			tl.Lives = []Life{{ID: "b", Index: 1, Gen: 1, Hello: 10 * ms, LastCheck: 1100 * ms, Gone: 1200 * ms}}
			tl.Takeovers = []Takeover{{Lock: L, Token: 3, PrevHolder: "b", PrevToken: 2, At: 2100 * ms}}
			return tl
		}, VGap},
		{"an unreported lease counts only until its holder was killed", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(0, 3, 2300, 3000)}
			tl.Lives = []Life{{ID: "b", Index: 1, Gen: 1, Hello: 10 * ms, LastCheck: 1100 * ms, Gone: 1200 * ms, KilledAt: 1150 * ms}}
			tl.Takeovers = []Takeover{{Lock: L, Token: 3, PrevHolder: "b", PrevToken: 2, At: 2300 * ms}}
			return tl
		}, VGap},
		{"an acquisition of another token covers nothing", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 500), m(1, 3, 1800, 3000)}
			tl.Acquisitions = []Demotion{{Index: 1, Gen: 1, Lock: L, Token: 3, Kind: "acquired", At: 1700 * ms}}
			return tl
		}, VGap},
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
		{"release reserved for an instance that had shut down", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1000), m(2, 2, 1700, 3000)}
			tl.Lives = []Life{{ID: "b", Index: 1, Gen: 1, Bye: 500 * ms, Gone: 510 * ms}}
			tl.Reservations = []Reservation{{Index: 0, Gen: 1, Lock: L, Token: 1, Successor: "b", At: 1010 * ms}}
			return tl
		}, VReservedForDeparted},
		{"release reserved for an instance that shut down just before", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1000), m(2, 2, 1700, 3000)}
			tl.Lives = []Life{{ID: "b", Index: 1, Gen: 1, Bye: 700 * ms, Gone: 710 * ms}}
			tl.Reservations = []Reservation{{Index: 0, Gen: 1, Lock: L, Token: 1, Successor: "b", At: 1010 * ms}}
			return tl
		}, ""},
		{"release reserved for an instance that died, its record not yet stale", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1000), m(2, 2, 1700, 3000)}
			tl.Lives = []Life{{ID: "b", Index: 1, Gen: 1, Gone: 400 * ms}}
			tl.Reservations = []Reservation{{Index: 0, Gen: 1, Lock: L, Token: 1, Successor: "b", At: 1010 * ms}}
			return tl
		}, ""},
		{"release reserved for an instance that died long before", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1000), m(2, 2, 1700, 3000)}
			tl.Lives = []Life{{ID: "b", Index: 1, Gen: 1, Gone: 100 * ms}}
			tl.Reservations = []Reservation{{Index: 0, Gen: 1, Lock: L, Token: 1, Successor: "b", At: 1010 * ms}}
			return tl
		}, VReservedForDeparted},
		// The master learns of a Disable at its next renewal, as of a
		// store-side loss: a failed one excuses it up to a lease (seen in
		// CI: two renewals timed out under load, then SIGKILL).
		{"master running after disable, its next renewal failed", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 800), m(1, 2, 2200, 3000)}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 1, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
			tl.Renewals = []Renewal{{Index: 0, Gen: 1, Began: 480 * ms, Ended: 580 * ms, OK: false}}
			return tl
		}, ""},
		{"master running after disable, its next renewal was slow", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 800), m(1, 2, 2200, 3000)}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 1, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
			tl.Renewals = []Renewal{{Index: 0, Gen: 1, Began: 480 * ms, Ended: 790 * ms, OK: true}}
			return tl
		}, ""},
		{"master running after disable, its next renewal was fast", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 800), m(1, 2, 2200, 3000)}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 1, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
			tl.Renewals = []Renewal{{Index: 0, Gen: 1, Began: 480 * ms, Ended: 490 * ms, OK: true}}
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
		// A store-side delete took the lock's record (and its last token)
		// before the disable: Disable reports token 0. The earlier
		// masterships were not acquired under it; a later one was.
		{"disable after a deleted record: earlier masterships", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 5, 0, 400), m(1, 6, 2200, 3000)}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 0, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
			return tl
		}, ""},
		{"disable after a deleted record: acquired while disabled", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 5, 0, 300), m(1, 6, 1000, 3000)}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 0, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
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
		// A job slow to stop: told within a heartbeat of the disable, it
		// may take its time (the executor keeps renewing; StopDeadline
		// bounds it).
		{"slow stop after disable, told in time", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{told(m(0, 1, 0, 1300), 500), m(1, 2, 2200, 3000)}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 1, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
			return tl
		}, ""},
		{"slow stop after disable, told late", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{told(m(0, 1, 0, 1300), 700), m(1, 2, 2200, 3000)}
			tl.Controls = []ControlWindow{{Lock: L, DisableCalled: 450 * ms, DisableReturned: 460 * ms, Token: 1, EnableCalled: 1900 * ms, EnableReturned: 1910 * ms}}
			return tl
		}, VDisabledRunning},
		// Issue 7 item 1: stopping for a planned reason, the lease is lost
		// in the store, another instance acquires, the job runs on to the
		// old expiry.
		{"store-side loss during a planned stop, job runs to the old expiry", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{told(m(0, 1, 0, 1500), 900), m(1, 2, 1200, 3000)}
			tl.Losses = []StoreLoss{{Lock: L, Mode: LossDelete, Token: 1, Called: 1000 * ms, Returned: 1001 * ms}}
			return tl
		}, VStoreLossRunning},
		{"store-side loss, job stops within a heartbeat: the overlap is excused", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{told(m(0, 1, 0, 1150), 900), m(1, 2, 1050, 3000)}
			tl.Losses = []StoreLoss{{Lock: L, Mode: LossDelete, Token: 1, Called: 1000 * ms, Returned: 1001 * ms}}
			return tl
		}, ""},
		{"a loss after the newer master started excuses nothing", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1150), m(1, 2, 1050, 3000)}
			tl.Losses = []StoreLoss{{Lock: L, Mode: LossDelete, Token: 1, Called: 1100 * ms, Returned: 1101 * ms}}
			return tl
		}, VOverlap},
		{"store-side loss of a holder cut from the store: a lease to stop", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1500), m(1, 2, 1700, 3000)}
			tl.Down = []Window{{Index: 0, From: 900 * ms, To: 2000 * ms, Cause: "cut"}}
			tl.Losses = []StoreLoss{{Lock: L, Mode: LossExpire, Token: 1, Called: 1000 * ms, Returned: 1001 * ms}}
			return tl
		}, ""},
		{"store-side loss of a SIGSTOPped holder: until it runs again", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 2050), m(1, 2, 1700, 3000)}
			tl.Stopped = []Window{{Index: 0, From: 1050 * ms, To: 2000 * ms, Cause: "stop"}}
			tl.Down = tl.Stopped
			tl.Losses = []StoreLoss{{Lock: L, Mode: LossExpire, Token: 1, Called: 1000 * ms, Returned: 1001 * ms}}
			return tl
		}, ""},
		{"store-side loss of a stalled holder: until it runs again", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1450), m(1, 2, 1700, 3000)}
			tl.Resumed = []Window{{Index: 0, From: 1050 * ms, To: 1400 * ms}}
			tl.Losses = []StoreLoss{{Lock: L, Mode: LossExpire, Token: 1, Called: 1000 * ms, Returned: 1001 * ms}}
			return tl
		}, ""},
		{"store-side loss when nothing was held checks nothing", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1000), m(1, 2, 1300, 3000)}
			tl.Losses = []StoreLoss{{Lock: L, Mode: LossDelete, Called: 1100 * ms, Returned: 1101 * ms}}
			return tl
		}, ""},
		{"reported lost, job runs to the old expiry", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{told(m(0, 1, 0, 1500), 900), m(1, 2, 1600, 3000)}
			tl.Demotions = []Demotion{{Index: 0, Gen: 1, Lock: L, Token: 1, Kind: "lost", Reason: "masterjob: lease lost", At: 1100 * ms}}
			return tl
		}, VLossRunning},
		{"reported lost, job stops at once", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{told(m(0, 1, 0, 1110), 900), m(1, 2, 1600, 3000)}
			tl.Demotions = []Demotion{{Index: 0, Gen: 1, Lock: L, Token: 1, Kind: "lost", Reason: "masterjob: lease lost", At: 1100 * ms}}
			return tl
		}, ""},
		{"demoted with the lease expired, job runs on", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1500), m(1, 2, 1600, 3000)}
			tl.Demotions = []Demotion{{Index: 0, Gen: 1, Lock: L, Token: 1, Kind: "demoted", Reason: "masterjob: lease expired before the instance noticed", At: 1100 * ms}}
			return tl
		}, VLossRunning},
		{"demoted at the trust window: the job may use the lease", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1500), m(1, 2, 1600, 3000)}
			tl.Demotions = []Demotion{{Index: 0, Gen: 1, Lock: L, Token: 1, Kind: "demoted", Reason: "masterjob: lease not renewed within the trust window", At: 1100 * ms}}
			return tl
		}, ""},
		{"reported lost by another generation checks nothing", func() *Timeline {
			tl := base()
			tl.Masterships = []Mastership{m(0, 1, 0, 1500), m(1, 2, 1600, 3000)}
			tl.Demotions = []Demotion{{Index: 0, Gen: 2, Lock: L, Token: 1, Kind: "lost", At: 1100 * ms}}
			return tl
		}, ""},
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

func TestGapsExcusedByFailingCallsAreCounted(t *testing.T) {
	const L = "lock"
	tl := &Timeline{From: 0, To: 3000 * ms, Instances: 2, Locks: []string{L},
		Masterships: []Mastership{{Index: 0, Gen: 1, Lock: L, Token: 1, Start: 0, Stop: 500 * ms},
			{Index: 1, Gen: 1, Lock: L, Token: 2, Start: 1800 * ms, Stop: 3000 * ms}},
		Down:        []Window{{Index: 0, From: 500 * ms, To: 3000 * ms, Cause: "sigterm"}},
		Unreachable: []Window{{Index: 1, From: 400 * ms, To: 1700 * ms, Cause: "store-calls-failed"}},
	}
	f := Check(tl, testLimits)
	if len(f.Violations) != 0 || f.GapsExcusedByFailingCalls != 1 {
		t.Errorf("violations %v, gaps excused by failing calls %d; want none and 1", kinds(f.Violations), f.GapsExcusedByFailingCalls)
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

// Failing store calls during a fault on that instance are explained by it;
// others are reported as unprovoked. A period that goes on after the
// faults that explain it ended is reported with how long it went on
// (a client slow to reconnect).
func TestProvoked(t *testing.T) {
	tl := &Timeline{
		Down: []Window{{Index: 0, From: 100 * ms, To: 200 * ms, Cause: "cut"},
			{Index: 0, From: 300 * ms, To: 350 * ms, Cause: "cut"}},
		Degraded:     []Window{{Index: 0, From: 320 * ms, To: 380 * ms, Cause: "latency"}},
		StoreBlocked: []Window{{Index: 2, From: 1000 * ms, To: 1100 * ms}},
	}
	for _, tt := range []struct {
		w   Window
		end int64
		ok  bool
	}{
		{Window{Index: 0, From: 150 * ms, To: 250 * ms}, 200 * ms, true},
		{Window{Index: 0, From: 150 * ms, To: 400 * ms}, 380 * ms, true},
		{Window{Index: 0, From: 200 * ms, To: 290 * ms}, 0, false},
		{Window{Index: 1, From: 150 * ms, To: 400 * ms}, 0, false},
		{Window{Index: 1, From: 1050 * ms, To: 1060 * ms}, 1100 * ms, true},
	} {
		if end, ok := tl.provokedUntil(tt.w); end != tt.end || ok != tt.ok {
			t.Errorf("provokedUntil(%+v) = %v, %v; want %v, %v", tt.w, end, ok, tt.end, tt.ok)
		}
	}
	r := newReport(Config{}, "run", &Timeline{
		Down:        tl.Down,
		Degraded:    tl.Degraded,
		Unreachable: []Window{{Index: 0, From: 150 * ms, To: 250 * ms}, {Index: 0, From: 310 * ms, To: 340 * ms}, {Index: 1, From: 10 * ms, To: 20 * ms}},
	}, nil, Findings{})
	if r.Unreachable != 3 || r.UnprovokedUnreachable != 1 || !slices.Equal(r.Overruns, []time.Duration{50 * time.Millisecond}) {
		t.Errorf("report: %d failing periods, %d unprovoked, overruns %v; want 3, 1, [50ms]", r.Unreachable, r.UnprovokedUnreachable, r.Overruns)
	}
}

func TestHeldBy(t *testing.T) {
	for _, tt := range []struct {
		holder string
		want   bool
	}{
		{"i1-g2-32724", true},
		{"vm-32724-3f01e21910c9", true},
		{"i1-g1-32670", false},
		{"i1-g2-327240", false},
	} {
		if got := heldBy(tt.holder, 32724) || heldBy(tt.holder, 15); got != tt.want {
			t.Errorf("heldBy(%q, 32724 or 15) = %v, want %v", tt.holder, got, tt.want)
		}
	}
}

// TestFailingAtShutdown: a lease found held after the final shutdown is
// left to expire, not a leak, only when its holder's store calls were
// failing (or its store degraded or cut) until the run ended; a failure
// that had ended before does not excuse it.
func TestFailingAtShutdown(t *testing.T) {
	d := &driver{}
	d.tl.To = 1000 * ms
	d.tl.Unreachable = []Window{{Index: 1, From: 900 * ms, To: 1200 * ms}, {Index: 2, From: 100 * ms, To: 500 * ms}}
	d.tl.Degraded = []Window{{Index: 3, From: 800 * ms, To: 1100 * ms}}
	for i, want := range []bool{false, true, false, true} {
		if got := d.failingAtShutdown(i); got != want {
			t.Errorf("instance %d: failingAtShutdown = %v, want %v", i, got, want)
		}
	}
}

// TestExecutorLogReachReadsFailedReleases: in the executor mode, whose
// observer reports no release, a logged failed release starts a period of
// failing calls, which the instance's exit reports; nothing else in that
// log is read (the observer reports it).
func TestExecutorLogReachReadsFailedReleases(t *testing.T) {
	var out bytes.Buffer
	in := &instance{enc: json.NewEncoder(&out)}
	in.reach.in = in
	l := &logReach{w: io.Discard, r: &in.reach, window: 100 * time.Millisecond, releasesOnly: true}
	for _, line := range []string{
		`level=INFO msg="became master" instance=i0 lock=chaos-lock-0 token=7`,
		`level=WARN msg="heartbeat failed; retrying" instance=i0`,
		`level=INFO msg="standing by: no master" instance=i0 lock=chaos-lock-1`,
	} {
		if _, err := l.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	in.reach.flush()
	if out.Len() != 0 {
		t.Fatalf("lines other than a failed release were read: %s", out.String())
	}
	if _, err := l.Write([]byte(`level=WARN msg="release failed; the lease will expire instead" instance=i0 err="timeout"` + "\n")); err != nil {
		t.Fatal(err)
	}
	in.reach.flush()
	var began, m Message
	dec := json.NewDecoder(&out)
	if err := dec.Decode(&began); err != nil {
		t.Fatalf("after a failed release: %v (%q)", err, out.String())
	}
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("after a failed release: %v (%q)", err, out.String())
	}
	if began.Type != msgFailing || began.From != m.From {
		t.Fatalf("the period's start was reported as %+v, want %s from %d, before its end", began, msgFailing, m.From)
	}
	if m.Type != msgUnreachable || m.T-m.From < int64(100*time.Millisecond) {
		t.Fatalf("after a failed release the instance reported %+v, want a period of failing calls of at least the release's timeout", m)
	}
}

// TestUnreachableUntilDeath: an instance reports the start of a period of
// failing store calls at once (msgFailing), and a period it never closed
// ends at its death. A runner SIGKILLed while its calls failed, after a
// restart of etcd, once sent nothing: the checker judged it healthy and
// flagged it for running its job 680 ms after a Disable it could not see.
func TestUnreachableUntilDeath(t *testing.T) {
	d := &driver{open: map[mkey]*Mastership{}}
	s := &slot{index: 1}
	d.onMessage(s, 1, false, Message{Type: msgFailing, From: 100 * ms, T: 400 * ms})
	d.onMessage(s, 2, false, Message{Type: msgFailing, From: 500 * ms, T: 600 * ms})
	d.onMessage(s, 2, false, Message{Type: msgUnreachable, From: 500 * ms, T: 700 * ms})
	d.endFailing(1, 1, 900*ms) // gen 1 died failing
	d.endFailing(1, 2, 950*ms) // gen 2 had closed its period
	want := []Window{
		{Index: 1, From: 500 * ms, To: 700 * ms, Cause: "store-calls-failed"},
		{Index: 1, From: 100 * ms, To: 900 * ms, Cause: "store-calls-failed"},
	}
	if !reflect.DeepEqual(d.tl.Unreachable, want) {
		t.Fatalf("unreachable windows %+v, want %+v", d.tl.Unreachable, want)
	}

	// The checker excuses a disabled master that could not reach the
	// store, and only then.
	const L = "lock"
	tl := &Timeline{From: 0, To: 3000 * ms, Instances: 2, Locks: []string{L},
		Masterships: []Mastership{{Index: 1, Gen: 1, Lock: L, Token: 5, Start: 50 * ms, Stop: 800 * ms, Reason: "killed"}},
		Controls:    []ControlWindow{{Lock: L, DisableCalled: 150 * ms, DisableReturned: 160 * ms, Token: 5, EnableCalled: 2000 * ms, EnableReturned: 2010 * ms}},
		Lives:       []Life{{Index: 1, Gen: 1, KilledAt: 795 * ms, Gone: 800 * ms}}}
	if f := Check(tl, testLimits); !strings.Contains(kinds(f.Violations), VDisabledRunning) {
		t.Fatalf("a healthy master ran 640 ms after a Disable: violations %v, want %s", kinds(f.Violations), VDisabledRunning)
	}
	tl.Unreachable = d.tl.Unreachable
	if f := Check(tl, testLimits); strings.Contains(kinds(f.Violations), VDisabledRunning) {
		t.Fatalf("a master that could not reach the store was flagged: %v", f.Violations)
	}
}

// A runner suspended by SIGTSTP stops its command with it: an overlap with
// the next master is excused only if the old command made no write after
// the next one started and died within the stop grace of SIGCONT.
// TestCheckSuspendedRunner: a runner suspended (SIGTSTP) past its lease
// stops its command with it. The next master may start while it is
// suspended, or just after the SIGCONT, before the resumed runner has
// killed its stopped command (seen in a runner-mode run on SQLite: 0.9 ms
// of overlap); the suspension excuses either, within the stop grace and
// with no write.
func TestCheckSuspendedRunner(t *testing.T) {
	const L = "l"
	timeline := func(writes []SinkWrite, oldStop, suspended, nextStart int64) *Timeline {
		return &Timeline{From: 0, To: 3000 * ms, Instances: 2, Locks: []string{L},
			Masterships: []Mastership{
				{Index: 0, Gen: 1, Lock: L, Token: 1, Start: 0, Stop: oldStop, Child: true},
				{Index: 1, Gen: 1, Lock: L, Token: 2, Start: nextStart, Stop: 3000 * ms, Child: true},
			},
			Suspended: []Window{{Index: 0, From: suspended, To: 2000 * ms, Cause: "suspend"}},
			Down:      []Window{{Index: 0, From: suspended, To: 2000 * ms, Cause: "suspend"}},
			Writes:    writes,
		}
	}
	const during, after = 900 * ms, 2003 * ms // the next start
	for _, c := range []struct {
		name                 string
		writes               []SinkWrite
		oldStop              int64
		suspended, nextStart int64
		want                 string
	}{
		{"stopped with its runner", []SinkWrite{{Lock: L, Token: 1, Sent: 100 * ms, Accepted: true}}, 2010 * ms, 200 * ms, during, ""},
		{"ran beside the next master", []SinkWrite{{Lock: L, Token: 1, Sent: 100 * ms, Accepted: true},
			{Lock: L, Token: 1, Sent: 950 * ms}}, 2010 * ms, 200 * ms, during, VSuspendedRan},
		{"outlived the SIGCONT", nil, 2500 * ms, 200 * ms, during, VSuspendedRan},
		{"next started after the SIGCONT; killed while stopped", nil, 2004 * ms, 1200 * ms, after, ""},
		{"next started after the SIGCONT; ran after it beside the next master", []SinkWrite{{Lock: L, Token: 1, Sent: 2003500 * int64(time.Microsecond)}},
			2004 * ms, 1200 * ms, after, VSuspendedRan},
		{"next started after the SIGCONT; outlived it", nil, 2500 * ms, 1200 * ms, after, VSuspendedRan},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := Check(timeline(c.writes, c.oldStop, c.suspended, c.nextStart), testLimits)
			if got := kinds(f.Violations); got != c.want {
				t.Fatalf("violations %v, want %v", got, c.want)
			}
			if wantExcused := c.want == ""; (f.SuspendedOverlaps == 1) != wantExcused {
				t.Fatalf("overlaps excused by the suspension: %d", f.SuspendedOverlaps)
			}
		})
	}
}

// A master whose runner is suspended (its command stopped with it) across
// a Disable is judged as a SIGSTOPped one: it has until the stop grace
// after SIGCONT, not a lease after the Disable.
func TestCheckDisableWhileSuspended(t *testing.T) {
	const L = "l"
	tl := &Timeline{From: 0, To: 3000 * ms, Instances: 2, Locks: []string{L},
		Masterships: []Mastership{{Index: 0, Gen: 1, Lock: L, Token: 1, Start: 0, Stop: 2005 * ms, Child: true}},
		Suspended:   []Window{{Index: 0, From: 200 * ms, To: 2000 * ms, Cause: "suspend"}},
		Down:        []Window{{Index: 0, From: 200 * ms, To: 2000 * ms, Cause: "suspend"}},
		Controls:    []ControlWindow{{Lock: L, DisableCalled: 500 * ms, DisableReturned: 501 * ms, Token: 1, EnableCalled: 2500 * ms, EnableReturned: 2501 * ms}},
	}
	if f := Check(tl, testLimits); len(f.Violations) != 0 {
		t.Fatalf("violations %v; want none", kinds(f.Violations))
	}
	tl.Suspended = nil // the same run, had the runner merely been cut off
	if f := Check(tl, testLimits); !strings.Contains(kinds(f.Violations), VDisabledRunning) {
		t.Fatalf("violations %v; want %s without the suspension", kinds(f.Violations), VDisabledRunning)
	}
}

// A SIGSTOP sent a moment before a job reported its start (the signal
// takes effect after kill returns) excuses the overlap as one sent after
// it does: seen in a 200-fault PostgreSQL run, the start reported 47 µs
// after the kill. One sent well before it does not.
func TestCheckStopJustBeforeTheStart(t *testing.T) {
	const L = "l"
	const us = int64(time.Microsecond)
	timeline := func(stopFrom int64) *Timeline {
		return &Timeline{From: 0, To: 3000 * ms, Instances: 2, Locks: []string{L},
			Masterships: []Mastership{
				{Index: 0, Gen: 1, Lock: L, Token: 1, Start: 100 * ms, Stop: 2010 * ms},
				{Index: 1, Gen: 1, Lock: L, Token: 2, Start: 900 * ms, Stop: 3000 * ms},
			},
			Stopped: []Window{{Index: 0, From: stopFrom, To: 2000 * ms, Cause: "stop"}},
			Down:    []Window{{Index: 0, From: stopFrom, To: 2000 * ms, Cause: "stop"}},
		}
	}
	if f := Check(timeline(100*ms-47*us), testLimits); len(f.Violations) != 0 || f.ExcusedOverlaps != 1 {
		t.Fatalf("SIGSTOP 47µs before the start: violations %v, excused %d; want none and 1", kinds(f.Violations), f.ExcusedOverlaps)
	}
	if f := Check(timeline(50*ms), testLimits); !strings.Contains(kinds(f.Violations), VOverlap) {
		t.Fatalf("SIGSTOP 50ms before the start: violations %v; want %s", kinds(f.Violations), VOverlap)
	}
}

// TestRunnerLogReachReportsTakeovers: a runner's log names its executor
// (once, from its first line) and, in a takeover's "became master" line,
// the lease it took over; the driver needs both to excuse a gap left by a
// runner killed as its check acquired the lock (Findings.unreportedAtDeath),
// as it does in the executor mode.
func TestRunnerLogReachReportsTakeovers(t *testing.T) {
	var out bytes.Buffer
	in := &instance{enc: json.NewEncoder(&out)}
	in.reach.in = in
	l := &logReach{w: io.Discard, r: &in.reach, window: 100 * time.Millisecond}
	for _, line := range []string{
		`time=2026-12-02T13:21:16.168Z level=INFO msg="following lock" lock=chaos-lock-0 instance=vm-1-aa store=sqlite:///x command=/bin/sh`,
		`time=2026-12-02T13:21:17.171Z level=INFO msg="became master" instance=vm-1-aa lock=chaos-lock-0 token=3`,
		`time=2026-12-02T13:21:19.171Z level=INFO msg="became master: took over an expired lease" instance=vm-1-aa lock=chaos-lock-0 token=9 previous.instance=vm-2-bb previous.token=8`,
	} {
		if _, err := l.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	var got []Message
	dec := json.NewDecoder(&out)
	for dec.More() {
		var m Message
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	want := []Message{
		{Type: msgIdentity, ID: "vm-1-aa"},
		{Type: msgTransition, Kind: "acquired", Lock: "chaos-lock-0", Token: 3},
		{Type: msgTransition, Kind: "acquired", Lock: "chaos-lock-0", Token: 9, PrevHolder: "vm-2-bb", PrevToken: 8},
	}
	if len(got) != len(want) {
		t.Fatalf("sent %d messages, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g := got[i]
		if g.T == 0 {
			t.Errorf("message %d has no time", i)
		}
		g.T = 0
		if !reflect.DeepEqual(g, want[i]) {
			t.Errorf("message %d = %+v, want %+v", i, g, want[i])
		}
	}

	// The driver gives the id to the runner's Life, which its hello
	// created without one.
	d := &driver{open: map[mkey]*Mastership{}}
	d.tl.Lives = []Life{{Index: 2, Gen: 1, Hello: 5 * ms}}
	d.onMessage(&slot{index: 2}, 1, false, Message{Type: msgIdentity, ID: "vm-1-aa", T: 6 * ms})
	if d.tl.Lives[0].ID != "vm-1-aa" || d.tl.Lives[0].Hello != 5*ms {
		t.Errorf("Life after the identity = %+v, want id vm-1-aa and the hello's time", d.tl.Lives[0])
	}
}

// A runner's job.cancel reaches the timeline as a RunnerStop of its slot
// and generation, which checkWills reads.
func TestDriverRecordsRunnerStops(t *testing.T) {
	d := &driver{open: map[mkey]*Mastership{}}
	d.onMessage(&slot{index: 2}, 3, false, Message{Type: msgRunnerStop, Lock: "L", T: 7 * ms})
	want := []RunnerStop{{Index: 2, Gen: 3, Lock: "L", T: 7 * ms}}
	if !slices.Equal(d.tl.RunnerStops, want) {
		t.Errorf("RunnerStops = %+v, want %+v", d.tl.RunnerStops, want)
	}
}

func TestCheckWills(t *testing.T) {
	const L = "lock"
	killed := Mastership{Index: 0, Gen: 1, Lock: L, Token: 1, Start: 0, Stop: 1010 * ms, Reason: "killed", How: "died", Child: true}
	next := Mastership{Index: 1, Gen: 1, Lock: L, Token: 2, Start: 1100 * ms, Stop: 3000 * ms, Child: true}
	will := WillRun{Index: 0, Gen: 1, Lock: L, Token: 1, Start: 1050 * ms, End: 1060 * ms, Exit: 0}
	base := func() *Timeline {
		return &Timeline{From: 0, To: 5000 * ms, Instances: 2, Locks: []string{L},
			Masterships: []Mastership{killed, next},
			Lives:       []Life{{Index: 0, Gen: 1, KilledAt: 1000 * ms, Gone: 1005 * ms}},
			Wills:       []WillRun{will}}
	}
	tests := []struct {
		name     string
		change   func(*Timeline)
		expected int  // wills owed
		missing  bool // a VWillMissing
	}{
		{"the will ran", func(*Timeline) {}, 1, false},
		{"no will", func(tl *Timeline) { tl.Wills = nil }, 1, true},
		{"a will for another token", func(tl *Timeline) { tl.Wills[0].Token = 7 }, 1, true},
		{"a will of another runner", func(tl *Timeline) { tl.Wills[0].Gen = 2 }, 1, true},
		{"a will after the lease", func(tl *Timeline) { tl.Wills[0].Start = 1700 * ms }, 1, true},
		{"the command was told to stop first", func(tl *Timeline) { tl.Masterships[0].Cancelled = 900 * ms; tl.Wills = nil }, 0, false},
		{"the command died before the kill", func(tl *Timeline) { tl.Masterships[0].Stop = 990 * ms; tl.Wills = nil }, 0, false},
		{"the runner was stopping the command", func(tl *Timeline) {
			tl.RunnerStops = []RunnerStop{{Index: 0, Gen: 1, Lock: tl.Masterships[0].Lock, T: 996 * ms}}
			tl.Wills = nil
		}, 0, false},
		{"another runner was stopping its command", func(tl *Timeline) {
			tl.RunnerStops = []RunnerStop{{Index: 1, Gen: 1, Lock: tl.Masterships[0].Lock, T: 996 * ms}}
			tl.Wills = nil
		}, 1, true},
		{"the runner stopped an earlier command", func(tl *Timeline) {
			tl.RunnerStops = []RunnerStop{{Index: 0, Gen: 1, Lock: tl.Masterships[0].Lock, T: tl.Masterships[0].Start - ms}}
			tl.Wills = nil
		}, 1, true},
		{"the runner was not killed", func(tl *Timeline) { tl.Lives[0].KilledAt = 0; tl.Wills = nil }, 0, false},
		{"the runner was paused meanwhile", func(tl *Timeline) {
			tl.Stopped = []Window{{Index: 0, From: 500 * ms, To: 1001 * ms}}
			tl.Wills = nil
		}, 0, false},
		{"the next generation was paused after the kill", func(tl *Timeline) {
			tl.Stopped = []Window{{Index: 0, From: 1200 * ms, To: 3000 * ms}}
			tl.Wills = nil
		}, 1, true},
		{"another runner was paused", func(tl *Timeline) {
			tl.Stopped = []Window{{Index: 1, From: 500 * ms, To: 1001 * ms}}
			tl.Wills = nil
		}, 1, true},
		{"too close to the end to judge", func(tl *Timeline) { tl.To = 2000 * ms; tl.Wills = nil }, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := base()
			tt.change(tl)
			f := Check(tl, testLimits)
			missing := strings.Contains(kinds(f.Violations), VWillMissing)
			if f.WillsExpected != tt.expected || missing != tt.missing {
				t.Errorf("wills owed %d, missing %v (violations %s); want %d, %v", f.WillsExpected, missing, kinds(f.Violations), tt.expected, tt.missing)
			}
		})
	}
	f := Check(base(), testLimits)
	if want := []time.Duration{40 * time.Millisecond}; !reflect.DeepEqual(f.WillStarts, want) || f.WillsFailed != 0 {
		t.Errorf("WillStarts %v, WillsFailed %d; want %v, 0", f.WillStarts, f.WillsFailed, want)
	}
	tl := base()
	tl.Wills[0].Exit = 1
	if f := Check(tl, testLimits); f.WillsFailed != 1 || strings.Contains(kinds(f.Violations), VWillMissing) {
		t.Errorf("a will that failed: WillsFailed %d, violations %s; want 1 and no %s", f.WillsFailed, kinds(f.Violations), VWillMissing)
	}
}

// TestCheckDisableCutThenPaused: a master cut off from the store learns of
// a Disable by the end of its trust window, unless it is SIGSTOPped before
// that: then it is bound by the SIGCONT (a run on etcd flagged such a
// master, judged before the pause was looked at).
func TestCheckDisableCutThenPaused(t *testing.T) {
	const L = "l"
	timeline := func(told int64, paused bool) *Timeline {
		tl := &Timeline{From: 0, To: 5000 * ms, Instances: 2, Locks: []string{L},
			Masterships: []Mastership{{Index: 0, Gen: 1, Lock: L, Token: 1, Start: 0, Cancelled: told * ms, Stop: (told + 5) * ms, Child: true}},
			Down:        []Window{{Index: 0, From: 300 * ms, To: 900 * ms, Cause: "cut"}},
			Controls:    []ControlWindow{{Lock: L, DisableCalled: 500 * ms, DisableReturned: 501 * ms, Token: 1, EnableCalled: 4500 * ms, EnableReturned: 4501 * ms}},
		}
		if paused {
			// After a heartbeat, within the trust window.
			tl.Stopped = []Window{{Index: 0, From: 1000 * ms, To: 2500 * ms, Cause: "stop"}}
			tl.Down = append(tl.Down, Window{Index: 0, From: 1000 * ms, To: 2500 * ms, Cause: "stop"})
		}
		return tl
	}
	for _, tt := range []struct {
		name   string
		told   int64
		paused bool
		want   bool // a VDisabledRunning
	}{
		{"told just after SIGCONT", 2550, true, false},
		{"told long after SIGCONT", 2800, true, true},
		{"told at the same time, never paused", 2550, false, true},
		{"told within the trust window, never paused", 1150, false, false},
	} {
		f := Check(timeline(tt.told, tt.paused), testLimits)
		if got := strings.Contains(kinds(f.Violations), VDisabledRunning); got != tt.want {
			t.Errorf("%s: violations %v; want %s: %v", tt.name, kinds(f.Violations), VDisabledRunning, tt.want)
		}
	}
}

// TestReservationDatedFromTheStop: the executor reports Released once its
// release has returned, but chose the successor when the job stopped: the
// reservation the checker judges is dated from that stop, so a slow
// release does not make a choice look later than it was.
func TestReservationDatedFromTheStop(t *testing.T) {
	d := &driver{open: map[mkey]*Mastership{}}
	s := &slot{index: 0}
	d.onMessage(s, 1, false, Message{Type: msgStart, Lock: "L", Token: 3, T: 100 * ms})
	d.onMessage(s, 1, false, Message{Type: msgStop, Lock: "L", Token: 3, Reason: "shutdown", T: 400 * ms})
	d.onMessage(s, 1, false, Message{Type: msgTransition, Kind: "released", Lock: "L", Token: 3, Successor: "b", T: 900 * ms})
	// A transition of no mastership the driver knows keeps its own time.
	d.onMessage(s, 1, false, Message{Type: msgTransition, Kind: "released", Lock: "L", Token: 4, Successor: "b", T: 950 * ms})
	want := []Reservation{
		{Index: 0, Gen: 1, Lock: "L", Token: 3, Successor: "b", At: 400 * ms},
		{Index: 0, Gen: 1, Lock: "L", Token: 4, Successor: "b", At: 950 * ms},
	}
	if !reflect.DeepEqual(d.tl.Reservations, want) {
		t.Fatalf("reservations %+v, want %+v", d.tl.Reservations, want)
	}
}

// TestRaceReportsAreViolations: a report that a process of the run wrote
// where the driver's GORACE points (one file per pid) is a VRace naming the
// pid; an empty file, which the race runtime leaves when it had nothing to
// say, is none.
func TestRaceReportsAreViolations(t *testing.T) {
	var log strings.Builder
	d := &driver{dir: t.TempDir()}
	d.cfg.Log = &log
	report := "==================\nWARNING: DATA RACE\nWrite at 0x00c000 by goroutine 7:\n  main.f()\n\nPrevious read by main goroutine:\n  main.g()\n"
	if err := os.WriteFile(d.raceLogPath()+".4242", []byte(report), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.raceLogPath()+".4343", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d.checkRaceReports()
	if len(d.tl.Problems) != 1 {
		t.Fatalf("problems %+v, want one", d.tl.Problems)
	}
	v := d.tl.Problems[0]
	if v.Kind != VRace || !strings.Contains(v.Detail, "pid 4242") || !strings.Contains(v.Detail, ": WARNING: DATA RACE | Write at 0x00c000 by goroutine 7: | main.f()") || strings.Contains(v.Detail, "Previous read") {
		t.Fatalf("violation %+v", v)
	}
	if !strings.Contains(log.String(), "VIOLATION data-race") {
		t.Fatalf("not in the run's log: %q", log.String())
	}
}
