//go:build linux

package bench

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where the benchmark ran.
type Machine struct {
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu"`
	MemTotal  string `json:"memTotal"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"goVersion"`
	Postgres  string `json:"postgres,omitempty"`
	SQLite    string `json:"sqlite,omitempty"`
	Etcd      string `json:"etcd,omitempty"`
	Redis     string `json:"redis,omitempty"`
	MySQL     string `json:"mysql,omitempty"`
	Date      string `json:"date"`
}

// DescribeMachine reads the machine's description from /proc and the
// runtime. pgDSN, if set, is asked for the server version.
func DescribeMachine(ctx context.Context, pgDSN string) Machine {
	m := Machine{
		NProc:     runtime.NumCPU(),
		GoVersion: runtime.Version(),
		CPU:       procField("/proc/cpuinfo", "model name"),
		MemTotal:  procField("/proc/meminfo", "MemTotal"),
		Date:      time.Now().UTC().Format(time.RFC3339),
		SQLite:    "modernc.org/sqlite (pure Go, " + sqliteVersion() + ")",
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if pgDSN != "" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if conn, err := connectPG(ctx, pgDSN); err == nil {
			_ = conn.QueryRow(ctx, "SELECT version()").Scan(&m.Postgres)
			_ = conn.Close(ctx)
		}
	}
	return m
}

// procField returns the value of the first "key: value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			v = strings.TrimSpace(v)
			if key == "MemTotal" {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64); err == nil {
					return strconv.FormatFloat(float64(kb)/(1<<20), 'f', 1, 64) + " GiB"
				}
			}
			return v
		}
	}
	return ""
}
