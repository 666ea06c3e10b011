// Package etcd is the etcd backend of masterjob's store contract (package
// store), built on go.etcd.io/etcd/client/v3. It serves clusters that
// already run etcd (Kubernetes, or their own) or that outgrow one database.
//
// It is a Go module of its own, github.com/masterjob/masterjob/store/etcd,
// so that etcd's dependencies (gRPC, protobuf, zap) reach only the
// programs that import it. Importing it registers the etcd:// and etcds://
// URL schemes with package storeurl; the masterjob command imports it.
//
// # Opening
//
// New uses a *clientv3.Client the application already has (Close then
// leaves it open); Open makes and owns one from a clientv3.Config; OpenURL
// (and storeurl.Open) takes a URL, etcd://HOST:PORT[,HOST:PORT...] with
// its parameters (ParseURL: key prefix, TLS files, user, dial timeout,
// history limit), reading what the URL leaves unset (user, password,
// certificates) from etcdctl's ETCDCTL_* environment variables. Messages
// never show the password. Options choose the key prefix (WithPrefix,
// default DefaultPrefix) and the history's retention (WithHistoryLimit).
//
// A client made by Open reconnects within about half a second of etcd's
// return after an outage (ReconnectOption); gRPC's own default backs off
// to seconds, then minutes. Give a client of your own the same option.
//
// # Keys
//
// Under the prefix P, each lock NAME (with "%" and "/" escaped) has up to
// four keys in P k/NAME/ (LockKeyPrefix): the lease key l, whose value is
// the holder's id and which is attached to the holder's etcd lease; the
// holder record h (holder, description, acquisition time; after a release,
// the released token); the control record c (disabled, reason, who and
// when, the token of the lease a Disable revoked, a pending hand-off); and
// the reservation r of a lock released to a named successor, attached to
// a lease of its own. History entries are keys in P e/NAME/; member
// records are keys P m/ID attached to their member's lease.
//
// # Leases, tokens and time
//
// Every instance has one etcd lease for all its locks (strictly, one per
// holder and lease duration; an executor uses one duration), so renewing
// every mastership an instance holds is one LeaseKeepAlive, whatever their
// number, followed by one read that checks, for each lock, that its lease
// key still has the holder's id and token. The fencing token is the
// revision that wrote the lease's holder record: an acquisition writes it
// beside the lease key it creates (so the token is also that key's create
// revision), and a transfer writes it beside the lease key it gives to the
// successor, which keeps the key's creation but not the token. etcd's
// revision is global and never goes back, so each lease of a lock gets a
// token greater than every earlier one, across releases, expiries,
// transfers, deleted keys and server restarts. A lease is held with token
// T while its lease key has the holder's id as value and its holder record
// the mod revision T: every fenced write compares both.
//
// During a rolling upgrade from a version whose token was the lease key's
// create revision: for every lease but a transferred one the two are
// equal, so old and new instances fence each other as before. Only new
// instances transfer and adopt leases. An old instance that a new one
// names as successor does not run the given lease: its check sees the
// lock held by itself, not acquired by it, and releases it, fenced on the
// key's create revision, which still matches; the lock then goes to
// whoever acquires it. An old `masterjob disable` records the key's
// create revision as revoked, which is not a transferred lease's token:
// its holder still stops at its next renewal, which reports the lock
// disabled.
//
// Store time is etcd's lease TTL: a lease key lives until the holder's
// lease expires, which etcd's leader decides on its own clock, and etcd
// deletes the key then (its lessor looks for expired leases every 500 ms,
// ExpiryTick). The caller's trust window is measured on its own monotonic
// clock from the start of the keepalive (or grant) that succeeded, as for
// every store. etcd grants TTLs in whole seconds, at least the cluster's
// minimum TTL, ceil(1.5 × election timeout) (2 s with etcd's defaults).
// For a masterJobTolerance d the lease's TTL is LeaseTTL(d): the longest
// whole number of seconds that lets etcd delete the keys within d despite
// the 500 ms tick (d - 500 ms rounded down: 4 s for 5 s, 23 s for the
// default 24 s), as long as it stays at least 2/3 of d, so that with the
// default safety margin (d/4) the trust window, TTL - d/4, still exceeds
// the default heartbeat (d/3); otherwise d rounded down (2 s for 2 s), and
// for d between 1.5 s and 2 s, 2 s. The executor's trust window uses the
// TTL the store reports, the lease's, not d. A tolerance under a second or
// under the cluster's minimum TTL is refused (CheckTTL, which the executor
// calls at start): the message names the rule. Another instance's lease
// TTL is read with LeaseTimeToLive, which etcd reports in whole seconds,
// cut down: the store reports that, a bound from below (a lease given to
// an instance by a transfer is trusted for the TTL its read returned).
//
// # Calls
//
//   - Acquire reads the named locks (one read-only transaction, or one
//     range over all locks for more than 100 names), and, when one is free,
//     sends one transaction per 100 free locks with a nested transaction
//     per lock: if the lease key is absent and the control, holder record
//     and reservation are unchanged since the read (so a disabled lock is
//     never taken: the control check is atomic with the take), it puts the
//     lease key on the holder's lease and the holder record, else it reads
//     the lock again. A follower's check of locks held by others writes
//     nothing. The holder's lease is granted (beside the read when the
//     handle's watch has just seen a lock freed or enabled), or kept
//     alive beside the writes, so that the TTL Acquire reports counts from
//     the start of the call, as the executor's trust window does.
//   - Renew keeps the holder's lease alive, then reads the locks; a lock
//     the holder holds on another lease (another duration, another handle)
//     is moved onto this one by a transaction fenced on its token, holder
//     and old lease, once a keepalive proved the old lease alive.
//   - Release is one transaction with a nested transaction per lock, fenced
//     on (holder, token): it deletes the lease key and rewrites the holder
//     record as released. It never revokes the lease, which the holder's
//     other locks use. A release to a successor first grants the
//     reservation's lease.
//   - Transfer (store.Transfers) reads the locks and the successors'
//     member records while it keeps alive the lease the holder's locks are
//     on (a keepalive is answered from the leader's memory; a grant, which
//     an earlier version sent here, is a log write with its disk sync),
//     then sends one transaction per 100 locks with a nested transaction
//     per lock: if the holder's fence holds and the control and the
//     successor's member record are as read (enabled, not revoked, the
//     member present), it puts the lease key, on that same lease, with the
//     successor as value, and the successor's holder record (its member
//     Info): that revision is the new token. Else it releases as Release.
//     The successor's first renewal moves the lock onto its own lease, as
//     for any lock it holds on another lease. The handle then forgets the
//     lease it gave on: its next call for the holder grants a new one and
//     moves the holder's other locks onto it, so that a successor that died
//     before its first renewal holds the lock at most one TTL longer, not
//     as long as the giver lives. A lock held on another lease than the
//     handle's is given on a lease granted for it. When the handle's last
//     Acquire or Renew read the lock's control key (enabled, not revoked)
//     and its last Members read the successor's record, as an executor's
//     handle has, the transaction goes out at once, comparing both keys'
//     revisions with those reads, with the keepalive beside it: one round
//     trip, as etcd's own election's resign. A lock whose keys changed
//     since is left as it was by that transaction and goes the reading
//     way.
//   - Disable, Enable and Handoff rewrite the control record with a
//     compare-and-swap on it, on the lease key's create revision and on
//     the holder record's revision (a transfer changes only the last),
//     retried until it applies. Disable records the current lease's token
//     as revoked; a hand-off request names the token of the lease it is
//     for, so a new lease, a Disable or the lease's expiry ends it.
//   - Locks reads the locks, and the TTL of each lease found. The TTL of
//     the lease a subscription of the handle last saw a lock's key written
//     with is asked beside the read (one round trip, the successor's read
//     of a lease given to it); a key found on another lease is asked for
//     after it.
//
// Failures to reach etcd (no leader, timeouts, a closed connection) are
// returned wrapping store.ErrUnavailable; refusals that retrying would meet
// again (permissions, a request over etcd's limits) are not.
//
// # Notifications
//
// Store implements store.Notifier with one watch on the prefix: holder
// records of new leases (acquisition, transfer) and lease keys deleted
// (release, expiry: followers learn of an expiry from etcd's deletion, at
// once, not at their check interval), control records written (disable,
// enable, hand-off request), lapsed reservations, history appends, and
// member records created or deleted. A new lease's change carries the
// hints of an acquisition (store.Change: the holder its record names, the
// record's revision the token),
// and a deletion that came with a reservation in the same transaction
// names the successor. Subscribe returns once etcd confirmed the watch. A
// watch etcd cancels (no leader, say) is resumed from the revision after
// the last one seen, losing nothing. When that revision was compacted
// meanwhile, the changes in between are lost: the subscription sends
// store.ChangeResync, and the watch resumes from the oldest revision etcd
// kept.
//
// # History
//
// Entries are keys under P e/LOCK/, written by one transaction per 60
// entries that also deletes the oldest entries beyond the retention (found
// by a read just before): the bound holds whatever etcd's own compaction
// does, which is an operator's cluster-wide choice and no audit log. An
// entry's id is its transaction's revision × 128 + its position in it. Times
// (entries, holder records, controls) are the writing instance's wall
// clock: etcd has no clock a client can read; they are for display only.
// An append waits for the handle's releases and transfers in flight, so
// that its read and write do not go to etcd beside a hand-off's
// transaction. (An executor reports a release once the store call has
// returned; the wait covers appends from elsewhere in the process: another
// lock's transition, the control API.)
//
// # Members
//
// A member record is attached to a lease of its own with the member's TTL
// (the executor asks for twice the check interval plus the tolerance, far
// longer than a lock's lease: a follower calls the store only once per check
// interval, so the lock lease, which a follower does not renew, would let
// the record expire between checks). Acquire and Renew keep that lease alive
// once a third of it has passed, and rewrite the record only when it
// changed; etcd deletes it when the instance stops renewing it. Members
// reads the records and the TTL of each member's lease, and reports a third
// of that lease's TTL as each record's RefreshLag: a member calling every
// few seconds may show a record kept alive that long before its last call.
//
// # What etcd can lose, and what the token guarantees
//
// etcd commits every write to a quorum of its members before answering,
// and fsyncs its log: an acknowledged acquisition, release or control
// change survives the loss of a minority of members and the restart of
// all. A lease's expiry is decided by the leader alone; on a change of
// leader, etcd extends every lease by the election timeout, so a lease can
// only last longer than its TTL, never shorter: the trust window stays safe.
// A single-node etcd, or a cluster that loses its quorum, stops answering:
// masters demote themselves at the end of their trust window and everyone
// retries. Revisions, and so tokens, never go back, except when an
// operator restores a snapshot: the revision returns to the snapshot's
// (unless etcdutl's --bump-revision moves it past), so tokens issued
// between the snapshot and the restore can be issued again, to other
// masters (by then the masters of that period have lost their leases). A
// downstream system that keeps the highest token it saw refuses a stale
// master in every case but that one; restore with --bump-revision to keep
// that case out too.
package etcd
