// Package redis is the Redis backend of masterjob's store contract
// (package store), built on github.com/redis/go-redis/v9. It is a Go module
// of its own (github.com/masterjob/masterjob/store/redis), so that go-redis
// reaches only the programs that import it.
//
// # Opening
//
// Open (or ParseURL and URL.Open) connects with a client of the store's
// own, from a URL:
//
//	redis://[USER:PASSWORD@]HOST:PORT/DB?prefix=P&call_timeout=D&history_limit=N&expiry_events=false
//	rediss://...   the same over TLS
//
// Other query parameters go to go-redis's ParseURL (dial_timeout,
// pool_size, ...). Error messages and String() never show the password.
// New uses the application's own client instead: a *redis.Client (one
// server, or Sentinel's failover client) or a *redis.ClusterClient;
// Close then leaves it open. A *redis.Ring is refused: it shards keys over
// independent servers and moves a failed shard's keys to another one,
// where a lease could be taken twice. Every call is bounded by the call
// timeout (WithCallTimeout, default 5s) when the client honours context
// deadlines (ContextTimeoutEnabled; Open sets it, New warns when a client
// lacks it). Opening fails unless the server answers and is Redis 5.0 or
// newer.
//
// # Keys
//
// Every key starts with the prefix (WithPrefix, default "masterjob:").
// Each lock has four keys, tagged {lock} so that Redis Cluster keeps them
// in one hash slot ("%" and "}" in a name are escaped as %25 and %7D):
//
//	P{lock}:lease  hash: holder, info, token, acquired, renewed, expires, revoked,
//	               hand-off request; PEXPIRE of the lease: the key exists
//	               exactly while the lease is unexpired, by Redis's clock
//	P{lock}:rec    hash, no TTL: the control (disabled, reason, by, at) and the
//	               last lease's holder and token (the record Locks lists)
//	P{lock}:tok    string, no TTL: the last token issued; never deleted by the store
//	P{lock}:resv   string with a PEXPIRE: the successor a release reserved the lock for
//
// Keys shared by all locks carry the tag {*}: P{*}:locks (sorted set of
// known lock names), P{*}:history (stream), P{*}:members (sorted set of
// member ids by expiry), P{*}:member:ID (hash) and P{*}:mlocks:ID (set of
// the member's locks), both with a PEXPIRE. Changes are published on the
// channel P{*}:changes.
//
// # Protocol
//
// Acquisition, renewal, release, disable/enable, hand-off, the read of
// lock states, the history and the members are Lua scripts, sent with
// EVALSHA; a server that does not know a script (after a restart or SCRIPT
// FLUSH) answers NOSCRIPT without running anything, and the store sends it
// again whole with EVAL, once. A script handles at most 250 locks; a call
// on more sends several scripts in one pipeline: one round trip, while the
// server serves other clients between scripts (a script runs alone on the
// server). Each lock is handled entirely by one script, so everything a
// call does to one lock is atomic: in particular the acquisition reads the
// control in the same script that takes the lease, and Disable writes it
// in a script on the same keys. Times come from the server's TIME inside
// the script, as microseconds; leases expire by Redis's own clock (PEXPIRE,
// milliseconds: a lease shorter than 1ms is refused).
//
//   - Acquire takes each named lock whose lease key is absent, whose
//     record is not disabled and that is not reserved for another holder;
//     it reports the previous lease as expired (a takeover) when the record
//     still names a holder (Release clears it). It writes the holder's
//     member record (Membership) in the same script, and publishes the
//     names it took.
//   - Renew extends, with PEXPIRE, each lease whose hash names the holder
//     and the token: a compare-and-set on (holder, token). An expired lease
//     is gone, so it cannot be renewed.
//   - Release deletes each lease whose hash names the holder and token,
//     keeps the record (its control and last token), optionally sets the
//     reservation with a PEXPIRE, and publishes the names.
//   - Transfer (store.Transfers) is a Release that gives each lock to its
//     ref's Successor in the same script (transferScript), so the end of
//     the old lease and the start of the new one are one atomic step: no
//     other client runs between them, and no instant has both leases or a
//     free lock another instance could take. The script fences exactly as
//     Release does (the lease hash must name the holder and the token; an
//     expired lease has no key and is ignored), and releases, as Release
//     would, a lease that is revoked or whose record is disabled, and one
//     whose successor has no unexpired member record (its member hash is
//     absent: it expired, or Leave deleted it, or it was never written).
//     The new token is issued as Acquire issues it, from the same counter
//     key and the server's TIME in the same script (also above the ended
//     lease's token), so it is greater than every token of the lock; the
//     new lease hash is written whole (no hand-off request), its PEXPIRE
//     is the ttl from the server's clock, the reservation is deleted and
//     the record names the successor. Its info is the successor's member
//     record's. On one server the script itself checks that the member
//     hash exists and reads the info, in the same atomic step as the
//     give, so once an instance's Leave has run no transfer gives it a
//     lease. In a cluster, where member records live in the {*} slot,
//     Transfer reads them first, one more round trip (to one node), when a
//     ref names a successor, and passes the existence and info it read to
//     the scripts: that check is not atomic with the give (see Redis
//     Cluster below).
//     The script publishes the locks it gave or released on the "lease"
//     message, as Acquire and Release do, without hints (below). Like
//     every write here it is as durable as the deployment makes it: a
//     fail-over that loses the transfer loses the release and the
//     successor's lease together (the old lease is back until it expires,
//     its holder having stopped), and the successor learns it at its next
//     renewal, as after a lost acquisition; the next token still exceeds
//     the lost one unless the clocks went back.
//   - Members are written by the scripts of Acquire and Renew; the lock
//     list (a set) is sent only with the first call after Announce or
//     after the lock set id changes, or after the server reported it
//     missing (the call after that sends it), and is otherwise only given a
//     new PEXPIRE.
//   - Locks with names reads them in one round trip; without names it
//     first reads the index of known names (a second round trip) and
//     returns those that still have a record.
//   - AppendEvents adds entries to the stream with XADD under IDs "N-0", N
//     the greater of the server's time in microseconds and the stream's last
//     ID plus one, then trims it exactly to the retention (XTRIM MAXLEN,
//     WithHistoryLimit, default store.DefaultHistoryLimit). Event.ID is N:
//     IDs increase, stay below 2^53 (they survive JSON in browsers) and
//     paging by BeforeID is XREVRANGE from N-1. A read filtered by lock
//     scans the stream inside one script, newest first, in chunks of 500,
//     until it has the page: its cost grows with the retention.
//
// # Fencing tokens
//
// A new lease's token is the greater of the lock's last token plus one and
// the server's time in microseconds (TIME, in the script). Tokens therefore
// grow with every acquisition of a lock, and keep growing when the counter
// key is lost (a restart of a server that keeps nothing on disk, a
// fail-over to a replica that had not received it, an operator deleting
// keys), as long as the clock of the server that issues the next token is
// ahead of the time the lost token was issued at: a server clock set back,
// or a replica whose clock lags the old primary's by more than the time
// the fail-over took, can issue a token again. Tokens are large numbers
// (about 1.8e15 today, below 2^53).
//
// # What Redis can lose, and what the token still guarantees
//
// This store is exactly as safe as the Redis deployment under it. It does
// not implement Redlock and claims nothing of the kind: it uses one
// primary (or one primary per hash slot in a cluster), and nothing here
// makes independent Redis servers agree.
//
//   - Replication is asynchronous. A write the primary acknowledged (an
//     acquisition, a renewal, a disable) can be lost when a replica that
//     had not received it is promoted. A lost acquisition or renewal means
//     the lease is gone on the new primary: another instance can acquire
//     while the old master still runs its job. The old master learns it at
//     its next renewal (not renewed: it stops), so the overlap lasts at
//     most until then, or until its own deadline if the store is
//     unreachable. A lost disable means a disabled job may run again.
//   - Persistence decides what a restart loses. With appendonly no and
//     save "" (the server in this repository's tests) a restart loses every
//     lease, control and history entry; with RDB snapshots, what was
//     written since the last one; with appendonly yes and appendfsync
//     everysec, up to about a second on a power loss; with appendfsync
//     always, nothing acknowledged.
//   - Eviction: a server with a maxmemory limit and a policy other than
//     noeviction (a cache, often) may evict a lease before it expires
//     (another instance then acquires while the master runs, until its
//     next renewal fails), a record (a disable is forgotten) or a member.
//     Use maxmemory-policy noeviction, or a Redis of masterjob's own.
//   - Through all of these the fencing token still guarantees, because a
//     token is at least the issuing server's time: the next master's token
//     is greater than the old master's (unless the clocks went back as said
//     above), so a downstream system that keeps the highest token it has
//     seen refuses the old master's writes once the new master has written.
//     It cannot stop the two jobs from running at once; it stops the stale
//     one from doing damage where the token is checked.
//
// Open and New read the server's persistence and eviction settings
// (CONFIG GET) and log one warning when the server keeps nothing on disk,
// evicts keys when full, or refuses CONFIG so that neither is known;
// Durability reports what was found.
// They do not refuse such a server: tokens stay monotonic without
// persistence (above), and whether a restart may forget leases and
// disables is the operator's choice to make, knowing it. What cannot be
// detected reliably from a client is not checked: whether a replica
// exists, how far behind it is, how the server's clock behaves.
//
// # Notifications
//
// Store implements store.Notifier on a dedicated pub/sub connection per
// subscription (see Subscribe), with reconnection. The scripts publish in
// the same script as the change. Expiry of a lease is pushed only when the
// server emits keyspace notifications for expired keys
// (notify-keyspace-events containing E and x, or A): the store listens to
// __keyevent@DB__:expired on a single server (not in a cluster, where
// each node emits its own), and never changes the server's configuration.
// With the default empty notify-keyspace-events nothing tells of an
// expiry: followers sleep until the TTL their last check reported, as the
// executor does anyway. The messages carry no hints (store.Change's Holder,
// Token and ReservedFor): a reader of an earlier version drops a kind it
// does not know, so hints would cost it its wake-ups during a rolling
// upgrade. Followers therefore check on every lease change.
//
// # Redis Cluster
//
// With a *redis.ClusterClient the store groups the locks of a call by hash
// slot and sends one script per slot (at most 250 locks each); go-redis
// sends each node its scripts in one pipeline, to all nodes at once. A call
// on n locks therefore costs one round trip per node it touches, in
// parallel, and about min(n, 16384 × (1 − e^(−n/16384))) scripts: 100
// locks make about 100 scripts, 10,000 locks about 7,500. Acquire adds one
// script on the slot of the shared keys, which adds the names to the index
// and writes the member record; Renew adds it when it has a member record
// to write. That script is not atomic with the locks' scripts: Locks
// without names may miss a lock for the moment between the two, or list a
// name whose record it then finds missing (and skips).
//
// Transfer reads the successors' member records in a round trip of its own
// before its scripts, and that read is not atomic with them either: in
// cluster mode, an instance whose Leave commits (or whose member record
// expires) between that pre-read and the script of a lock can still be
// given that lock's lease. It does not renew it, and the lock waits for
// that lease's TTL before another instance can take it (never two masters:
// only a lease nobody uses). store.Transfers' guarantee that once Leave has
// committed no transfer gives the instance another lease, which lets a
// shutting-down instance find every lease given to it with one read after
// Leave, therefore holds on a single server only.
//
// Tested on a private cluster of three masters started by the tests
// (TestCluster): the conformance suite passes, and the counts below were
// seen.
//
// # Cost (measured)
//
// On one server, counted with a go-redis hook (TestRoundTripsFlat) and by
// the server itself (INFO commandstats, TestServerCommandStats, a private
// server): Acquire, Renew, Locks(names) and Release each take one round
// trip at 1, 100 and 10,000 locks, carrying ceil(n/250) scripts (1, 1 and
// 40). In a cluster of three masters (TestCluster/RoundTrips): at most 3
// round trips (one per node, in parallel) and 1, 100 and 7,504 scripts.
// Server time per call, on a machine with two cores loaded by other work
// (load average 9 to 12; expect several times less on a quiet one), from
// TestServerCommandStats:
//
//	locks   Acquire   Renew    Locks(names)  Release
//	1       0.4-0.6ms 0.1ms    0.1ms         0.1ms
//	100     4.5ms     1.7ms    2.0ms         1.1ms
//	10,000  2.2s      0.42s    0.60s         0.24s
//
// The first acquisition of a lock writes three new keys; the steady state
// of a follower (Acquire of locks held by others) reads two hashes per
// lock, and a master's renewal makes three calls per lease.
package redis
