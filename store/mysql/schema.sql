-- masterjob MySQL/MariaDB schema, version 1.
--
-- This file is a template. masterjob applies it itself when a Store opens
-- (unless the store is opened with WithoutMigrate), on one connection that
-- holds GET_LOCK('masterjob migrate <database>.<prefix>'), so that many
-- processes can start at once.
--
-- It is a sequence of migrations, each starting with a line
-- "-- masterjob:version N" (N = 1, 2, 3, ...). The version a database has
-- reached is the row 'schema_version' of the table {{prefix}}meta. Open
-- applies, in order, the sections above the database's version and nothing
-- else. MySQL commits DDL as it goes (no transactional DDL), so every
-- statement is written to be safe to run again after a section failed half
-- way (CREATE TABLE IF NOT EXISTS, INSERT IGNORE); a later section that
-- alters a table must keep that property. Every section ends by recording
-- its version. A database at a version newer than this file is accepted:
-- migrations only add.
--
-- Supported servers: MySQL 8.0 and later, MariaDB 10.6 and later (the store
-- passes lock lists as JSON documents read with JSON_TABLE). Only MariaDB
-- 10.11 was tested.
--
-- To apply it yourself (WithoutMigrate):
--   1. Replace every {{prefix}} with the table prefix the application uses
--      (WithTablePrefix; default "masterjob_"). The prefix matches
--      [a-z0-9_]{0,40}, so it needs no further quoting.
--   2. Run the file in the application's database (to upgrade: the sections
--      above SELECT value FROM {{prefix}}meta WHERE name = 'schema_version'),
--      for example:
--          sed 's/{{prefix}}/masterjob_/g' schema.sql | mysql --database=app
--   3. Grant the application's user:
--          GRANT SELECT, INSERT, UPDATE ON app.masterjob_locks TO 'app'@'%';
--          GRANT SELECT, UPDATE ON app.masterjob_seq TO 'app'@'%';
--          GRANT SELECT, INSERT, DELETE ON app.masterjob_notify TO 'app'@'%';
--          GRANT SELECT, INSERT, DELETE ON app.masterjob_history TO 'app'@'%';
--          GRANT SELECT, INSERT, UPDATE, DELETE ON app.masterjob_members TO 'app'@'%';
--          GRANT SELECT, INSERT, DELETE ON app.masterjob_member_locks TO 'app'@'%';
--          GRANT SELECT ON app.masterjob_meta TO 'app'@'%';
--      (add DELETE on the locks table if operators clean up old rows through
--      the app's user). Open with WithoutMigrate refuses a database whose
--      version is older than this file's, naming the sections to apply.
--
-- Text is stored in binary columns (VARBINARY, BLOB): lock names compare
-- and sort byte for byte whatever the server's collations ("a" and "a " are
-- two locks), and every value comes back as it was written. The mysql
-- client of MySQL 8 shows binary columns in hex unless started with
-- --skip-binary-as-hex. Times are DATETIME(6) in UTC, written from
-- UTC_TIMESTAMP(6): the server's clock decides, whatever the session's
-- time zone.

-- masterjob:version 1

-- Sequences, never deleted or reset. Row 1: every fencing token and every
-- notification number is drawn from it, so tokens grow for every lock
-- across deleted rows and server restarts. Row 2: the ids of the history,
-- without gaps, so that pruning is a subtraction. A transaction that draws
-- from a row holds its lock until it commits, which also makes the numbers
-- commit in order.
CREATE TABLE IF NOT EXISTS `{{prefix}}seq` (
    id    TINYINT NOT NULL PRIMARY KEY,
    value BIGINT  NOT NULL
) ENGINE=InnoDB;

INSERT IGNORE INTO `{{prefix}}seq` (id, value) VALUES (1, 0), (2, 0);

