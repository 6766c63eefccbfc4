-- authzd store schema v1 (PostgreSQL). Applied once, inside the open
-- transaction, under an advisory lock so that replicas starting together
-- do not race. Times are milliseconds since the Unix epoch; `mutations` and
-- `config` are JSON text (kept byte-exact, decoded by the sidecar only).

-- The single counter row. Appends take its row lock (SELECT ... FOR UPDATE)
-- and hold it until commit, so revision order is commit order.
CREATE TABLE authzd_meta (
    id              SMALLINT PRIMARY KEY CHECK (id = 1),
    head            BIGINT   NOT NULL,
    oldest_retained BIGINT   NOT NULL
);
INSERT INTO authzd_meta (id, head, oldest_retained) VALUES (1, 0, 0);

-- One row per accepted write batch.
CREATE TABLE authzd_changelog (
    revision        BIGINT PRIMARY KEY,
    tenant          TEXT   NOT NULL,
    mutations       TEXT   NOT NULL,
    actor           TEXT,
    committed_at_ms BIGINT NOT NULL
);
CREATE INDEX authzd_changelog_tenant ON authzd_changelog (tenant, revision);

-- The latest checkpoint of each tenant: its tenant file as JSON.
CREATE TABLE authzd_checkpoints (
    tenant        TEXT   PRIMARY KEY,
    revision      BIGINT NOT NULL,
    config        TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Designer edit locks (SPEC §4.4), shared by every replica.
CREATE TABLE authzd_locks (
    tenant          TEXT   NOT NULL,
    object_key      TEXT   NOT NULL,
    holder          TEXT   NOT NULL,
    token           TEXT   NOT NULL UNIQUE,
    since_ms        BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    idle_timeout_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, object_key)
);
CREATE INDEX authzd_locks_expiry ON authzd_locks (expires_at_ms);
