package postgres

import (
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/masterjob/masterjob/store"
)

// queries holds the store's statements for one table. The table names are
// the only text spliced into them, quoted by pgx.Identifier.Sanitize; every
// value travels as a parameter.
type queries struct {
	acquire    string
	renew      string
	release    string
	transfer   string
	disable    string
	enable     string
	handoff    string
	locksAll   string
	locksNamed string

	appendEvents string
	eventsAll    string
	eventsLock   string

	memberWrite string
	members     string
	leave       string
}

// payloadSep separates the kind of a change from its lock name in a NOTIFY
// payload. A lock name cannot hold it (store.ValidateLockName refuses
// control characters), so a payload without it is a bare lock name, as
// stores before the kinds existed sent it.
const payloadSep = "\x1f"

// payload returns the SQL expression of the NOTIFY payload of a change of
// kind about the lock named by the SQL expression lock ("" for none):
// "<kind>\x1f<lock>", at most 8 + 200 bytes, far below NOTIFY's 8000.
func payload(kind store.ChangeKind, lock string) string {
	p := "'" + string(kind) + "' || chr(31)"
	if lock != "" {
		p += " || " + lock
	}
	return p
}

// disablePayload is payload for the ChangeControl of a Disable, naming
// the token it revoked (store.Change.Revoked) as changehint.Kind writes it
// when the SQL expression revoked is true: the kind field, then the lock.
func disablePayload(revoked, token string) string {
	return `'` + string(store.ChangeControl) + `' || CASE WHEN ` + revoked + ` AND ` + token + ` > 0 THEN chr(30) || chr(30) || ` +
		token + `::text || chr(30) ELSE '' END || chr(31) || lock_name`
}

// leasePayload is payload for a ChangeLease with hints, in the first field
// as changehint.Kind writes them (an instance that predates the hints
// reads that field as a kind it does not know, and acts on the lock as on
// any change, so the lock name stays after the first payloadSep): the SQL
// expressions holder and token of an acquisition ("" and "0" for none),
// and reserved, the successor of a release ("" for none). An instance id
// that holds a separator is left out, which leaves the hint unsaid (it
// cannot be cut out of the payload), so that no receiver is misled: the
// executor refuses such ids anyway. At most 8 + 3 × 200 + 20 + 200 bytes.
func leasePayload(holder, token, reserved string) string {
	// sayable(id, v) is v when the id holds no separator, else otherwise.
	sayable := func(id, v, otherwise string) string {
		return `CASE WHEN strpos(` + id + `, chr(30)) = 0 AND strpos(` + id + `, chr(31)) = 0 THEN ` + v + ` ELSE ` + otherwise + ` END`
	}
	if holder == "" {
		holder, token = "''", "0"
	}
	if reserved == "" {
		reserved = "''"
	}
	// An unsayable holder drops the token too: a hint is whole or absent.
	return "'" + string(store.ChangeLease) + "' || chr(30) || " + sayable(holder, holder, "''") +
		" || chr(30) || (" + sayable(holder, token, "0") + ")::text || chr(30) || " +
		sayable(reserved, reserved, "''") + " || chr(31) || lock_name"
}

