package mysql

import (
	"strconv"
	"strings"
)

// notifyKeep is how far (in numbers of the sequence) the notifications a
// writer keeps reach back: a subscriber that falls further behind loses
// the older ones, and says so (store.ChangeResync).
const notifyKeep = 50000

// memberPurgeAfter is how long a member's record stays after it expired,
// before a writer deletes it.
const memberPurgeAfter = "INTERVAL 1 HOUR"

// queries holds the statements of the store's calls for one prefix. The
// table names are the only text spliced into them; every value reaches
// them through the user variables a batch's prologue sets (batchText).
//
// rowNow is the server's UTC time when it evaluates a row, not when the
// statement (or the batch) began: a renewal that locks a row another
// writer just updated must judge that writer's expiry against the time
// now, or it would revive a lease the writer ended while it waited (the
// statement's start, UTC_TIMESTAMP(6), made that lease look valid still).
// SYSDATE(6) is the time of evaluation, in the session's time zone; its
// difference with NOW(6), the statement's start in the same zone, is the
// time elapsed since, added to the statement's UTC start.
const rowNow = `(UTC_TIMESTAMP(6) + INTERVAL TIMESTAMPDIFF(MICROSECOND, NOW(6), SYSDATE(6)) MICROSECOND)`

// Variables every batch has: @mj_now, the server's UTC_TIMESTAMP(6) when
// the batch began, which decides expiry for the whole call (a lease is
// never granted beyond @mj_now + ttl; a wait for a row lock only shortens
// it).
type queries struct {
	acquire, acquireLock, acquireEnd string
	renewStart, renew, renewEnd      string
	memberPre, member, memberResult  string
	release, transfer                string
	disable, enable                  string
	handoff                          string
	locksAll, locksNamed             string
	appendEvents                     string
	eventsAll, eventsLock            string
	members, memberLocks             string
	membersOfLock                    string
	leave                            string
	notifyFrom, notifyMax            string
}

// Pieces of SQL shared by the statements.
const (
	// nameCol is the type of a lock name read from a JSON document: the
	// join with the VARBINARY columns compares bytes.
	nameCol = "VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
	// textCol is the type of free text read from a JSON document.
	textCol = "LONGTEXT CHARACTER SET utf8mb4"
	// now is the batch's time as a DATETIME(6).
	now = "CAST(@mj_now AS DATETIME(6))"
)

// epochMicros converts a DATETIME(6) column (UTC) to microseconds since
// the Unix epoch, NULL for NULL.
func epochMicros(col string) string {
	return "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', " + col + ")"
}

// stateCols selects a lock's state from the row aliased l, taking the name
// from name (so that a left join reports unknown names as free and
// enabled). scanState reads them after a leading flag. Remaining times are
// computed by the server at the statement's UTC_TIMESTAMP(6).
func stateCols(name string) string {
	return name + `,
	COALESCE(l.holder, ''), COALESCE(l.holder_info, ''), COALESCE(l.token, 0),
	` + epochMicros("l.acquired_at") + `, ` + epochMicros("l.renewed_at") + `, ` + epochMicros("l.expires_at") + `,
	COALESCE(TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), l.expires_at), 0),
	COALESCE(l.revoked, FALSE), COALESCE(l.disabled, FALSE), COALESCE(l.reason, ''), COALESCE(l.changed_by, ''),
	` + epochMicros("l.changed_at") + `,
	COALESCE(l.prev_holder, ''), COALESCE(l.prev_token, 0), COALESCE(l.prev_expired, FALSE),
	COALESCE(l.handoff, FALSE), COALESCE(l.handoff_to, ''), COALESCE(l.reserved_for, ''),
	COALESCE(TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), l.reserved_until), 0)`
}

// names reads the lock names of a JSON array of strings, optionally with
// their ordinal (1-based).
func names(doc string, ord bool) string {
	cols := "name " + nameCol + " PATH '$'"
	if ord {
		cols = "ord FOR ORDINALITY, " + cols
	}
	return "JSON_TABLE(" + doc + ", '$[*]' COLUMNS (" + cols + "))"
}

