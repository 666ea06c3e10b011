//go:build linux

package bench

import (
	"os"
	"strconv"
	"strings"
)

// HostLoad is how busy the whole machine was during a scenario: other
// processes (other test suites, builds, the database's checkpoints) share
// the CPUs and the disk with the benchmark and widen its tails.
type HostLoad struct {
	// BusyPct is the share of all CPUs' time that was not idle (iowait
	// counts as idle), in percent, over the scenario.
	BusyPct float64 `json:"busyPct"`
	// IOWaitPct is the share of CPU time spent idle waiting for I/O.
	IOWaitPct float64 `json:"iowaitPct"`
	// Load1 is the one-minute load average at the end.
	Load1 float64 `json:"load1"`
}

// hostMark is a reading of /proc/stat's aggregate cpu line.
type hostMark struct {
	idle, iowait, total uint64
}

func markHost() hostMark {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return hostMark{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return hostMark{}
	}
	var m hostMark
	// user nice system idle iowait irq softirq steal ...; guest time is
	// already counted in user.
	for i, s := range f[1:min(len(f), 9)] {
		v, _ := strconv.ParseUint(s, 10, 64)
		m.total += v
		switch i {
		case 3:
			m.idle += v
		case 4:
			m.idle += v
			m.iowait = v
		}
	}
	return m
}

// since returns the load between m and now.
func (m hostMark) since() HostLoad {
	n := markHost()
	var h HostLoad
	if dt := n.total - m.total; n.total > m.total {
		h.BusyPct = 100 * float64(dt-(n.idle-m.idle)) / float64(dt)
		h.IOWaitPct = 100 * float64(n.iowait-m.iowait) / float64(dt)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			h.Load1, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	return h
}
