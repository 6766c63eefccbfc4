-- authzd store schema v1 (SQLite). Applied once, inside the open transaction.
-- Times are milliseconds since the Unix epoch; `mutations` and `config` are JSON text.

-- The single counter row: the head revision and the compaction boundary.
-- Kept apart from the changelog so that compaction never loses the head.
CREATE TABLE authzd_meta (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    head            INTEGER NOT NULL,
    oldest_retained INTEGER NOT NULL
);
INSERT INTO authzd_meta (id, head, oldest_retained) VALUES (1, 0, 0);

-- One row per accepted write batch.
CREATE TABLE authzd_changelog (
    revision        INTEGER PRIMARY KEY,
    tenant          TEXT    NOT NULL,
    mutations       TEXT    NOT NULL,
    actor           TEXT,
    committed_at_ms INTEGER NOT NULL
);
CREATE INDEX authzd_changelog_tenant ON authzd_changelog (tenant, revision);

-- The latest checkpoint of each tenant: its tenant file as JSON.
CREATE TABLE authzd_checkpoints (
    tenant        TEXT    PRIMARY KEY,
    revision      INTEGER NOT NULL,
    config        TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- Designer edit locks (SPEC §4.4): at most one holder per object.
CREATE TABLE authzd_locks (
    tenant          TEXT    NOT NULL,
    object_key      TEXT    NOT NULL,
    holder          TEXT    NOT NULL,
    token           TEXT    NOT NULL UNIQUE,
    since_ms        INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    idle_timeout_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, object_key)
);
CREATE INDEX authzd_locks_expiry ON authzd_locks (expires_at_ms);