// stateCols selects a lock's state from the row aliased c, taking the name
// from name (so that a left join can report unknown names as free and
// enabled). Its columns are the ones scanState reads after the leading flag.
// The TTLs are computed by the server, in microseconds (its timestamps'
// resolution), rounded down. prev is an SQL condition under which the
// previous lease (prev_holder, prev_token) is reported; "" reports none.
func stateCols(name, prev string) string {
	prevCols := `'' AS prev_holder, 0::bigint AS prev_token`
	if prev != "" {
		prevCols = `CASE WHEN ` + prev + ` THEN coalesce(c.prev_holder, '') ELSE '' END AS prev_holder,
	CASE WHEN ` + prev + ` AND c.prev_holder IS NOT NULL THEN c.prev_token ELSE 0 END AS prev_token`
	}
	// A hand-off request counts while the lease it was made for (its
	// token) is the current one and unexpired; a reservation until it
	// lapses.
	const handoff = `coalesce(c.handoff_to IS NOT NULL AND c.handoff_token = c.token AND c.holder IS NOT NULL AND c.expires_at > now(), false)`
	const reserved = `coalesce(c.reserved_for <> '' AND c.reserved_until > now(), false)`
	return name + ` AS lock_name,
	coalesce(c.holder, '') AS holder,
	coalesce(c.holder_info, '') AS holder_info,
	coalesce(c.token, 0) AS token,
	c.acquired_at, c.renewed_at, c.expires_at,
	coalesce(floor(extract(epoch FROM c.expires_at - now()) * 1000000)::bigint, 0) AS ttl_us,
	coalesce(c.revoked, false) AS revoked,
	coalesce(c.disabled, false) AS disabled,
	coalesce(c.reason, '') AS reason,
	coalesce(c.changed_by, '') AS changed_by,
	c.changed_at,
	` + handoff + ` AS handoff_requested,
	CASE WHEN ` + handoff + ` THEN c.handoff_to ELSE '' END AS handoff_to,
	CASE WHEN ` + reserved + ` THEN c.reserved_for ELSE '' END AS reserved_for,
	CASE WHEN ` + reserved + ` THEN floor(extract(epoch FROM c.reserved_until - now()) * 1000000)::bigint ELSE 0 END AS reserved_ttl_us,
	` + prevCols
}

// asyncCommit, evaluated in a transaction, makes its commit asynchronous
// (synchronous_commit = off until the transaction ends, as SET LOCAL).
const asyncCommit = `set_config('synchronous_commit', 'off', true)`

// ttlParam turns a parameter holding microseconds into an interval.
func ttlParam(n string) string { return "(" + n + "::bigint * interval '1 microsecond')" }

// free is the condition under which the row aliased a may be taken by the
// holder $2: no unexpired lease, not disabled, and not reserved for another
// instance.
func free(a string) string {
	return `((` + a + `.holder IS NULL OR ` + a + `.expires_at <= now()) AND NOT ` + a + `.disabled
		AND (` + a + `.reserved_for = '' OR ` + a + `.reserved_for = $2 OR coalesce(` + a + `.reserved_until <= now(), true)))`
}

