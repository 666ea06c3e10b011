//go:build linux

package chaos

// Message is one line of the JSON protocol between the driver and an
// instance, over the driver's unix socket. Times (T) are Mono readings.
type Message struct {
	Type string `json:"type"`

	// Instance to driver.
	Index  int    `json:"idx,omitempty"`    // hello: instance slot
	Gen    int    `json:"gen,omitempty"`    // hello: restart generation
	PID    int    `json:"pid,omitempty"`    // hello
	ID     string `json:"id,omitempty"`     // hello, identity: executor instance id
	Lock   string `json:"lock,omitempty"`   // start, stop, write, transition
	Token  int64  `json:"token,omitempty"`  // start, stop, write, transition
	Reason string `json:"reason,omitempty"` // stop, transition: the Err* cause
	Kind   string `json:"kind,omitempty"`   // transition kind; ack: what was applied
	Wall   string `json:"wall,omitempty"`   // the instance's (possibly jumped) wall clock
	Err    string `json:"err,omitempty"`    // bye: Run's error
	Seq    int64  `json:"seq,omitempty"`    // ack: the control message acknowledged
	From   int64  `json:"from,omitempty"`   // resumed: the last tick before the pause; unreachable: the first failed call's start
	Plan   int64  `json:"plan,omitempty"`   // start: how long the job takes to stop once told, ns
	Policy string `json:"policy,omitempty"` // start: what ends a slow stop early (see stopPolicies)
	How    string `json:"how,omitempty"`    // stop: what ended the job (see the how* constants)
	// Successor is the instance a release was reserved for (transition
	// "released" of a hand-off or a graceful shutdown).
	Successor string `json:"successor,omitempty"`
	// PrevHolder and PrevToken are, for an "acquired" transition that
	// took over an expired lease, that lease's holder and token.
	PrevHolder string `json:"prevHolder,omitempty"`
	PrevToken  int64  `json:"prevToken,omitempty"`

	// Driver to instance.
	Mode    string `json:"mode,omitempty"`    // outage: "fail", "hang" or "" (restore)
	Latency int64  `json:"latency,omitempty"` // outage: added delay per store call; renewal: its round trip; ns
	Offset  int64  `json:"offset,omitempty"`  // clock: wall-clock offset, ns

	T int64 `json:"t"`
}

// Message types.
const (
	// Instance to driver.
	msgHello       = "hello"       // the executor is about to run
	msgStart       = "start"       // a job began (after its acquisition committed)
	msgStopping    = "stopping"    // a job was told to stop (its context ended, or SIGTERM)
	msgStop        = "stop"        // a job is returning
	msgWrite       = "write"       // a fenced write to the sink
	msgTransition  = "transition"  // an observer transition (evidence only)
	msgAck         = "ack"         // a control message took effect
	msgBye         = "bye"         // Run returned; the process exits
	msgResumed     = "resumed"     // the process ran again after a pause (SIGSTOP)
	msgChild       = "child"       // first message of a runner's child (runner mode)
	msgRenewal     = "renewal"     // a renewal round trip ended (Latency, Err: evidence)
	msgUnreachable = "unreachable" // the instance's store calls failed from From to T (see reach)
	msgFailing     = "failing"     // the instance's store calls began failing at From (see reach)
	msgCheck       = "check"       // a check (acquisition) round trip ended at T
	msgRunnerStop  = "runner-stop" // a runner began to stop its command at T (its job.cancel mark; runner mode)
	msgIdentity    = "identity"    // the executor's id, learnt after the hello (runner mode: from its log)

	// Driver to instance.
	msgOutage   = "outage"   // store-level outage or latency (SQLite)
	msgReopen   = "reopen"   // close and reopen the store handle (SQLite)
	msgClock    = "clock"    // set the instance's wall-clock offset
	msgShutdown = "shutdown" // cancel Run and exit
)
