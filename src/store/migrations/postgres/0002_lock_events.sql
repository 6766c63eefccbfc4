-- authzd store schema v2 (PostgreSQL): the edit-lock event log (SPEC §4.4:
-- every acquire, release and expiry is a change event, on every replica).
-- Each lock change writes its events in the same transaction as the change
-- to `authzd_locks`; replicas tail the log by `seq`.

-- The counter row of lock-event sequence numbers. A lock transaction takes
-- its row lock (UPDATE ... RETURNING) as the LAST lock it takes and holds it
-- until commit, so seq order is commit order and a tailer reading
-- `seq > cursor` never skips a row that commits late (a sequence/bigserial
-- would hand out numbers in allocation order, not commit order). Apart from
-- `authzd_meta`, so lock changes never wait for changelog appends.
CREATE TABLE authzd_lock_event_head (
    id  SMALLINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT   NOT NULL
);
INSERT INTO authzd_lock_event_head (id, seq) VALUES (1, 0);

-- One row per acquire, release or expiry (renewals are not events).
CREATE TABLE authzd_lock_events (
    seq           BIGINT PRIMARY KEY,
    tenant        TEXT   NOT NULL,
    object_key    TEXT   NOT NULL,
    holder        TEXT   NOT NULL,
    kind          TEXT   NOT NULL CHECK (kind IN ('acquired', 'released', 'expired')),
    since_ms      BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    at_ms         BIGINT NOT NULL
);
CREATE INDEX authzd_lock_events_at ON authzd_lock_events (at_ms);