// eligible is the condition under which holder @mj_h may take the row l:
// no unexpired lease, enabled, and not reserved for another instance.
const eligible = `((l.holder IS NULL OR l.expires_at <= ` + now + `) AND NOT l.disabled
	AND (l.reserved_for IS NULL OR l.reserved_for = @mj_h OR l.reserved_until <= ` + now + `))`

// joinLocks joins a JSON_TABLE (alias c, column name) to the locks table
// by primary key, in that order: without STRAIGHT_JOIN and the index hint
// the optimizer may scan a small locks table, and a scan in a locking
// statement locks every row it reads.
func joinLocks(jsonTable, locks string) string {
	return jsonTable + " c STRAIGHT_JOIN " + locks + " l FORCE INDEX (PRIMARY) ON l.lock_name = c.name"
}

// The sequence's row is the first row a writing transaction locks: a
// transaction that takes it takes it before any row of a lock or member,
// so writers that need numbers serialise on it and cannot deadlock with
// each other, and transactions that need none (renewals, and checks that
// find nothing to take) never wait for it. seqLock locks it when @mj_need
// > 0 (a condition on a variable is decided before any row is read, so
// nothing is locked otherwise), giving @mj_base; seqEnd records the
// @mj_need numbers drawn (@mj_base + 1 ...) and prunes the notifications
// far behind them.
func seqLock(t tables, always bool) string {
	cond := " AND @mj_need > 0"
	if always {
		cond = ""
	}
	// The notifications' highest number (a primary key lookup at the end
	// of the index) heals a sequence reset by hand. It is a consistent
	// read, taken before: inside the locking read it would lock the end of
	// the notify table, where the holder of the sequence inserts.
	return `SELECT COALESCE(MAX(ver), 0) INTO @mj_nmax FROM ` + t.notify + ` WHERE 1 = 1` + cond + `;
SELECT GREATEST(value, @mj_nmax) INTO @mj_base FROM ` + t.seq + ` WHERE id = 1` + cond + ` FOR UPDATE;`
}

func seqEnd(t tables, keep int) string {
	return `UPDATE ` + t.seq + ` SET value = @mj_base + @mj_need WHERE id = 1 AND @mj_need > 0;
DELETE FROM ` + t.notify + ` WHERE ver <= @mj_base - ` + strconv.Itoa(keep) + ` AND @mj_need > 0;`
}

