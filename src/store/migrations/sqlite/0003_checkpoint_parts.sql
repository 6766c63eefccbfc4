-- authzd store schema v3 (SQLite): checkpoints written in parts.
-- A large tenant's checkpoint is megabytes of JSON. Written as one row, it
-- held SQLite's single write lock for tens of milliseconds, and every write
-- batch arriving meanwhile waited. Now its text is split into parts of at
-- most 256 KiB, each written in a transaction of its own, and the row in
-- `authzd_checkpoints` is switched to the new revision last, in one small
-- transaction: a reader sees the old checkpoint or the new one, whole.
-- `parts` = 0: the text is in `config` (rows written before v3);
-- `parts` = n > 0: `config` is empty and the text is parts 0..n-1 in order.
ALTER TABLE authzd_checkpoints ADD COLUMN parts INTEGER NOT NULL DEFAULT 0;

CREATE TABLE authzd_checkpoint_parts (
    tenant   TEXT    NOT NULL,
    revision INTEGER NOT NULL,
    part     INTEGER NOT NULL,
    data     TEXT    NOT NULL,
    PRIMARY KEY (tenant, revision, part)
);