-- One row per lock name: the current (or most recent) lease and the lock's
-- control. Keeping both in one row makes the check of the control atomic
-- with the take: an acquisition and a disable serialise on this row.
CREATE TABLE IF NOT EXISTS `{{prefix}}locks` (
    lock_name      VARBINARY(200) NOT NULL,

    -- Lease. holder is NULL when the lock is free (never taken, or
    -- released); a lease with expires_at <= UTC_TIMESTAMP(6) has expired
    -- even if holder is set.
    holder         VARBINARY(255) NULL,
    holder_info    BLOB           NULL,
    -- Token of the current or most recent lease; 0 if never acquired.
    token          BIGINT         NOT NULL DEFAULT 0,
    acquired_at    DATETIME(6)    NULL,
    renewed_at     DATETIME(6)    NULL,
    expires_at     DATETIME(6)    NULL,
    -- Set by a disable while the lease was held: the holder must stop its
    -- job and release; nobody else may acquire until then.
    revoked        BOOLEAN        NOT NULL DEFAULT FALSE,

    -- The lease before the current one, written by the acquisition:
    -- prev_expired says it expired (a takeover) rather than was released.
    prev_holder    VARBINARY(255) NULL,
    prev_token     BIGINT         NOT NULL DEFAULT 0,
    prev_expired   BOOLEAN        NOT NULL DEFAULT FALSE,

    -- Hand-off: an operator's pending request to move the current lease
    -- (handoff_to '' for any other instance), and after a release to a
    -- successor, the reservation that keeps the lock for it.
    handoff        BOOLEAN        NOT NULL DEFAULT FALSE,
    handoff_to     VARBINARY(255) NOT NULL DEFAULT '',
    reserved_for   VARBINARY(255) NULL,
    reserved_until DATETIME(6)    NULL,

    -- Control.
    disabled       BOOLEAN        NOT NULL DEFAULT FALSE,
    reason         BLOB           NULL,
    changed_by     BLOB           NULL,
    changed_at     DATETIME(6)    NULL,

    PRIMARY KEY (lock_name)
) ENGINE=InnoDB;

-- Notifications (store.Notifier): one row per change, numbered from the
-- sequence in the transaction that makes the change. Subscribers poll
-- "ver > last seen" on the primary key. Writers prune rows far behind.
CREATE TABLE IF NOT EXISTS `{{prefix}}notify` (
    ver       BIGINT         NOT NULL PRIMARY KEY,
    -- lease, control, history or member
    kind      VARCHAR(16)    CHARACTER SET ascii NOT NULL,
    lock_name VARBINARY(200) NOT NULL,
    at        DATETIME(6)    NOT NULL
) ENGINE=InnoDB;

-- The audit history (store.History): control changes and mastership
-- transitions. Ids come from row 2 of the sequence table. Each append
-- prunes the entries beyond the store's retention (WithHistoryLimit) with
-- one range delete on the primary key.
CREATE TABLE IF NOT EXISTS `{{prefix}}history` (
    id        BIGINT         NOT NULL PRIMARY KEY,
    lock_name VARBINARY(200) NOT NULL,
    kind      BLOB           NOT NULL,
    instance  BLOB           NOT NULL,
    token     BIGINT         NOT NULL DEFAULT 0,
    reason    BLOB           NOT NULL,
    remote    BLOB           NOT NULL,
    -- UTC_TIMESTAMP(6) when the entry was appended.
    at        DATETIME(6)    NOT NULL,
    -- The history of one lock, newest first.
    KEY `{{prefix}}history_lock` (lock_name, id)
) ENGINE=InnoDB;

-- Members (store.Membership): one row per live instance, written in the
-- transactions of its acquisitions and renewals. A row whose expires_at has
-- passed is ignored, and deleted some time later.
CREATE TABLE IF NOT EXISTS `{{prefix}}members` (
    id          VARBINARY(255) NOT NULL PRIMARY KEY,
    info        BLOB           NULL,
    -- Identifies the lock list in member_locks; '' until one was written.
    lock_set_id VARBINARY(255) NOT NULL DEFAULT '',
    lock_count  INT            NOT NULL DEFAULT 0,
    masters     INT            NOT NULL DEFAULT 0,
    weight      DOUBLE         NOT NULL DEFAULT 1,
    seen_at     DATETIME(6)    NULL,
    expires_at  DATETIME(6)    NULL
) ENGINE=InnoDB;

-- The locks each member takes part in, rewritten only when its lock set
-- changes.
CREATE TABLE IF NOT EXISTS `{{prefix}}member_locks` (
    lock_name VARBINARY(200) NOT NULL,
    member_id VARBINARY(255) NOT NULL,
    PRIMARY KEY (lock_name, member_id),
    KEY `{{prefix}}member_locks_member` (member_id)
) ENGINE=InnoDB;

-- The schema's version, so that later migrations run once each. A later
-- section ends with the same statement and its own number.
CREATE TABLE IF NOT EXISTS `{{prefix}}meta` (
    name  VARCHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    value BIGINT      NOT NULL
) ENGINE=InnoDB;

INSERT INTO `{{prefix}}meta` (name, value) VALUES ('schema_version', 1)
    ON DUPLICATE KEY UPDATE value = GREATEST(value, 1);
