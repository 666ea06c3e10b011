package postgres

import (
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/masterjob/masterjob/store"
)

// queries holds the store's statements for one table. The table name is the
// only text spliced into them, quoted by pgx.Identifier.Sanitize; every
// value travels as a parameter.
type queries struct {
	acquire    string
	renew      string
	release    string
	disable    string
	enable     string
	locksAll   string
	locksNamed string

	appendEvents string
	eventsAll    string
	eventsLock   string
}

// stateCols selects a lock's state from the row aliased c, taking the name
// from name (so that a left join can report unknown names as free and
// enabled). Its columns are the ones scanState reads after the leading flag.
// The TTL is computed by the server, in microseconds (its timestamps'
// resolution), rounded down.
func stateCols(name string) string {
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
	c.changed_at`
}

// ttlParam turns a parameter holding microseconds into an interval.
func ttlParam(n string) string { return "(" + n + "::bigint * interval '1 microsecond')" }

// buildQueries returns the statements on table and the history table.
func buildQueries(table, history string) queries {
	// One pass: text substituted (the table names) is not scanned again.
	r := strings.NewReplacer(
		"{{T}}", table,
		"{{H}}", history,
		"{{C}}", stateCols("c.lock_name"),
		"{{RC}}", stateCols("r.lock_name"),
		// The row c (the latest version, locked) may be taken.
		"{{FREE}}", "((c.holder IS NULL OR c.expires_at <= now()) AND NOT c.disabled)",
	)
	q := func(s string) string { return r.Replace(s) }
	return queries{
		// $1 names (sorted, distinct), $2 holder ID, $3 holder info, $4 ttl µs,
		// $5 token sequence.
		//
		// The INSERT's source is the candidates: the names whose row, in
		// this statement's snapshot, is missing or free/expired and enabled.
		// ORDER BY keeps the order in which rows are locked the same for
		// every caller. A candidate whose row exists by the time it is
		// inserted (it was in the snapshot, or a concurrent caller inserted
		// it since) goes to ON CONFLICT DO UPDATE, which locks the latest
		// committed version of the row and evaluates the SET expressions
		// against it: there, and only there, eligibility is decided, which
		// is what makes the control check atomic with the take. An
		// ineligible row (a concurrent caller won, or disabled it) is
		// rewritten with its own values so that RETURNING reports its latest
		// state; nextval runs only for a row being taken, after it is
		// locked, so a new token exceeds every token the row ever had.
		// Names that were not candidates are reported from the snapshot.
		//
		// A returned row was taken by this statement when its holder is $2
		// and its acquired_at is this transaction's now().
		acquire: q(`WITH req AS (
	SELECT n AS lock_name FROM unnest($1::text[]) AS n
), acq AS (
	INSERT INTO {{T}} AS c (lock_name, holder, holder_info, acquired_at, renewed_at, expires_at)
	SELECT r.lock_name, $2, $3, now(), now(), now() + ` + ttlParam("$4") + `
	FROM req r LEFT JOIN {{T}} o ON o.lock_name = r.lock_name
	WHERE o.lock_name IS NULL OR ((o.holder IS NULL OR o.expires_at <= now()) AND NOT o.disabled)
	ORDER BY r.lock_name
	ON CONFLICT (lock_name) DO UPDATE SET
		holder      = CASE WHEN {{FREE}} THEN excluded.holder ELSE c.holder END,
		holder_info = CASE WHEN {{FREE}} THEN excluded.holder_info ELSE c.holder_info END,
		token       = CASE WHEN {{FREE}} THEN nextval($5::text::regclass) ELSE c.token END,
		acquired_at = CASE WHEN {{FREE}} THEN excluded.acquired_at ELSE c.acquired_at END,
		renewed_at  = CASE WHEN {{FREE}} THEN excluded.renewed_at ELSE c.renewed_at END,
		expires_at  = CASE WHEN {{FREE}} THEN excluded.expires_at ELSE c.expires_at END,
		revoked     = CASE WHEN {{FREE}} THEN false ELSE c.revoked END
	RETURNING coalesce(c.holder = $2 AND c.acquired_at = now(), false) AS acquired, {{C}}
)
SELECT acq.* FROM acq
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
	WHERE c.lock_name = r.lock_name AND c.token = r.token AND c.holder = $3 AND c.expires_at > now()
	RETURNING c.lock_name, c.token, c.revoked, c.disabled,
		floor(extract(epoch FROM c.expires_at - now()) * 1000000)::bigint AS ttl_us
)
SELECT r.lock_name, r.token, u.lock_name IS NOT NULL, coalesce(u.ttl_us, 0),
	coalesce(u.revoked, o.revoked AND o.holder = $3 AND o.token = r.token, false),
	coalesce(u.disabled, o.disabled, false)
