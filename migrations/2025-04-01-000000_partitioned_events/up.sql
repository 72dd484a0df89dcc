-- The event history becomes a partitioned table (ARCHITECTURE.md "The event history's layout"):
--
--   events                               PARTITION BY RANGE (received_at)
--   ├── events_legacy                    the table as it was, attached as it is: FROM (MINVALUE) TO (B)
--   │                                    (on a new database, the empty events_before in its place)
--   ├── events_p20261203                 one span of time (a day by default) PARTITION BY LIST (topic)
--   │   ├── events_p20261203_web_events_1a2b3c   one topic's events of that day
--   │   └── events_p20261203_default     that day's events of topics without a partition yet
--   └── events_after                     FROM (the end of the last span) TO (MAXVALUE): events received
--                                        beyond the spans made ahead; the maintenance splits spans off it
--
-- The ranges tile all of time, so an insert always finds a partition; there is no DEFAULT partition,
-- which would keep Postgres from reading the spans in time order (a newest-first page would open every
-- partition instead of stopping in the newest).
--
-- Time first, topic second: a history from before this migration is one range of time, so it is attached
-- as one partition without being rewritten (a LIST by topic first could not take a table that holds every
-- topic); every later day is split by topic, so a topic's retention drops its own partitions (never a
-- DELETE over the history), and a topic's GIN and field indexes are built on its partitions only.
-- `eventgate maintain` (and the writers, every few minutes) creates the spans ahead, moves what reached a
-- default partition into its own, drops expired partitions and builds the per-topic indexes
-- (crates/core/src/db/partitions.rs).
--
-- No unique key on `events` itself: Postgres requires one to include the partition key (received_at),
-- and an HTTP retry has a new received_at. Each leaf keeps a unique (id, topic, producer) index instead
-- (`<leaf>_key`): a Kafka redelivery (same received_at, so the same leaf) is refused by it as before, and
-- the writer looks up an event's key in the leaves of its idempotency window before inserting
-- (`storage.idempotency_window_ms`, README "What a 202 guarantees").
--
-- Upgrade in place. The old table is renamed `events_legacy` and attached as the range below B, the start
-- of the first span after the migration (tomorrow, 00:00 UTC) — or the bound of a CHECK constraint
-- `events_legacy_bound (received_at < B)` validated beforehand. Attaching needs proof that every row is
-- below B: with that constraint validated beforehand (a scan that does not block the writers:
--   ALTER TABLE events ADD CONSTRAINT events_legacy_bound CHECK (received_at < '2026-12-10') NOT VALID;
--   ALTER TABLE events VALIDATE CONSTRAINT events_legacy_bound;
-- B a few days ahead) the migration takes moments on any size of history; without it, one scan of the
-- table while the writers are stopped (docs/OPERATIONS.md "Upgrading to partitioned events").
-- An empty old table is dropped instead, and `events_before` (empty) takes the range below today. Its indexes stay where they are: the (topic, received_at, id)
-- index becomes the legacy partition's share of the new one, its primary key its `_key`, its GIN and field
-- indexes go on serving its rows.
DO $$
DECLARE
    bound timestamptz;
    definition text;
    renamed record;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'events'::regclass) = 'p' THEN
        RETURN;
    END IF;

    ALTER TABLE events RENAME TO events_legacy;
    ALTER TABLE events_legacy RENAME CONSTRAINT events_pkey TO events_legacy_key;
    ALTER INDEX events_topic_received_at_id RENAME TO events_legacy_topic_received_at_id;
    ALTER INDEX events_payload_path_ops RENAME TO events_legacy_gin;
    -- Field indexes (`events_field_<hash>`, built by `eventgate migrate` and the writers) keep their hash.
    FOR renamed IN
        SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'events_legacy'::regclass AND c.relname LIKE 'events\_field\_%'
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', renamed.relname,
                       'events_legacy_f' || substr(renamed.relname, length('events_field_') + 1));
    END LOOP;

    CREATE TABLE events (
        id             uuid        NOT NULL,
        topic          text        NOT NULL,
        received_at    timestamptz NOT NULL,
        producer       text        NOT NULL,
        payload        jsonb       NOT NULL,
        schema_version smallint    NOT NULL DEFAULT 1,
        CONSTRAINT events_schema_version_check CHECK (schema_version >= 1)
    ) PARTITION BY RANGE (received_at);
    -- Serves the default order (newest first) and keyset pagination within one topic, in every partition.
    CREATE INDEX events_topic_received_at_id ON events (topic, received_at, id);

    IF NOT EXISTS (SELECT FROM events_legacy) THEN
        DROP TABLE events_legacy;
        bound := date_trunc('day', now(), 'UTC');
        EXECUTE format('CREATE TABLE events_before PARTITION OF events FOR VALUES FROM (MINVALUE) TO (%L)',
                       bound);
        CREATE UNIQUE INDEX events_before_key ON events_before (id, topic, producer);
    ELSE
        SELECT pg_get_constraintdef(oid) INTO definition FROM pg_constraint
        WHERE conrelid = 'events_legacy'::regclass AND conname = 'events_legacy_bound' AND convalidated;
        IF definition IS NOT NULL THEN
            bound := (regexp_match(definition, $re$received_at < '([^']+)'$re$))[1]::timestamptz;
            IF bound IS NULL THEN
                RAISE EXCEPTION 'events_legacy_bound must read CHECK (received_at < ''<timestamp>''), not %', definition;
            END IF;
        ELSE
            -- Tomorrow, 00:00 UTC, or after the newest row if one lies beyond.
            bound := date_trunc('day', greatest(now(), (SELECT max(received_at) FROM events_legacy)), 'UTC')
                     + interval '1 day';
        END IF;
        EXECUTE format('ALTER TABLE events ATTACH PARTITION events_legacy FOR VALUES FROM (MINVALUE) TO (%L)',
                       bound);
    END IF;
    -- Everything after: the first maintenance (`eventgate migrate` runs one) splits the spans off it.
    EXECUTE format('CREATE TABLE events_after PARTITION OF events FOR VALUES FROM (%L) TO (MAXVALUE)', bound);
    CREATE UNIQUE INDEX events_after_key ON events_after (id, topic, producer);

    -- Rights are checked on the partitioned table only (its partitions are reached through it).
    GRANT SELECT ON events TO eventgate_read;
    GRANT SELECT, INSERT ON events TO eventgate_write;
END
$$;
