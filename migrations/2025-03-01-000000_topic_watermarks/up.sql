-- How current the stored history is, and where a live tail stands. Both are written by the writer in
-- the transaction of each batch, with one statement (the batch's topics, not its rows), so they commit
-- exactly with the events they describe.

-- One row per topic: the newest `received_at` stored so far and when the last batch of the topic was
-- stored. Every stats answer reports it (`Eventgate-Freshness`), so an analyst can tell "no events"
-- from "events not stored yet". Upserted in topic order, so two writers never deadlock on it.
CREATE TABLE topic_watermarks (
    topic           text        PRIMARY KEY,
    newest_event_at timestamptz NOT NULL,
    stored_at       timestamptz NOT NULL
);

-- One row per (batch transaction, topic): the commit log a live tail reads. Rows become visible in
-- commit order, not in `received_at` order (two writers commit concurrently, an event waits in Kafka
-- for as long as its writer is down), so a tail cannot follow `received_at`. It follows transactions
-- instead: `xact_id` is the batch transaction's id (`pg_current_xact_id()`, which is also the `xmin` of
-- the batch's rows), and a tail remembers the snapshot it last read (`pg_current_snapshot()`): what a
-- newer snapshot sees and the remembered one did not is exactly what was committed in between
-- (`pg_visible_in_snapshot`), whatever the order of the ids (PgQ's technique). The received-at range
-- finds the batch's rows on the (topic, received_at, id) index; `xmin` picks them out of it.
-- The writers delete rows older than `writer.commit_log_retention_ms`.
CREATE TABLE event_commits (
    topic              text        NOT NULL,
    xact_id            bigint      NOT NULL,
    oldest_received_at timestamptz NOT NULL,
    newest_received_at timestamptz NOT NULL,
    events             integer     NOT NULL,
    committed_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (topic, xact_id)
);
CREATE INDEX event_commits_committed_at ON event_commits (committed_at);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_write') THEN
        CREATE ROLE eventgate_write NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_read') THEN
        CREATE ROLE eventgate_read NOLOGIN;
    END IF;
END
$$;
GRANT SELECT, INSERT, UPDATE ON topic_watermarks TO eventgate_write;
-- DELETE: the writers prune the commit log; nothing updates it.
GRANT SELECT, INSERT, DELETE ON event_commits TO eventgate_write;
GRANT SELECT ON topic_watermarks, event_commits TO eventgate_read;