FROM req r
LEFT JOIN upd u ON u.lock_name = r.lock_name AND u.token = r.token
LEFT JOIN {{T}} o ON o.lock_name = r.lock_name
ORDER BY r.ord`),

		// $1 names, $2 tokens, $3 holder ID, $4 channel. The row stays: it
		// keeps the control and the last token.
		release: q(`WITH req AS (
	SELECT * FROM unnest($1::text[], $2::bigint[]) AS r(lock_name, token)
), rel AS (
	UPDATE {{T}} c SET holder = NULL, holder_info = '', acquired_at = NULL, renewed_at = NULL,
		expires_at = NULL, revoked = false
	FROM req r
	WHERE c.lock_name = r.lock_name AND c.token = r.token AND c.holder = $3
	RETURNING c.lock_name
)
SELECT count(pg_notify($4, lock_name)) FROM rel`),

		// $1 name, $2 reason, $3 by, $4 channel. The leading flag is
		// "changed". The CTE n is referenced so that it runs: pg_notify for
		// the changed row.
		disable: q(`WITH up AS (
	INSERT INTO {{T}} AS c (lock_name, token, disabled, reason, changed_by, changed_at)
	VALUES ($1, 0, true, $2, $3, now())
	ON CONFLICT (lock_name) DO UPDATE SET
		disabled = true,
		reason = excluded.reason,
		changed_by = excluded.changed_by,
		changed_at = excluded.changed_at,
		revoked = (c.holder IS NOT NULL AND c.expires_at > now())
	WHERE NOT c.disabled
	RETURNING {{C}}
), n AS (
	SELECT count(pg_notify($4, lock_name)) FROM up
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
	SELECT count(pg_notify($3, lock_name)) FROM up
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
		// retention. Identity values are drawn in the order of the rows
		// inserted (ORDER BY ord). The DELETE sees the snapshot taken before
		// the INSERT, so it prunes only older rows: with at most $7 rows
		// inserted, at most $7 remain.
		appendEvents: q(`WITH ins AS (
	INSERT INTO {{H}} (lock_name, kind, instance, token, reason, remote, at)
	SELECT e.lock_name, e.kind, e.instance, e.token, e.reason, e.remote, now()
	FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
		WITH ORDINALITY AS e(lock_name, kind, instance, token, reason, remote, ord)
	ORDER BY e.ord
	RETURNING id
)
DELETE FROM {{H}} WHERE id <= (SELECT max(id) FROM ins) - $7::bigint`),

		// $1 before ID, $2 limit.
		eventsAll: q(`SELECT id, lock_name, kind, instance, token, reason, remote, at
FROM {{H}} WHERE id < $1 ORDER BY id DESC LIMIT $2`),

		// $1 lock, $2 before ID, $3 limit.
		eventsLock: q(`SELECT id, lock_name, kind, instance, token, reason, remote, at
FROM {{H}} WHERE lock_name = $1 AND id < $2 ORDER BY id DESC LIMIT $3`),
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
		ttlUS                      int64
	)
	err := row.Scan(&st.Acquired, &st.Lock, &st.Holder, &st.HolderInfo, &st.Token,
		&acquired, &renewed, &expires, &ttlUS,
		&st.Revoked, &st.Disabled, &st.Reason, &st.ChangedBy, &changed)
	if err != nil {
		return st, err
	}
	st.AcquiredAt = timeOf(acquired)
	st.RenewedAt = timeOf(renewed)
	st.ExpiresAt = timeOf(expires)
	st.ChangedAt = timeOf(changed)
	st.TTL = time.Duration(ttlUS) * time.Microsecond
	return st, nil
}

func timeOf(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time
}
