//go:build linux

package chaos

import "sync"

// Sink is the fenced downstream resource every job writes to while it is
// master. It remembers, per lock, the highest token it accepted and rejects
// writes that carry a lower one: the way a downstream system should use the
// fencing token to refuse a stale master. A write with the same token as the
// highest is accepted (one master writes many times).
type Sink struct {
	mu      sync.Mutex
	highest map[string]int64
	log     []SinkWrite
}

// SinkWrite is one write the sink decided on.
type SinkWrite struct {
	Lock     string `json:"lock"`
	Token    int64  `json:"token"`
	Instance int    `json:"idx"`
	Gen      int    `json:"gen"`
	Sent     int64  `json:"sent"` // Mono when the job sent it
	At       int64  `json:"at"`   // Mono when the sink decided
	Accepted bool   `json:"accepted"`
	// Highest is the highest token accepted for the lock before this write.
	Highest int64 `json:"highest"`
}

// NewSink returns an empty sink.
func NewSink() *Sink { return &Sink{highest: map[string]int64{}} }

// Write decides on one write and logs it. It returns whether it was
// accepted.
func (s *Sink) Write(lock string, token int64, instance, gen int, sent int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	hi := s.highest[lock]
	ok := token >= hi
	if ok {
		s.highest[lock] = token
	}
	s.log = append(s.log, SinkWrite{
		Lock: lock, Token: token, Instance: instance, Gen: gen,
		Sent: sent, At: Mono(), Accepted: ok, Highest: hi,
	})
	return ok
}

// Log returns a copy of every decision so far, in decision order.
func (s *Sink) Log() []SinkWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SinkWrite(nil), s.log...)
}
