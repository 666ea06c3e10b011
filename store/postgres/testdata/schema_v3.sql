-- masterjob PostgreSQL schema, version 3.
--
-- This file is a template. masterjob applies it itself when a Store opens
-- (unless the store is opened with WithoutMigrate), inside a transaction that
-- holds a pg_advisory_xact_lock, so that many processes can start at once.
--
-- It is a sequence of migrations, each starting with a line
-- "-- masterjob:version N" (N = 1, 2, 3, ...). The version a database has
-- reached is the row 'schema_version' of the table {{prefix}}meta (version 3
-- created it; a database without it was made by versions 1 or 2, which the
-- store tells apart by the tables that exist). Open applies, in order, the
-- sections above the database's version and nothing else, so a section may
-- hold statements that cannot run twice (ALTER TABLE ... ADD COLUMN). Every
-- section from version 3 on ends by recording its version. A database at a
-- version newer than this file is accepted: migrations only add.
--
-- To apply it yourself (WithoutMigrate):
--   1. Replace every {{prefix}} with the table prefix the application uses
--      (WithTablePrefix; default "masterjob_"). The prefix matches
--      [a-z0-9_]{0,40}, so it needs no further quoting.
--   2. Create the schema if you use one (WithSchema) and put it first on the
--      search_path for the session that runs this file, for example:
--          CREATE SCHEMA IF NOT EXISTS myschema;
--          SET search_path TO myschema;
--      Objects are created in the first schema of the search_path.
--   3. Run the file (on a new database), or the sections above the version
--      the database has reached (to upgrade: SELECT value FROM
--      {{prefix}}meta WHERE name = 'schema_version', or 2 if that table
--      does not exist), in one transaction, for example:
--          sed 's/{{prefix}}/masterjob_/g' schema.sql | psql -1 -v ON_ERROR_STOP=1 "$DSN"
--   4. Grant the application's role:
--          GRANT USAGE ON SCHEMA myschema TO app;
--          GRANT SELECT, INSERT, UPDATE ON myschema.masterjob_locks TO app;
--          GRANT USAGE ON SEQUENCE myschema.masterjob_token_seq TO app;
--          GRANT SELECT, INSERT, DELETE ON myschema.masterjob_history TO app;
--          GRANT SELECT ON myschema.masterjob_meta TO app;
--      (add DELETE on the locks table if operators clean up old rows through the app's role).
--      Open with WithoutMigrate refuses a database whose version is older
--      than this file's, naming the sections to apply.

-- masterjob:version 1
-- (Versions 1 and 2 predate the version table: their statements are
-- idempotent, so that a database with only some of their objects is
-- completed.)

-- Fencing tokens. One sequence for all locks: a new lease takes nextval, so
-- tokens grow strictly for every lock, across deleted rows and server
-- restarts. Never drop or reset it.
CREATE SEQUENCE IF NOT EXISTS "{{prefix}}token_seq" AS bigint;

-- One row per lock name: the current (or most recent) lease and the lock's
-- control. Keeping both in one row makes the check of the control atomic
-- with the take: an acquisition and a disable serialise on this row.
CREATE TABLE IF NOT EXISTS "{{prefix}}locks" (
    -- "C" collation: byte order, the order Go and the other backends use.
    lock_name   text COLLATE "C" PRIMARY KEY,

    -- Lease. holder is NULL when the lock is free (never taken, or released);
    -- a lease with expires_at <= now() has expired even if holder is set.
    holder      text,
    holder_info text        NOT NULL DEFAULT '',
    -- Token of the current or most recent lease; 0 if never acquired.
    token       bigint      NOT NULL DEFAULT nextval('"{{prefix}}token_seq"'),
    acquired_at timestamptz,
    renewed_at  timestamptz,
    expires_at  timestamptz,
    -- Set by a disable while the lease was held: the holder must stop its job
    -- and release; nobody else may acquire until then.
    revoked     boolean     NOT NULL DEFAULT false,

    -- Control.
    disabled    boolean     NOT NULL DEFAULT false,
    reason      text        NOT NULL DEFAULT '',
    changed_by  text        NOT NULL DEFAULT '',
    changed_at  timestamptz
);

COMMENT ON TABLE "{{prefix}}locks" IS 'masterjob leases and controls, schema version 1';

-- masterjob:version 2
-- The audit history (store.History): control changes and
-- mastership transitions. Each append prunes the entries beyond the store's
-- retention (WithHistoryLimit) with one range delete on the primary key. An
-- identity column needs no grant on its sequence.
CREATE TABLE IF NOT EXISTS "{{prefix}}history" (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lock_name text        COLLATE "C" NOT NULL,
    -- disabled, enabled, acquired, released, lost, demoted
    kind      text        NOT NULL,
    instance  text        NOT NULL DEFAULT '',
    token     bigint      NOT NULL DEFAULT 0,
    reason    text        NOT NULL DEFAULT '',
    remote    text        NOT NULL DEFAULT '',
    -- The server's now() when the entry was appended.
    at        timestamptz NOT NULL DEFAULT now()
);

-- The history of one lock, newest first.
CREATE INDEX IF NOT EXISTS "{{prefix}}history_lock" ON "{{prefix}}history" (lock_name, id);

COMMENT ON TABLE "{{prefix}}history" IS 'masterjob audit history, schema version 2';

-- masterjob:version 3
-- The schema's version, so that later migrations run once each (and only
-- those a database has not had). A later section ends with the same
-- statement and its own number.
CREATE TABLE IF NOT EXISTS "{{prefix}}meta" (
    name  text   COLLATE "C" PRIMARY KEY,
    value bigint NOT NULL
);

INSERT INTO "{{prefix}}meta" AS m (name, value) VALUES ('schema_version', 3)
    ON CONFLICT (name) DO UPDATE SET value = greatest(m.value, EXCLUDED.value);
