-- authzd store schema v2 (SQLite): the edit-lock event log (SPEC §4.4: every
-- acquire, release and expiry is a change event, on every replica).
-- Each lock change writes its events in the same transaction as the change
-- to `authzd_locks`; replicas tail the log by `seq`.

-- The counter row of lock-event sequence numbers. Kept apart from the log so
-- that pruning old events never loses the head. Every lock transaction runs
-- under `BEGIN IMMEDIATE` (one writer at a time), so seq order is commit order.
CREATE TABLE authzd_lock_event_head (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO authzd_lock_event_head (id, seq) VALUES (1, 0);

-- One row per acquire, release or expiry (renewals are not events).
CREATE TABLE authzd_lock_events (
    seq           INTEGER PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    object_key    TEXT    NOT NULL,
    holder        TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('acquired', 'released', 'expired')),
    since_ms      INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    at_ms         INTEGER NOT NULL
);
CREATE INDEX authzd_lock_events_at ON authzd_lock_events (at_ms);
