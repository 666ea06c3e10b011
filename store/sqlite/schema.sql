-- masterjob schema for SQLite.
--
-- {{prefix}} stands for the table prefix (default "masterjob_"; letters a-z,
-- digits and underscores, at most 40 characters). sqlite.Open applies this
-- file, with the prefix substituted, unless given WithoutMigrate; to apply it
-- yourself, substitute the prefix (or call sqlite.Schema) and run it once.
-- Every statement is idempotent.
--
-- Times (*_at) are integer milliseconds since the Unix epoch on the host's
-- wall clock, 0 meaning "not set". They are for display: lease expiry is
-- decided on CLOCK_BOOTTIME (the lease_clock table, version 4), except for
-- leases taken by a version older than 4.

-- One row per lock name: the current or most recent lease and the control.
CREATE TABLE IF NOT EXISTS "{{prefix}}locks" (
    lock_name   TEXT    NOT NULL PRIMARY KEY,      -- 1 to 200 bytes of UTF-8
    holder      TEXT    NOT NULL DEFAULT '',       -- '' when free
    holder_info TEXT    NOT NULL DEFAULT '',
    token       INTEGER NOT NULL DEFAULT 0,        -- fencing token of the current or last lease
    acquired_at INTEGER NOT NULL DEFAULT 0,
    renewed_at  INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER NOT NULL DEFAULT 0,
    revoked     INTEGER NOT NULL DEFAULT 0,        -- 1: lease revoked by disable
    disabled    INTEGER NOT NULL DEFAULT 0,        -- 1: nobody may acquire
    reason      TEXT    NOT NULL DEFAULT '',
    changed_by  TEXT    NOT NULL DEFAULT '',
    changed_at  INTEGER NOT NULL DEFAULT 0
);

-- Counters that are never deleted. 'token' is the last fencing token issued
-- for any lock: every acquisition takes the next one, so tokens keep growing
-- even when rows of the locks table are deleted.
CREATE TABLE IF NOT EXISTS "{{prefix}}meta" (
    name  TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
);

INSERT OR IGNORE INTO "{{prefix}}meta" (name, value) VALUES ('token', 0);
INSERT OR IGNORE INTO "{{prefix}}meta" (name, value) VALUES ('schema_version', 1);

-- Version 2: the audit history (store.History). Control changes and
-- mastership transitions, oldest pruned beyond the store's retention
-- (WithHistoryLimit). AUTOINCREMENT: ids keep growing even if every row is
-- deleted. at is the wall clock when the entry was appended.
CREATE TABLE IF NOT EXISTS "{{prefix}}history" (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    lock_name TEXT    NOT NULL,
    kind      TEXT    NOT NULL,                  -- disabled, enabled, acquired, released, lost, demoted
    instance  TEXT    NOT NULL DEFAULT '',
    token     INTEGER NOT NULL DEFAULT 0,
    reason    TEXT    NOT NULL DEFAULT '',
    remote    TEXT    NOT NULL DEFAULT '',
    at        INTEGER NOT NULL
);

-- The history of one lock, newest first.
CREATE INDEX IF NOT EXISTS "{{prefix}}history_lock" ON "{{prefix}}history" (lock_name, id);

UPDATE "{{prefix}}meta" SET value = 2 WHERE name = 'schema_version' AND value < 2;

-- Version 3: change notifications (store.Notifier). Release, Disable and
-- Enable append the lock's name in their transaction; subscribers poll for
-- ids above the last they read. Rows are pruned beyond the newest 1000.
-- kind is from version 5 (see there).
CREATE TABLE IF NOT EXISTS "{{prefix}}notify" (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    lock_name TEXT    NOT NULL,
    kind      TEXT    NOT NULL DEFAULT 'lease'
);

UPDATE "{{prefix}}meta" SET value = 3 WHERE name = 'schema_version' AND value < 3;

-- Version 4: lease expiry on the host's CLOCK_BOOTTIME, which every process
-- on the host shares, which never steps and which counts time suspended.
-- One row per lock, written with each acquisition and renewal. expires is
-- the lease's end in milliseconds on clock: 'boot:' followed by the boot id
-- (/proc/sys/kernel/random/boot_id; a lease from another boot has expired),
-- or 'wall' where the host has no CLOCK_BOOTTIME. It applies only while
-- lease_token equals the token in the locks table: a lease taken by an
-- older version of masterjob (which does not write this table) expires by
-- expires_at in the locks table, on the wall clock. The times in the locks
-- and history tables are wall-clock times, kept for display.
CREATE TABLE IF NOT EXISTS "{{prefix}}lease_clock" (
    lock_name   TEXT    NOT NULL PRIMARY KEY,
    lease_token INTEGER NOT NULL,
    clock       TEXT    NOT NULL,
    expires     INTEGER NOT NULL
);

