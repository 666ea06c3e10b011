package supervisor

import (
	"slices"
	"strings"
)

// EnvLock names the environment entry that holds the command's lock
// (childproc.EnvLock); the supervisor's trace marks carry it.
const EnvLock = "MASTERJOB_LOCK"

// WithEnv returns base with extra added, each entry of extra replacing
// every entry of base (and every earlier one of extra) of the same name.
// An environment with two entries of one name reads as the first in C's
// getenv and in Go, as the last in a shell: the command, the standby's
// start and the last will would see the runner's value, not theirs.
func WithEnv(base []string, extra ...string) []string {
	last := map[string]int{}
	for i, kv := range extra {
		last[envName(kv)] = i
	}
	out := slices.DeleteFunc(slices.Clone(base), func(kv string) bool {
		_, set := last[envName(kv)]
		return set
	})
	for i, kv := range extra {
		if last[envName(kv)] == i {
			out = append(out, kv)
		}
	}
	return out
}

// envName returns the name of an environment entry NAME=VALUE.
func envName(kv string) string {
	name, _, _ := strings.Cut(kv, "=")
	return name
}
