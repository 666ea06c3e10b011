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
CREATE TABLE IF NOT EXISTS "{{prefix}}notify" (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    lock_name TEXT    NOT NULL
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
