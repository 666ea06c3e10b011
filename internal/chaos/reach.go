//go:build linux

package chaos

import (
	"bytes"
	"io"
	"regexp"
	"strconv"
	"sync"
	"time"
)

// reach tracks, inside an instance, whether its own store calls succeed,
// and reports each period in which they failed: msgFailing when it begins
// (From: the start of the first failed call), msgUnreachable when it ends
// (T: the end of the next successful one, or the instance's exit). On a
// loaded host a store can answer too slowly for the calls' deadlines
// although the driver injected no fault: such an instance is not
// "healthy" in the sense of the liveness promise (it cannot reach the
// store), and the checker must know it rather than blame the library.
type reach struct {
	in      *instance
	mu      sync.Mutex
	failing bool
	since   int64
}

// result records one store call that began at began.
func (r *reach) result(began int64, failed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case failed && !r.failing:
		r.failing, r.since = true, began
		// Said at once: a SIGKILL ends the process before its period
		// closes, and the driver then ends the period at the death. A
		// runner killed while its calls failed after a store restart was
		// once judged healthy for the whole of it.
		r.in.send(Message{Type: msgFailing, From: began, T: Mono()})
	case !failed && r.failing:
		r.failing = false
		r.in.send(Message{Type: msgUnreachable, From: r.since, T: Mono()})
	}
}

// flush reports a period of failures still open (the instance is exiting).
func (r *reach) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing {
		r.failing = false
		r.in.send(Message{Type: msgUnreachable, From: r.since, T: Mono()})
	}
}

// logReach is the runner mode's view of its store calls: `masterjob run`
// offers no observer, so it reads the runner's log (slog text lines) as it
// is written, passing every line on to w. A failed call is logged when it
// fails ("... failed; retrying", "release failed"); it began at most the
// trust window earlier, which is what it is taken to be (the widest
// reading). A success ends the period: "store reachable again", and any
// acquisition or standing-by line, which only a successful call produces.
type logReach struct {
	w       io.Writer
	r       *reach
	window  time.Duration
	partial []byte
	// identified: the executor's id was sent (msgIdentity).
	identified bool
	// releasesOnly: the executor mode's log, whose observer reports every
	// other call; only its failed releases are read here (a release that
	// times out at shutdown leaves the lease to expire: the instance could
	// not reach the store).
	releasesOnly bool
}

var (
	failedRelease = []byte(`msg="release failed`)
	failedCall    = [][]byte{[]byte(`msg="check failed; retrying"`), []byte(`msg="heartbeat failed; retrying"`), failedRelease}
	succeededCall = [][]byte{[]byte(`msg="store reachable again"`), []byte(`msg="became master`),
		[]byte(`msg="standing by:`)}
)

func (l *logReach) Write(p []byte) (int, error) {
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(l.partial[:i])
		l.partial = l.partial[i+1:]
	}
	return l.w.Write(p)
}

// becameMaster finds the lock and token of a runner's "became master"
// line and, for a lease taken over after it expired, the previous holder
// and token.
var becameMaster = regexp.MustCompile(`msg="became master[^"]*".* lock=(\S+) token=(\d+)(?: previous\.instance=(\S+) previous\.token=(\d+))?`)

// instanceAttr finds the executor's id in a runner's log line.
var instanceAttr = regexp.MustCompile(` instance=(\S+)`)

func (l *logReach) line(b []byte) {
	now := Mono()
	if l.releasesOnly {
		if bytes.Contains(b, failedRelease) {
			l.r.result(now-int64(l.window), true)
		}
		return
	}
	if !l.identified {
		// Its first line names the executor: the driver matches it with
		// the previous holder a takeover names.
		if m := instanceAttr.FindSubmatch(b); m != nil {
			l.identified = true
			l.r.in.send(Message{Type: msgIdentity, ID: string(m[1]), T: now})
		}
	}
	if m := becameMaster.FindSubmatch(b); m != nil {
		// The runner offers no observer: its acquisitions are read here,
		// with the lease each took over (an unreported lease of a killed
		// holder counts as a master: Findings.unreportedAtDeath).
		if token, err := strconv.ParseInt(string(m[2]), 10, 64); err == nil {
			t := Message{Type: msgTransition, Kind: "acquired", Lock: string(m[1]), Token: token, T: now}
			if prev, err := strconv.ParseInt(string(m[4]), 10, 64); err == nil && len(m[3]) > 0 {
				t.PrevHolder, t.PrevToken = string(m[3]), prev
			}
			l.r.in.send(t)
		}
	}
	for _, s := range failedCall {
		if bytes.Contains(b, s) {
			l.r.result(now-int64(l.window), true)
			return
		}
	}
	for _, s := range succeededCall {
		if bytes.Contains(b, s) {
			l.r.result(now, false)
			return
		}
	}
}