// buildQueries returns the statements on the store's tables.
func buildQueries(table, history, members string) queries {
	// One pass: text substituted (the table names) is not scanned again.
	r := strings.NewReplacer(
		"{{T}}", table,
		"{{H}}", history,
		"{{M}}", members,
		"{{C}}", stateCols("c.lock_name", ""),
		"{{RC}}", stateCols("r.lock_name", ""),
		// The row c (the latest version, locked) may be taken.
		"{{FREE}}", free("c"),
		"{{CANDIDATE}}", free("o"),
		"{{ACQUIRED}}", `coalesce(c.holder = $2 AND c.acquired_at = now(), false)`,
		"{{AC}}", stateCols("c.lock_name", `coalesce(c.holder = $2 AND c.acquired_at = now(), false)`),
		"{{NEWER}}", `(m.writer <> excluded.writer OR excluded.gen >= m.gen OR m.expires_at <= now())`,
		"{{ACQUIRED_LEASE}}", leasePayload("holder", "token", ""),
		"{{RELEASED_LEASE}}", leasePayload("", "", "reserved_for"),
		"{{CONTROL}}", payload(store.ChangeControl, "lock_name"),
		"{{DISABLED}}", disablePayload("revoked", "token"),
		"{{HISTORY}}", payload(store.ChangeHistory, "lock_name"),
		"{{MEMBER}}", payload(store.ChangeMember, ""),
		"{{ASYNC}}", asyncCommit,
		// In the transfer: the row c (locked, its lease the caller's and
		// unexpired) goes to the successor of the ref r.
		"{{GIVE}}", `(r.successor <> '' AND mem.id IS NOT NULL AND NOT c.revoked AND NOT c.disabled)`,
	)
	q := func(s string) string { return r.Replace(s) }
	return queries{
		// $1 names (sorted, distinct), $2 holder ID, $3 holder info, $4 ttl µs,
		// $5 token sequence, $6 channel.
		//
		// The INSERT's source is the candidates: the names whose row, in
		// this statement's snapshot, is missing or free/expired, enabled and
		// not reserved for another instance. ORDER BY keeps the order in
		// which rows are locked the same for every caller. A candidate
		// whose row exists by the time it is inserted (it was in the
		// snapshot, or a concurrent caller inserted it since) goes to ON
		// CONFLICT DO UPDATE, which locks the latest committed version of
		// the row and evaluates the SET expressions against it: there, and
		// only there, eligibility is decided, which is what makes the
		// control check atomic with the take. An ineligible row (a
		// concurrent caller won, or disabled it) is rewritten with its own
		// values so that RETURNING reports its latest state; nextval runs
		// only for a row being taken, after it is locked, so a new token
		// exceeds every token the row ever had. Taking a row records the
		// lease it replaces (its holder is NULL unless that lease expired)
		// and clears any hand-off request and reservation. Names that were
		// not candidates are reported from the snapshot.
		//
		// A returned row was taken by this statement when its holder is $2
		// and its acquired_at is this transaction's now(). Each taken lock
		// is announced (n, joined so that it runs).
		acquire: q(`WITH req AS (
	SELECT n AS lock_name FROM unnest($1::text[]) AS n
), acq AS (
	INSERT INTO {{T}} AS c (lock_name, holder, holder_info, acquired_at, renewed_at, expires_at)
	SELECT r.lock_name, $2, $3, now(), now(), now() + ` + ttlParam("$4") + `
	FROM req r LEFT JOIN {{T}} o ON o.lock_name = r.lock_name
	WHERE o.lock_name IS NULL OR {{CANDIDATE}}
	ORDER BY r.lock_name
	ON CONFLICT (lock_name) DO UPDATE SET
		holder         = CASE WHEN {{FREE}} THEN excluded.holder ELSE c.holder END,
		holder_info    = CASE WHEN {{FREE}} THEN excluded.holder_info ELSE c.holder_info END,
		token          = CASE WHEN {{FREE}} THEN nextval($5::text::regclass) ELSE c.token END,
		acquired_at    = CASE WHEN {{FREE}} THEN excluded.acquired_at ELSE c.acquired_at END,
		renewed_at     = CASE WHEN {{FREE}} THEN excluded.renewed_at ELSE c.renewed_at END,
		expires_at     = CASE WHEN {{FREE}} THEN excluded.expires_at ELSE c.expires_at END,
		revoked        = CASE WHEN {{FREE}} THEN false ELSE c.revoked END,
		prev_holder    = CASE WHEN {{FREE}} THEN c.holder ELSE c.prev_holder END,
		prev_token     = CASE WHEN {{FREE}} THEN c.token ELSE c.prev_token END,
		handoff_to     = CASE WHEN {{FREE}} THEN NULL ELSE c.handoff_to END,
		handoff_by     = CASE WHEN {{FREE}} THEN '' ELSE c.handoff_by END,
		handoff_at     = CASE WHEN {{FREE}} THEN NULL ELSE c.handoff_at END,
		reserved_for   = CASE WHEN {{FREE}} THEN '' ELSE c.reserved_for END,
		reserved_until = CASE WHEN {{FREE}} THEN NULL ELSE c.reserved_until END
	RETURNING {{ACQUIRED}} AS acquired, {{AC}}
), n AS (
	SELECT count(pg_notify($6, {{ACQUIRED_LEASE}})) FROM acq WHERE acquired
)
SELECT acq.* FROM acq CROSS JOIN n
UNION ALL
SELECT false, {{RC}}
FROM req r LEFT JOIN {{T}} c ON c.lock_name = r.lock_name
WHERE NOT EXISTS (SELECT 1 FROM acq a WHERE a.lock_name = r.lock_name)`),

		// $1 names, $2 tokens, $3 holder ID, $4 ttl µs. One row per ref, in
		// the order of the refs. A revoked lease renews too.
		renew: q(`WITH req AS (
	SELECT * FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS r(lock_name, token, ord)
), upd AS (
	UPDATE {{T}} c SET expires_at = now() + ` + ttlParam("$4") + `, renewed_at = now()
	FROM req r
	-- clock_timestamp(), not now(): a row another writer updated while
	-- this statement ran is re-checked with the statement's start as
	-- now(), by which a lease that writer ended could still look valid
	-- and be revived. The new expiry counts from now(), the statement's
	-- start, which is after the renewal began on its caller's clock.
	WHERE c.lock_name = r.lock_name AND c.token = r.token AND c.holder = $3 AND c.expires_at > clock_timestamp()
	RETURNING c.lock_name, c.token, c.revoked, c.disabled,
		floor(extract(epoch FROM c.expires_at - now()) * 1000000)::bigint AS ttl_us,
		CASE WHEN c.handoff_token = c.token THEN c.handoff_to END AS handoff_to
)
SELECT r.lock_name, r.token, u.lock_name IS NOT NULL, coalesce(u.ttl_us, 0),
	coalesce(u.revoked, o.revoked AND o.holder = $3 AND o.token = r.token, false),
	coalesce(u.disabled, o.disabled, false),
	u.handoff_to IS NOT NULL, coalesce(u.handoff_to, '')
FROM req r
LEFT JOIN upd u ON u.lock_name = r.lock_name AND u.token = r.token
LEFT JOIN {{T}} o ON o.lock_name = r.lock_name
ORDER BY r.ord`),

		// $1 names, $2 tokens, $3 successors, $4 reservations µs, $5 holder
		// ID, $6 channel. The row stays: it keeps the control and the last
		// token. A successor with a positive reservation gets the lock
		// reserved until now() + reservation; otherwise any reservation
		// ends. A pending hand-off request ends with the lease.
		//
		// The commit is asynchronous ({{ASYNC}}, evaluated once for the
		// result row, before the commit): it does not wait for the WAL
		// flush, which on a disk is most of a release's time. That is safe
		// because a lost release only keeps the lease until it expires. A
		// crash of the server (or a fail-over to a standby) can lose a
		// release whose caller already returned; the row then still holds
		// the lease of an instance that stopped its job before releasing,
		// and nobody may take it until it expires: the next master comes a
		// lease later, as after a crash of the master, and never early. A
		// successor's acquisition cannot outlive the release it followed:
		// its commit is synchronous, and flushing its commit record flushes
		// the WAL before it, the release's record included (readers may see
		// a lost release's free row before the crash, nothing more).
		// Acquisitions, renewals, disables and enables stay synchronous.
		release: q(`WITH req AS (
	SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS r(lock_name, token, successor, reserve_us)
), rel AS (
	UPDATE {{T}} c SET holder = NULL, holder_info = '', acquired_at = NULL, renewed_at = NULL,
		expires_at = NULL, revoked = false,
		handoff_to = NULL, handoff_by = '', handoff_at = NULL,
		reserved_for = CASE WHEN r.successor <> '' AND r.reserve_us > 0 THEN r.successor ELSE '' END,
		reserved_until = CASE WHEN r.successor <> '' AND r.reserve_us > 0 THEN now() + ` + ttlParam("r.reserve_us") + ` END
	FROM req r
	WHERE c.lock_name = r.lock_name AND c.token = r.token AND c.holder = $5
	RETURNING c.lock_name, c.reserved_for
)
SELECT count(pg_notify($6, {{RELEASED_LEASE}})), {{ASYNC}} FROM rel`),

		// $1 names, $2 tokens, $3 successors, $4 reservations µs, $5 holder
		// ID, $6 ttl µs, $7 token sequence, $8 channel.
		//
		// One UPDATE ends every listed lease that $5 holds with its token
		// and that has not expired, and, in the same row version, gives the
		// lock to the ref's successor ({{GIVE}}: a successor is named, the
		// lease is not revoked, the lock is not disabled); any other row it
		// updates is released exactly as release releases it. The WHERE
		// clause is the fence: under READ COMMITTED, a row that a
		// concurrent writer changed is locked and the WHERE and SET
		// expressions evaluated again on its latest committed version, so
		// the lease given away is the current one, and the control seen by
		// the CASE is the one the row holds when it is written (a disable
		// serialises on the same row: the lease is either given before it,
		// then revoked by it, or released after it). clock_timestamp(), not
		// now(), for the expiry, as in renew: a lease another writer ended
		// while this statement waited for the row must not be given away.
		//
		// The successors' member records are locked FOR SHARE (mem) before
		// any lock row: a successor without an unexpired record (it left,
		// or never announced itself) is not given the lock, and a Leave
		// (a DELETE of the record) either commits before this statement
		// locks the record, which then finds no row and releases, or
		// waits for this commit, so that the leaver's read of its locks
		// after its Leave returned sees every lease given to it
		// (store.Transfers). It also blocks the successor's own member
		// write for as long as this statement runs.
		//
		// A given row takes a new lease of $6 counted from now() (the
		// statement's start, before the commit: it ends no later than $6
		// after the commit), and a token from the sequence as acquire draws
		// it: nextval sits in the CASE, so it runs only for rows given, and
		// a recheck of a row changed concurrently draws it again after the
		// other writer committed, so the token kept exceeds every token the
		// row ever had. HolderInfo is the successor's member record's
		// info. The lease it replaces was ended, not
		// expired: prev_holder NULL (the columns' convention for a
		// predecessor that did not expire) and prev_token its token, as
		// acquire records it after a release. Any hand-off request and
		// reservation end.
		//
		// Each row is announced: a given lock as acquire announces it (the
		// successor and its new token), a released one as release does.
		//
		// The commit is SYNCHRONOUS, unlike release's (no {{ASYNC}}): a
		// transfer is an acquisition for the successor. The successor
		// starts its job once it has read its lease; if the server then
		// crashed and lost the commit, the row would come back holding the
		// old holder's lease, which expires while the successor still runs,
		// and a third instance could take the lock: two masters. Committed
		// synchronously, the transfer survives a crash once the call
		// returns, and the push (sent at commit) and any read of the new
		// lease by another session come only after the commit record is
		// flushed. (Released rows of the same batch commit synchronously
		// with it; that costs nothing more.)
		transfer: q(`WITH req AS (
	SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS r(lock_name, token, successor, reserve_us)
), mem AS (
	SELECT m.id, m.info FROM {{M}} m
	WHERE m.id IN (SELECT successor FROM req WHERE successor <> '') AND m.expires_at > now()
	FOR SHARE
), tr AS (
	UPDATE {{T}} c SET
		holder         = CASE WHEN {{GIVE}} THEN r.successor END,
		holder_info    = CASE WHEN {{GIVE}} THEN mem.info ELSE '' END,
		token          = CASE WHEN {{GIVE}} THEN nextval($7::text::regclass) ELSE c.token END,
		acquired_at    = CASE WHEN {{GIVE}} THEN now() END,
		renewed_at     = CASE WHEN {{GIVE}} THEN now() END,
		expires_at     = CASE WHEN {{GIVE}} THEN now() + ` + ttlParam("$6") + ` END,
		revoked        = false,
		prev_holder    = CASE WHEN {{GIVE}} THEN NULL ELSE c.prev_holder END,
		prev_token     = CASE WHEN {{GIVE}} THEN c.token ELSE c.prev_token END,
		handoff_to = NULL, handoff_by = '', handoff_at = NULL,
		reserved_for   = CASE WHEN NOT {{GIVE}} AND r.successor <> '' AND r.reserve_us > 0 THEN r.successor ELSE '' END,
		reserved_until = CASE WHEN NOT {{GIVE}} AND r.successor <> '' AND r.reserve_us > 0 THEN now() + ` + ttlParam("r.reserve_us") + ` END
	FROM req r LEFT JOIN mem ON mem.id = r.successor
	WHERE c.lock_name = r.lock_name AND c.token = r.token AND c.holder = $5 AND c.expires_at > clock_timestamp()
	RETURNING c.lock_name, c.holder, c.token, c.reserved_for
)
SELECT count(pg_notify($8, CASE WHEN holder IS NOT NULL THEN {{ACQUIRED_LEASE}} ELSE {{RELEASED_LEASE}} END)) FROM tr`),

		// $1 name, $2 reason, $3 by, $4 channel. The leading flag is
		// "changed". The CTE n is referenced so that it runs: pg_notify for
		// the changed row. A disable ends a pending hand-off request.
		disable: q(`WITH up AS (
	INSERT INTO {{T}} AS c (lock_name, token, disabled, reason, changed_by, changed_at)
	VALUES ($1, 0, true, $2, $3, now())
	ON CONFLICT (lock_name) DO UPDATE SET
		disabled = true,
		reason = excluded.reason,
		changed_by = excluded.changed_by,
		changed_at = excluded.changed_at,
		revoked = (c.holder IS NOT NULL AND c.expires_at > now()),
		handoff_to = NULL, handoff_by = '', handoff_at = NULL
	WHERE NOT c.disabled
	RETURNING {{C}}
), n AS (
	SELECT count(pg_notify($4, {{DISABLED}})) FROM up
)
SELECT true, up.* FROM up, n
UNION ALL
SELECT false, {{C}} FROM {{T}} c
WHERE c.lock_name = $1 AND NOT EXISTS (SELECT 1 FROM up)`),

		// $1 name, $2 by, $3 channel.
		enable: q(`WITH up AS (
	UPDATE {{T}} c SET disabled = false, reason = '', changed_by = $2, changed_at = now()
	WHERE c.lock_name = $1 AND c.disabled
	RETURNING {{C}}
), n AS (
	SELECT count(pg_notify($3, {{CONTROL}})) FROM up
)
SELECT true, up.* FROM up, n
UNION ALL
SELECT false, {{C}} FROM {{T}} c
WHERE c.lock_name = $1 AND NOT EXISTS (SELECT 1 FROM up)`),

		// $1 name, $2 to ('' for anyone), $3 by, $4 channel. The leading
		// flag is "requested". The UPDATE takes the row only while it holds
		// an unexpired lease and is enabled (checked again on the latest
		// version if a concurrent call changed it); otherwise the row as
		// the snapshot saw it tells why (no row at all: an unknown lock).
		handoff: q(`WITH up AS (
	UPDATE {{T}} c SET handoff_to = $2, handoff_by = $3, handoff_at = now(), handoff_token = c.token
	WHERE c.lock_name = $1 AND c.holder IS NOT NULL AND c.expires_at > now() AND NOT c.disabled
	RETURNING {{C}}
), n AS (
	SELECT count(pg_notify($4, {{CONTROL}})) FROM up
)
SELECT true, up.* FROM up, n
UNION ALL
SELECT false, {{C}} FROM {{T}} c
WHERE c.lock_name = $1 AND NOT EXISTS (SELECT 1 FROM up)`),

		locksAll: q(`SELECT false, {{C}} FROM {{T}} c ORDER BY c.lock_name COLLATE "C"`),

		// $1 names (distinct).
		locksNamed: q(`SELECT false, {{RC}}
FROM unnest($1::text[]) AS r(lock_name) LEFT JOIN {{T}} c ON c.lock_name = r.lock_name
ORDER BY r.lock_name COLLATE "C"`),

		// $1 locks, $2 kinds, $3 instances, $4 tokens, $5 reasons,
		// $6 remotes (one array per column, one element per event), $7 the
		// retention, $8 channel. Identity values are drawn in the order of
		// the rows inserted (ORDER BY ord). The DELETE sees the snapshot
		// taken before the INSERT, so it prunes only older rows: with at
		// most $7 rows inserted, at most $7 remain. One notification per
		// lock of the batch.
		appendEvents: q(`WITH ins AS (
	INSERT INTO {{H}} (lock_name, kind, instance, token, reason, remote, at)
	SELECT e.lock_name, e.kind, e.instance, e.token, e.reason, e.remote, now()
	FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
		WITH ORDINALITY AS e(lock_name, kind, instance, token, reason, remote, ord)
	ORDER BY e.ord
	RETURNING id, lock_name
), del AS (
	DELETE FROM {{H}} WHERE id <= (SELECT max(id) FROM ins) - $7::bigint
)
SELECT count(pg_notify($8, {{HISTORY}})) FROM (SELECT DISTINCT lock_name FROM ins) d`),

		// $1 before ID, $2 limit.
		eventsAll: q(`SELECT id, lock_name, kind, instance, token, reason, remote, at
FROM {{H}} WHERE id < $1 ORDER BY id DESC LIMIT $2`),

		// $1 lock, $2 before ID, $3 limit.
		eventsLock: q(`SELECT id, lock_name, kind, instance, token, reason, remote, at
FROM {{H}} WHERE lock_name = $1 AND id < $2 ORDER BY id DESC LIMIT $3`),

		// $1 id, $2 info, $3 lock set ID, $4 locks (NULL: unchanged, not
		// sent), $5 masters, $6 weight, $7 ttl µs, $8 writer (this handle),
		// $9 generation (of this handle's announcement), $10 channel.
		//
		// Every write refreshes seen_at and expires_at. The announced
		// columns take the new values unless the row holds a newer
		// announcement of the same handle (a call that overtook this one);
		// the lock list only when it was sent. A row written for the first
		// time, or over an expired one, has since = now(): it is announced.
		// The result tells the handle what the row now holds. The write
		// also prunes the other members' expired rows (those no other call
		// has locked: it never waits), so that reads stay reads.
		memberWrite: q(`WITH pruned AS (
	DELETE FROM {{M}} WHERE id IN (
		SELECT id FROM {{M}} WHERE expires_at <= now() AND id <> $1 FOR UPDATE SKIP LOCKED)
), up AS (
	INSERT INTO {{M}} AS m (id, info, lock_set_id, locks, lock_count, masters, weight,
		since, seen_at, expires_at, writer, gen)
	VALUES ($1, $2, CASE WHEN $4::text[] IS NULL THEN '' ELSE $3 END, coalesce($4::text[], '{}'),
		coalesce(cardinality($4::text[]), 0), $5, $6, now(), now(), now() + ` + ttlParam("$7") + `, $8, $9)
	ON CONFLICT (id) DO UPDATE SET
		since       = CASE WHEN m.expires_at <= now() THEN now() ELSE m.since END,
		seen_at     = now(),
		expires_at  = excluded.expires_at,
		info        = CASE WHEN {{NEWER}} THEN excluded.info ELSE m.info END,
		masters     = CASE WHEN {{NEWER}} THEN excluded.masters ELSE m.masters END,
		weight      = CASE WHEN {{NEWER}} THEN excluded.weight ELSE m.weight END,
		writer      = CASE WHEN {{NEWER}} THEN excluded.writer ELSE m.writer END,
		gen         = CASE WHEN {{NEWER}} THEN excluded.gen ELSE m.gen END,
		lock_set_id = CASE WHEN {{NEWER}} AND $4::text[] IS NOT NULL THEN excluded.lock_set_id ELSE m.lock_set_id END,
		locks       = CASE WHEN {{NEWER}} AND $4::text[] IS NOT NULL THEN excluded.locks ELSE m.locks END,
		lock_count  = CASE WHEN {{NEWER}} AND $4::text[] IS NOT NULL THEN excluded.lock_count ELSE m.lock_count END
	RETURNING m.writer, m.gen, m.lock_set_id, m.since = now() AS joined
)
SELECT up.writer, up.gen, up.lock_set_id,
	(SELECT count(pg_notify($10, {{MEMBER}})) FROM up WHERE up.joined)
FROM up`),

		// $1 lock ('' for every member), $2 with locks. Expired rows are
		// skipped (members' writes prune them).
		members: q(`SELECT id, info, CASE WHEN $2::boolean THEN locks END, lock_count, lock_set_id, masters, weight, seen_at,
	floor(extract(epoch FROM expires_at - now()) * 1000000)::bigint
FROM {{M}}
WHERE expires_at > now() AND ($1::text = '' OR $1::text = ANY(locks))
ORDER BY id COLLATE "C"`),

		// $1 id, $2 channel.
		leave: q(`WITH del AS (
	DELETE FROM {{M}} WHERE id = $1 RETURNING id
)
SELECT count(pg_notify($2, {{MEMBER}})) FROM del`),
	}
}