-- A lock record deleted by hand takes its lease's expiry with it. To end a
-- lease by hand, delete the lock's row or set its holder to '' (the token
-- stays); changing expires_at no longer ends a lease taken by this version.
CREATE TRIGGER IF NOT EXISTS "{{prefix}}lease_clock_gone" AFTER DELETE ON "{{prefix}}locks"
BEGIN
    DELETE FROM "{{prefix}}lease_clock" WHERE lock_name = old.lock_name;
END;

UPDATE "{{prefix}}meta" SET value = 4 WHERE name = 'schema_version' AND value < 4;

-- Version 5: the cluster view (store.Handoffs, store.Membership, typed
-- notifications).
--
-- The kind of each notification (store.ChangeKind: lease, control,
-- history, member): acquisitions, history appends and members are now
-- notified too. A database made by an older version gets the column from
-- sqlite.Open, which runs, once, in the transaction that applies this file:
--     ALTER TABLE "{{prefix}}notify" ADD COLUMN kind TEXT NOT NULL DEFAULT 'lease';
-- (ALTER TABLE is not idempotent, so it is not a statement of this file;
-- the schema_version below stays at 4 until the column is there). Rows an
-- older version writes (releases, disables, enables) read as 'lease'.
--
-- Hand-offs: at most one row per lock. A request (Handoff) is about the
-- lease whose token is request_token: it is pending while that lease is
-- the lock's current, unexpired one. A reservation (a release naming a
-- successor) is about the released lease, reserved_token: it holds while
-- no new lease was taken and until reserved_expires on reserved_clock
-- (as lease_clock's expires; reserved_wall is the wall-clock expiry, used
-- as lease_clock uses expires_at). Acquisitions delete the row.
CREATE TABLE IF NOT EXISTS "{{prefix}}handoff" (
    lock_name        TEXT    NOT NULL PRIMARY KEY,
    request_token    INTEGER NOT NULL DEFAULT 0,   -- 0: no request
    request_to       TEXT    NOT NULL DEFAULT '',  -- '' for any other instance
    request_by       TEXT    NOT NULL DEFAULT '',  -- who asked (audit)
    reserved_for     TEXT    NOT NULL DEFAULT '',  -- '': no reservation
    reserved_token   INTEGER NOT NULL DEFAULT 0,
    reserved_clock   TEXT    NOT NULL DEFAULT '',
    reserved_expires INTEGER NOT NULL DEFAULT 0,
    reserved_wall    INTEGER NOT NULL DEFAULT 0
);

CREATE TRIGGER IF NOT EXISTS "{{prefix}}handoff_gone" AFTER DELETE ON "{{prefix}}locks"
BEGIN
    DELETE FROM "{{prefix}}handoff" WHERE lock_name = old.lock_name;
END;

-- Members: one row per live instance, written by its Acquire and Renew
-- calls, expiring at expires on clock (as lease_clock; wall_expires is the
-- wall-clock expiry) unless refreshed. seen_at is the wall clock of the
-- last write, for display. Expired rows are pruned by the next member
-- write. The locks an instance takes part in are stored once per lock set
-- (set_key, from the instance's LockSetID and lock count) in member_locks,
-- shared by every member with that set, written when the first member
-- with that set appears and deleted with the last one: a renewal with an
-- unchanged lock set writes one members row, whatever the set's size.
CREATE TABLE IF NOT EXISTS "{{prefix}}members" (
    member_id    TEXT    NOT NULL PRIMARY KEY,
    info         TEXT    NOT NULL DEFAULT '',
    lock_set_id  TEXT    NOT NULL DEFAULT '',
    set_key      TEXT    NOT NULL,
    lock_count   INTEGER NOT NULL DEFAULT 0,
    masters      INTEGER NOT NULL DEFAULT 0,
    weight       REAL    NOT NULL DEFAULT 0,
    seen_at      INTEGER NOT NULL,
    clock        TEXT    NOT NULL,
    expires      INTEGER NOT NULL,
    wall_expires INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS "{{prefix}}members_set" ON "{{prefix}}members" (set_key);

CREATE TABLE IF NOT EXISTS "{{prefix}}member_locks" (
    set_key   TEXT NOT NULL,
    lock_name TEXT NOT NULL,
    PRIMARY KEY (set_key, lock_name)
) WITHOUT ROWID;

-- The candidates of one lock (Members with a lock filter).
CREATE INDEX IF NOT EXISTS "{{prefix}}member_locks_lock" ON "{{prefix}}member_locks" (lock_name);

UPDATE "{{prefix}}meta" SET value = 5 WHERE name = 'schema_version' AND value < 5
    AND EXISTS (SELECT 1 FROM pragma_table_info('{{prefix}}notify') WHERE name = 'kind');
