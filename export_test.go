package masterjob

import "time"

// WithClock replaces the executor's clock (hostclock.Now) in tests, so
// that a host suspend can be simulated: a clock that jumps ahead of the
// bubble's time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.clock = now } }

// LockSetID is lockSetID, for tests that write a member record by hand.
var LockSetID = lockSetID

func init() { checkLoopInvariants = true }

// TakenCheckDelay is takenCheckDelay, for the tests.
const TakenCheckDelay = takenCheckDelay

// Rank is rank, for tests that need a member first in line for a lock.
var Rank = rank

// FreedHeadStart is freedHeadStart, for the tests.
const FreedHeadStart = freedHeadStart

// HandOffSettle is handOffSettle, for the tests.
const HandOffSettle = handOffSettle