// scanEvent reads a history row.
func scanEvent(row pgx.CollectableRow) (store.Event, error) {
	var (
		e    store.Event
		kind string
	)
	err := row.Scan(&e.ID, &e.Lock, &kind, &e.Instance, &e.Token, &e.Reason, &e.Remote, &e.At)
	e.Kind = store.EventKind(kind)
	return e, err
}

// scanState reads a row made of a flag (acquired, or changed for controls)
// followed by stateCols.
func scanState(row pgx.CollectableRow) (store.LockState, error) {
	var (
		st                         store.LockState
		acquired, renewed, expires pgtype.Timestamptz
		changed                    pgtype.Timestamptz
		ttlUS, reservedUS          int64
	)
	err := row.Scan(&st.Acquired, &st.Lock, &st.Holder, &st.HolderInfo, &st.Token,
		&acquired, &renewed, &expires, &ttlUS,
		&st.Revoked, &st.Disabled, &st.Reason, &st.ChangedBy, &changed,
		&st.HandoffRequested, &st.HandoffTo, &st.ReservedFor, &reservedUS,
		&st.PrevHolder, &st.PrevToken)
	if err != nil {
		return st, err
	}
	st.AcquiredAt = timeOf(acquired)
	st.RenewedAt = timeOf(renewed)
	st.ExpiresAt = timeOf(expires)
	st.ChangedAt = timeOf(changed)
	st.TTL = time.Duration(ttlUS) * time.Microsecond
	st.ReservedTTL = time.Duration(reservedUS) * time.Microsecond
	st.PrevExpired = st.PrevHolder != ""
	return st, nil
}

// scanMember reads a row of the members statement.
func scanMember(row pgx.CollectableRow) (store.Member, error) {
	var (
		m     store.Member
		seen  pgtype.Timestamptz
		ttlUS int64
		count int32
		mast  int32
	)
	err := row.Scan(&m.ID, &m.Info, &m.Locks, &count, &m.LockSetID, &mast, &m.Weight, &seen, &ttlUS)
	m.LockCount, m.Masters = int(count), int(mast)
	m.SeenAt = timeOf(seen)
	m.TTL = time.Duration(ttlUS) * time.Microsecond
	return m, err
}

func timeOf(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time
}
