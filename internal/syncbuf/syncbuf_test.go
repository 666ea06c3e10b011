package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// Concurrent writes all land, whole (run with -race).
func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("ab\n"))
			}
		})
	}
	wg.Wait()
	if got := b.String(); strings.Count(got, "ab\n") != 800 || len(got) != 2400 {
		t.Fatalf("%d bytes, %d lines; want 2400 and 800", len(got), strings.Count(got, "ab\n"))
	}
}
