-- Rollups: how many events each topic stored per minute of `received_at`, kept exact by the writers
-- (ARCHITECTURE.md "Rollups"). The explorer's chart — events per minute, hour, day… over a topic's
-- whole history — is then a sum over a few thousand rows instead of a scan of millions of events
-- (crates/stats-api/src/db/aggregate_sql.rs answers such aggregates from here).
--
-- Exact because each batch adds its rows here in the same transaction as its events, counting only the
-- events it actually inserted: a crash rolls both back, a redelivered or retried event that is skipped
-- is not counted, and a partition dropped by retention takes its minutes with it in the same
-- transaction (crates/core/src/db/rollups.rs).
--
-- Append-only: a batch adds one row per topic and minute it touched, tagged with its transaction id,
-- never updates one. Two writers storing the same minute would otherwise queue on one row until each
-- other's commit. The maintenance folds a minute's rows into one now and then; the count is always
-- the sum of a minute's rows.
CREATE TABLE event_counts (
    topic   text        NOT NULL,
    -- The minute's start (UTC), `date_trunc('minute', received_at, 'UTC')`.
    minute  timestamptz NOT NULL,
    -- `pg_current_xact_id()` of the transaction that added the row: a batch's, or a compaction's.
    xact_id bigint      NOT NULL,
    events  bigint      NOT NULL CHECK (events > 0),
    PRIMARY KEY (topic, minute, xact_id)
);

-- The history stored before this migration.
INSERT INTO event_counts (topic, minute, xact_id, events)
SELECT topic, date_trunc('minute', received_at, 'UTC'), pg_current_xact_id()::text::bigint, count(*)
FROM events GROUP BY 1, 2;

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
-- The writers only add rows; the maintenance (the owner) folds and deletes them.
GRANT SELECT, INSERT ON event_counts TO eventgate_write;
GRANT SELECT ON event_counts TO eventgate_read;
