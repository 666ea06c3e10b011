//go:build linux

package chaos

import (
	"bufio"
	"strings"
	"testing"
)

func TestWriterLockIn(t *testing.T) {
	const locks = `1: POSIX  ADVISORY  READ 31401 fe:00:9978259 128 128
2: POSIX  ADVISORY  WRITE 31401 fe:00:9978259 120 120
2: -> POSIX  ADVISORY  WRITE 31402 fe:00:9978259 120 120
3: POSIX  ADVISORY  WRITE 31403 fe:00:9978259 0 EOF
4: POSIX  ADVISORY  WRITE 31404 fe:00:1111 120 120
5: POSIX  ADVISORY  WRITE 31405 fe:00:9978259 121 121
`
	for _, tt := range []struct {
		pid  int
		want bool
	}{
		{31401, true},  // holds the writer byte
		{31402, false}, // only waits for it
		{31403, true},  // a range covering it
		{31404, false}, // another file
		{31405, false}, // the checkpointer byte
		{99999, false},
	} {
		if got := writerLockIn(bufio.NewScanner(strings.NewReader(locks)), tt.pid, 9978259); got != tt.want {
			t.Errorf("pid %d: %v, want %v", tt.pid, got, tt.want)
		}
	}
}