func buildQueries(t tables, cfg config) queries {
	r := strings.NewReplacer(
		"{{T}}", t.locks, "{{S}}", t.seq, "{{N}}", t.notify, "{{H}}", t.history,
		"{{M}}", t.members, "{{ML}}", t.memberLocks,
		"{{NOW}}", now, "{{ELIGIBLE}}", eligible,
		"{{SEQLOCK}}", seqLock(t, false), "{{SEQLOCKALWAYS}}", seqLock(t, true), "{{SEQEND}}", seqEnd(t, cfg.notifyKeep),
		"{{REQ}}", names("@mj_req", false),
		"{{CAND}}", joinLocks(names("@mj_cand", false), t.locks),
		"{{CANDORD}}", joinLocks(names("@mj_cand", true), t.locks),
		"{{STATE_C}}", stateCols("c.name"),
		"{{STATE_L}}", stateCols("l.lock_name"),
		"{{TAKEN}}", "COALESCE(l.holder = @mj_h AND l.acquired_at = "+now+" AND l.token > @mj_base, FALSE)",
	)
	// Runs of spaces, tabs and newlines become one space: every byte of a
	// statement is sent on every call. No literal in the statements holds
	// two blanks in a row.
	q := func(s string) string { return strings.Join(strings.Fields(r.Replace(s)), " ") }
	return queries{
		// Inputs: @mj_req (JSON array of the names, sorted, distinct), @mj_h
		// and @mj_info (the holder), @mj_ttl (µs). The member's parts
		// (memberPre, member), if any, go after acquire and acquireLock.
		//
		// 1. The candidates: names whose row is missing, or free/expired,
		//    enabled and not reserved for another, in a consistent read
		//    (no locks: a follower's periodic check of locks held by others
		//    locks and writes nothing).
		acquire: q(`START TRANSACTION;
SELECT JSON_ARRAYAGG(c.name) INTO @mj_cand
FROM {{REQ}} c LEFT JOIN {{T}} l ON l.lock_name = c.name
WHERE l.lock_name IS NULL OR {{ELIGIBLE}};`),

		// 2. With candidates, lock the sequence: one number per candidate
		//    (its token if taken, and its notification's number) and one
		//    for the member's notification, if any.
		// 3. Create the candidates' missing rows and lock every
		//    candidate's row, in byte order.
		acquireLock: q(`SET @mj_n = COALESCE(JSON_LENGTH(@mj_cand), 0);
SET @mj_need = @mj_n + COALESCE(@mj_mnote, 0);
{{SEQLOCK}}
INSERT INTO {{T}} (lock_name)
SELECT c.name FROM ` + names("@mj_cand", false) + ` c ORDER BY CAST(c.name AS BINARY)
ON DUPLICATE KEY UPDATE lock_name = lock_name;`),

		// 4. Record the lease being replaced, then take every candidate
		//    still eligible: the rows are locked, and the condition reads
		//    their latest committed version, so the check of the control
		//    and reservation is atomic with the take. GREATEST keeps tokens
		//    growing even if the sequence was reset by hand.
		// 5. Notify each lock taken, and the member's arrival. When every
		//    candidate was taken (the usual case) the names come straight
		//    from @mj_cand.
		// 6. Result sets: unless every candidate was taken, the
		//    candidates' rows (a locking read, so the latest version: the
		//    lease this call took, or that of whoever won), then every
		//    requested name from the transaction's snapshot, in which the
		//    rows this transaction wrote are current (the caller prefers
		//    the first). The leading flag is "taken by this call".
		acquireEnd: q(`UPDATE {{CAND}}
SET l.prev_holder = l.holder, l.prev_token = l.token, l.prev_expired = (l.holder IS NOT NULL)
WHERE {{ELIGIBLE}};
UPDATE {{CANDORD}}
SET l.holder = @mj_h, l.holder_info = @mj_info, l.token = GREATEST(@mj_base + c.ord, l.token + 1),
	l.acquired_at = {{NOW}}, l.renewed_at = {{NOW}}, l.expires_at = {{NOW}} + INTERVAL @mj_ttl MICROSECOND,
	l.revoked = FALSE, l.handoff = FALSE, l.handoff_to = '', l.reserved_for = NULL, l.reserved_until = NULL
WHERE {{ELIGIBLE}};
SET @mj_all = (ROW_COUNT() = @mj_n);
INSERT INTO {{N}} (ver, kind, lock_name, at)
SELECT @mj_base + c.ord, 'lease', c.name, {{NOW}} FROM ` + names("@mj_cand", true) + ` c WHERE @mj_all;
INSERT INTO {{N}} (ver, kind, lock_name, at)
SELECT @mj_base + c.ord, 'lease', l.lock_name, {{NOW}} FROM {{CANDORD}}
WHERE NOT @mj_all AND {{TAKEN}};
INSERT INTO {{N}} (ver, kind, lock_name, at)
SELECT @mj_base + @mj_n + 1, 'member', '', {{NOW}} FROM DUAL WHERE @mj_mnote > 0;
{{SEQEND}}
SELECT {{TAKEN}}, {{STATE_C}} FROM {{CAND}} WHERE NOT @mj_all FOR UPDATE;
SELECT {{TAKEN}}, {{STATE_C}} FROM {{REQ}} c LEFT JOIN {{T}} l ON l.lock_name = c.name;`),

		// Inputs: @mj_req (JSON array of [name, token], sorted by name),
		// @mj_h, @mj_ttl (µs). The member's parts, if any, go between
		// renewStart and renew. A renewal locks only the rows of the leases
		// it renews (and the sequence, when its member record is new). A
		// revoked lease renews too (its holder keeps it while the job
		// stops).
		renewStart: `START TRANSACTION;`,
		renew: q(`SET @mj_need = COALESCE(@mj_mnote, 0);
{{SEQLOCK}}
UPDATE ` + joinLocks("JSON_TABLE(@mj_req, '$[*]' COLUMNS (name "+nameCol+" PATH '$[0]', tok BIGINT PATH '$[1]'))", t.locks) + `
SET l.renewed_at = {{NOW}}, l.expires_at = {{NOW}} + INTERVAL @mj_ttl MICROSECOND
WHERE l.token = c.tok AND l.holder = @mj_h AND l.expires_at > ` + rowNow + `;`),

		// One row per ref, with its ordinal in @mj_req.
		renewEnd: q(`INSERT INTO {{N}} (ver, kind, lock_name, at)
SELECT @mj_base + 1, 'member', '', {{NOW}} FROM DUAL WHERE @mj_mnote > 0;
{{SEQEND}}
SELECT c.ord, COALESCE(l.holder = @mj_h AND l.token = c.tok AND l.renewed_at = {{NOW}}, FALSE),
	COALESCE(TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), l.expires_at), 0),
	COALESCE(l.revoked, FALSE), COALESCE(l.disabled, FALSE),
	COALESCE(l.handoff AND l.expires_at > UTC_TIMESTAMP(6), FALSE), COALESCE(l.handoff_to, '')
FROM JSON_TABLE(@mj_req, '$[*]' COLUMNS (ord FOR ORDINALITY, name ` + nameCol + ` PATH '$[0]', tok BIGINT PATH '$[1]')) c
LEFT JOIN {{T}} l ON l.lock_name = c.name;`),

		// The member's record, written in the transaction of an Acquire or
		// Renew. Inputs: @mj_mid, @mj_minfo, @mj_mset (the announced lock
		// set id), @mj_mlocks (JSON array of its locks, or NULL when this
		// handle knows the record has that set's list), @mj_mcount,
		// @mj_mmasters, @mj_mweight, @mj_mttl (µs).
		//
		// memberPre, a consistent read before the sequence is locked, sets
		// @mj_mnote when the record is missing or expired (a member joins).
		memberPre: q(`SELECT COUNT(*) = 0 INTO @mj_mnote FROM {{M}} WHERE id = @mj_mid AND expires_at > {{NOW}};`),

		// member writes the record. The lock list is rewritten only when a
		// list is given and the set id differs from the stored one; then
		// members that expired over an hour ago are deleted too, by
		// primary key (ids gathered by a consistent read, so that live
		// members' rows are not locked).
		member: q(`INSERT INTO {{M}} (id) VALUES (@mj_mid) ON DUPLICATE KEY UPDATE id = id;
SELECT lock_set_id INTO @mj_mold FROM {{M}} WHERE id = @mj_mid FOR UPDATE;
SET @mj_mrw = (@mj_mlocks IS NOT NULL AND (@mj_mold <> @mj_mset OR @mj_mset = ''));
DELETE FROM {{ML}} WHERE member_id = @mj_mid AND @mj_mrw AND (@mj_mold <> '' OR @mj_mset = '');
INSERT INTO {{ML}} (lock_name, member_id)
SELECT c.name, @mj_mid FROM ` + names("@mj_mlocks", false) + ` c WHERE @mj_mrw ORDER BY CAST(c.name AS BINARY);
UPDATE {{M}} SET info = @mj_minfo, lock_set_id = IF(@mj_mrw, @mj_mset, lock_set_id), lock_count = @mj_mcount,
	masters = @mj_mmasters, weight = @mj_mweight, seen_at = {{NOW}}, expires_at = {{NOW}} + INTERVAL @mj_mttl MICROSECOND
WHERE id = @mj_mid;
SELECT JSON_ARRAYAGG(HEX(d.id)) INTO @mj_dead FROM (
	SELECT id FROM {{M}} WHERE @mj_mrw AND expires_at < {{NOW}} - ` + memberPurgeAfter + ` ORDER BY id LIMIT 100) d;
DELETE ml FROM JSON_TABLE(@mj_dead, '$[*]' COLUMNS (h VARCHAR(510) CHARACTER SET ascii PATH '$')) d
	STRAIGHT_JOIN {{ML}} ml ON ml.member_id = UNHEX(d.h);
DELETE m FROM JSON_TABLE(@mj_dead, '$[*]' COLUMNS (h VARCHAR(510) CHARACTER SET ascii PATH '$')) d
	STRAIGHT_JOIN {{M}} m FORCE INDEX (PRIMARY) ON m.id = UNHEX(d.h)
WHERE m.expires_at < {{NOW}} - ` + memberPurgeAfter + `;`),

		// The stored lock set id, for the handle to know whether the list
		// is written.
		memberResult: q(`SELECT lock_set_id FROM {{M}} WHERE id = @mj_mid;`),

		// Inputs: @mj_req (JSON array of [name, token, successor (hex),
		// reserve µs], sorted by name), @mj_h. The row stays: it keeps the
		// control and the last token.
		release: q(`START TRANSACTION;
{{SEQLOCKALWAYS}}
SELECT JSON_ARRAYAGG(c.name) INTO @mj_rel
FROM ` + joinLocks("JSON_TABLE(@mj_req, '$[*]' COLUMNS (name "+nameCol+" PATH '$[0]', tok BIGINT PATH '$[1]'))", t.locks) + `
WHERE l.holder = @mj_h AND l.token = c.tok FOR UPDATE;
SET @mj_need = COALESCE(JSON_LENGTH(@mj_rel), 0);
UPDATE ` + joinLocks("JSON_TABLE(@mj_req, '$[*]' COLUMNS (name "+nameCol+" PATH '$[0]', tok BIGINT PATH '$[1]', "+
			"succ VARCHAR(510) CHARACTER SET ascii PATH '$[2]', res BIGINT PATH '$[3]'))", t.locks) + `
SET l.holder = NULL, l.holder_info = NULL, l.acquired_at = NULL, l.renewed_at = NULL, l.expires_at = NULL,
	l.revoked = FALSE, l.handoff = FALSE, l.handoff_to = '',
	l.reserved_for = IF(c.succ <> '' AND c.res > 0, UNHEX(c.succ), NULL),
	l.reserved_until = IF(c.succ <> '' AND c.res > 0, {{NOW}} + INTERVAL c.res MICROSECOND, NULL)
WHERE l.holder = @mj_h AND l.token = c.tok;
INSERT INTO {{N}} (ver, kind, lock_name, at)
SELECT @mj_base + r.ord, 'lease', r.name, {{NOW}} FROM ` + names("@mj_rel", true) + ` r;
{{SEQEND}}
COMMIT;`),

		// Inputs: @mj_req (JSON array of [name, token, successor (hex),
		// reserve µs], sorted by name, one ref per name and token), @mj_h,
		// @mj_ttl (µs). Release's statements, with the successor's lease
		// written in the same UPDATE, so in the same transaction:
		//
		// 1. Lock the sequence first, and only then read anything: the
		//    notifications' highest number (as seqLock, but after the
		//    locking read rather than before it), then the successors'
		//    member infos. Every Leave locks the sequence before it
		//    deletes the member row and keeps it until its commit, so once
		//    the sequence is ours a Leave has either committed or not yet
		//    deleted anything, and cannot until we commit.
		// 2. The successors' member infos, from unexpired records
		//    (expires_at after the time the row is read, rowNow, not the
		//    batch's start: a record that expired while the batch waited
		//    for the sequence does not count), as an object keyed by the
		//    successor's hex id (@mj_infos). This is a consistent read, so
		//    member rows are never locked and a member's renewal (which
		//    takes no sequence) never makes a transfer wait, nor waits for
		//    one. It sees every Leave committed before step 1 at both
		//    isolation levels: READ COMMITTED reads the latest committed
		//    version at each statement, and REPEATABLE READ takes its
		//    snapshot at the transaction's first consistent read, which is
		//    step 1's read of the notifications, after the locking read of
		//    the sequence (a locking read takes no snapshot). With the
		//    reads before the sequence's lock, as in seqLock, a Leave that
		//    committed while the transfer waited for the sequence was
		//    missed (TestTransferRacesLeave). A locking read of the member
		//    rows would also close that window, but would wait for the
		//    successor's own renewal holding its member row.
		// 3. Lock in byte order the rows of the refs that are current:
		//    holder and token match and the lease is unexpired at the time
		//    the row is read, after any wait for it (rowNow, as Renew: a
		//    lease that expired meanwhile is not handed on). Every other
		//    writer of a lease (Acquire, Release, Disable) and Leave take
		//    the sequence first, so nothing but the holder's own renewal
		//    can change these rows, and no successor's record can be
		//    deleted, until COMMIT; the decision, give or release, is taken
		//    here, on the rows' latest committed version: give when the
		//    ref names a successor that has an entry in @mj_infos (an
		//    unexpired member record) and the lease is neither revoked nor
		//    of a disabled lock. @mj_rel lists [name, token, successor,
		//    reserve, give].
		// 4. One number per row: its notification's, and for a row given,
		//    its token (GREATEST as in Acquire: above every number drawn
		//    before, and above the row's own last token). A row released
		//    is written as by Release (reserved for the successor when the
		//    ref asks for it). Every right-hand side reads only the inputs
		//    and the column it assigns, so the result does not depend on
		//    the order of the assignments of a multi-table UPDATE.
		// 5. Notify each row, as Release and Acquire do ('lease').
		transfer: q(`START TRANSACTION;
SELECT value INTO @mj_base FROM {{S}} WHERE id = 1 FOR UPDATE;
SELECT GREATEST(@mj_base, COALESCE(MAX(ver), 0)) INTO @mj_base FROM {{N}};
SELECT JSON_OBJECTAGG(s.succ, HEX(COALESCE(m.info, ''))) INTO @mj_infos
FROM (SELECT DISTINCT j.succ FROM JSON_TABLE(@mj_req, '$[*]' COLUMNS (succ VARCHAR(510) CHARACTER SET ascii PATH '$[2]')) j
	WHERE j.succ <> '') s
STRAIGHT_JOIN {{M}} m FORCE INDEX (PRIMARY) ON m.id = UNHEX(s.succ)
WHERE m.expires_at > ` + rowNow + `;
SELECT JSON_ARRAYAGG(JSON_ARRAY(c.name, c.tok, c.succ, c.res,
	IF(c.succ <> '' AND NOT l.revoked AND NOT l.disabled
		AND COALESCE(JSON_CONTAINS_PATH(@mj_infos, 'one', CONCAT('$."', c.succ, '"')), 0), 1, 0)))
INTO @mj_rel
FROM ` + joinLocks("JSON_TABLE(@mj_req, '$[*]' COLUMNS (name "+nameCol+" PATH '$[0]', tok BIGINT PATH '$[1]', "+
			"succ VARCHAR(510) CHARACTER SET ascii PATH '$[2]', res BIGINT PATH '$[3]'))", t.locks) + `
WHERE l.holder = @mj_h AND l.token = c.tok AND l.expires_at > ` + rowNow + ` FOR UPDATE;
SET @mj_need = COALESCE(JSON_LENGTH(@mj_rel), 0);
UPDATE ` + joinLocks("JSON_TABLE(@mj_rel, '$[*]' COLUMNS (ord FOR ORDINALITY, name "+nameCol+" PATH '$[0]', tok BIGINT PATH '$[1]', "+
			"succ VARCHAR(510) CHARACTER SET ascii PATH '$[2]', res BIGINT PATH '$[3]', give INT PATH '$[4]'))", t.locks) + `
SET l.holder = IF(c.give, UNHEX(c.succ), NULL),
	l.holder_info = IF(c.give, COALESCE(UNHEX(JSON_UNQUOTE(JSON_EXTRACT(@mj_infos, CONCAT('$."', c.succ, '"')))), ''), NULL),
	l.token = IF(c.give, GREATEST(@mj_base + c.ord, l.token + 1), l.token),
	l.acquired_at = IF(c.give, {{NOW}}, NULL), l.renewed_at = IF(c.give, {{NOW}}, NULL),
	l.expires_at = IF(c.give, {{NOW}} + INTERVAL @mj_ttl MICROSECOND, NULL),
	l.prev_holder = IF(c.give, @mj_h, l.prev_holder), l.prev_token = IF(c.give, c.tok, l.prev_token),
	l.prev_expired = IF(c.give, FALSE, l.prev_expired),
	l.revoked = FALSE, l.handoff = FALSE, l.handoff_to = '',
	l.reserved_for = IF(NOT c.give AND c.succ <> '' AND c.res > 0, UNHEX(c.succ), NULL),
	l.reserved_until = IF(NOT c.give AND c.succ <> '' AND c.res > 0, {{NOW}} + INTERVAL c.res MICROSECOND, NULL)
WHERE l.holder = @mj_h AND l.token = c.tok;
INSERT INTO {{N}} (ver, kind, lock_name, at)
SELECT @mj_base + r.ord, 'lease', r.name, {{NOW}}
FROM JSON_TABLE(@mj_rel, '$[*]' COLUMNS (ord FOR ORDINALITY, name ` + nameCol + ` PATH '$[0]')) r;
{{SEQEND}}
COMMIT;`),

		// Inputs: @mj_lock, @mj_reason, @mj_by. A lock already disabled is
		// left as it is. The leading flag of the result is "changed".
		disable: q(`START TRANSACTION;
{{SEQLOCKALWAYS}}
INSERT INTO {{T}} (lock_name) VALUES (@mj_lock) ON DUPLICATE KEY UPDATE lock_name = lock_name;
UPDATE {{T}} SET disabled = TRUE, reason = @mj_reason, changed_by = @mj_by, changed_at = {{NOW}},
	revoked = (holder IS NOT NULL AND expires_at > {{NOW}}), handoff = FALSE, handoff_to = ''
WHERE lock_name = @mj_lock AND NOT disabled;
SET @mj_need = (ROW_COUNT() > 0);
INSERT INTO {{N}} (ver, kind, lock_name, at) SELECT @mj_base + 1, 'control', @mj_lock, {{NOW}} FROM DUAL WHERE @mj_need > 0;
{{SEQEND}}
SELECT @mj_need > 0, {{STATE_L}} FROM {{T}} l WHERE l.lock_name = @mj_lock;
COMMIT;`),

		// Inputs: @mj_lock, @mj_by. An unknown lock is not created.
		enable: q(`START TRANSACTION;
{{SEQLOCKALWAYS}}
UPDATE {{T}} SET disabled = FALSE, reason = '', changed_by = @mj_by, changed_at = {{NOW}}
WHERE lock_name = @mj_lock AND disabled;
SET @mj_need = (ROW_COUNT() > 0);
INSERT INTO {{N}} (ver, kind, lock_name, at) SELECT @mj_base + 1, 'control', @mj_lock, {{NOW}} FROM DUAL WHERE @mj_need > 0;
{{SEQEND}}
SELECT @mj_need > 0, {{STATE_C}} FROM (SELECT @mj_lock AS name) c LEFT JOIN {{T}} l ON l.lock_name = c.name;
COMMIT;`),

		// Inputs: @mj_lock, @mj_to. The result: disabled, held, then the
		// state.
		handoff: q(`START TRANSACTION;
{{SEQLOCKALWAYS}}
SELECT disabled, COALESCE(holder IS NOT NULL AND expires_at > {{NOW}}, FALSE) INTO @mj_dis, @mj_held
FROM {{T}} WHERE lock_name = @mj_lock FOR UPDATE;
SET @mj_need = (COALESCE(@mj_dis, 0) = 0 AND COALESCE(@mj_held, 0) = 1);
UPDATE {{T}} SET handoff = TRUE, handoff_to = @mj_to WHERE lock_name = @mj_lock AND @mj_need > 0;
INSERT INTO {{N}} (ver, kind, lock_name, at) SELECT @mj_base + 1, 'control', @mj_lock, {{NOW}} FROM DUAL WHERE @mj_need > 0;
{{SEQEND}}
SELECT COALESCE(@mj_dis, 0), COALESCE(@mj_held, 0), {{STATE_C}} FROM (SELECT @mj_lock AS name) c LEFT JOIN {{T}} l ON l.lock_name = c.name;
COMMIT;`),

		locksAll:   q(`SELECT FALSE, {{STATE_L}} FROM {{T}} l;`),
		locksNamed: q(`SELECT FALSE, {{STATE_C}} FROM {{REQ}} c LEFT JOIN {{T}} l ON l.lock_name = c.name;`),

		// Inputs: @mj_req (JSON array of [lock, kind, instance, token,
		// reason, remote]), @mj_locks (JSON array of the distinct locks),
		// @mj_limit (the retention). Ids are drawn from row 2 of the
		// sequence (locked before row 1: no other transaction takes row 2),
		// in the order of the events, without gaps: the prune is one range
		// delete on the primary key below the newest id minus the
		// retention. Appenders serialise on that row.
		appendEvents: q(`START TRANSACTION;
SET @mj_hn = JSON_LENGTH(@mj_req);
SELECT COALESCE(MAX(id), 0) INTO @mj_hmax FROM {{H}};
UPDATE {{S}} SET value = GREATEST(value, @mj_hmax) + @mj_hn WHERE id = 2;
SELECT value - @mj_hn INTO @mj_hbase FROM {{S}} WHERE id = 2;
SET @mj_need = JSON_LENGTH(@mj_locks);
{{SEQLOCK}}
INSERT INTO {{H}} (id, lock_name, kind, instance, token, reason, remote, at)
SELECT @mj_hbase + e.ord, e.name, e.kind, e.inst, e.tok, e.reason, e.remote, {{NOW}}
FROM JSON_TABLE(@mj_req, '$[*]' COLUMNS (ord FOR ORDINALITY, name ` + nameCol + ` PATH '$[0]',
	kind ` + textCol + ` PATH '$[1]', inst ` + textCol + ` PATH '$[2]', tok BIGINT PATH '$[3]',
	reason ` + textCol + ` PATH '$[4]', remote ` + textCol + ` PATH '$[5]')) e;
DELETE FROM {{H}} WHERE id <= @mj_hbase + @mj_hn - @mj_limit;
INSERT INTO {{N}} (ver, kind, lock_name, at)
SELECT @mj_base + c.ord, 'history', c.name, {{NOW}} FROM ` + names("@mj_locks", true) + ` c;
{{SEQEND}}
COMMIT;`),

		// Inputs: @mj_before; LIMIT is formatted in (an integer).
		eventsAll: q(`SELECT id, lock_name, kind, instance, token, reason, remote, ` + epochMicros("at") + `
FROM {{H}} WHERE id < @mj_before ORDER BY id DESC LIMIT `),
		eventsLock: q(`SELECT id, lock_name, kind, instance, token, reason, remote, ` + epochMicros("at") + `
FROM {{H}} WHERE lock_name = @mj_lock AND id < @mj_before ORDER BY id DESC LIMIT `),

		// Unexpired members, then (membersOfLock) those taking part in
		// @mj_lock; memberLocks lists the locks of unexpired members.
		members: q(`SELECT m.id, COALESCE(m.info, ''), m.lock_set_id, m.lock_count, m.masters, m.weight,
	` + epochMicros("m.seen_at") + `, TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), m.expires_at)
FROM {{M}} m WHERE m.expires_at > UTC_TIMESTAMP(6)`),
		membersOfLock: q(` AND m.id IN (SELECT ml.member_id FROM {{ML}} ml WHERE ml.lock_name = @mj_lock)`),
		memberLocks: q(`SELECT ml.member_id, ml.lock_name FROM {{ML}} ml JOIN {{M}} m ON m.id = ml.member_id
WHERE m.expires_at > UTC_TIMESTAMP(6);`),

		// Input: @mj_mid.
		leave: q(`START TRANSACTION;
{{SEQLOCKALWAYS}}
DELETE FROM {{ML}} WHERE member_id = @mj_mid;
DELETE FROM {{M}} WHERE id = @mj_mid;
SET @mj_need = (ROW_COUNT() > 0);
INSERT INTO {{N}} (ver, kind, lock_name, at) SELECT @mj_base + 1, 'member', '', {{NOW}} FROM DUAL WHERE @mj_need > 0;
{{SEQEND}}
COMMIT;`),

		// Input: the last number seen, formatted in. Each row also
		// carries the smallest number kept and the sequence's value, read
		// in the same snapshot as the rows (pollOnce, lostBefore).
		notifyFrom: q(`SELECT ver, kind, lock_name, (SELECT MIN(ver) FROM {{N}}), (SELECT value FROM {{S}} WHERE id = 1)
FROM {{N}} WHERE ver > `),
		notifyMax: q(`SELECT value FROM {{S}} WHERE id = 1;`),
	}
}
