-- Idempotency scoped to who sent an event: an event id is unique per (topic, producer), no longer
-- across the whole history. Before, `id` alone was the primary key and the writer skipped a stored id
-- (`ON CONFLICT (id) DO NOTHING`): any producer allowed to write any topic could store id V first and
-- so silently drop every later event with id V — another producer's, on another topic — and learn
-- whether an id existed in a topic it cannot read.
--
-- The key is the composite (id, topic, producer), not a single id derived from the three (a hash):
-- - exact: no hash, nothing to keep in step between the writer and SQL, and every tool that inserts
--   rows (tests, the benchmark, an operator's script) gets the rule without computing anything;
-- - `id` keeps meaning what it always meant, the id the producer sent or got back in its 202, so the
--   stats-api, exports and analysts' SQL select and filter it unchanged, and the key's leading column
--   still serves lookups by id (`id = …`, `id_in`), as the old primary key did;
-- - UUIDv7 ids (minted at ingest) keep the index append-mostly, as before;
-- - it contains `topic` and `id`, so a later partitioning by topic (LIST) or by the UUIDv7 id's time
--   (RANGE on id) keeps it as the partitioned table's unique key.
-- Its cost is a wider index (the topic and producer text in every entry); inserts measured within
-- noise of the single-column key. Keyset pagination is unchanged: it orders by
-- (topic, received_at, id) on the existing btree (the cursor's tie-breaker is `id`, so two producers'
-- events with the same id, topic and microsecond are not told apart by a cursor stopping between them).
--
-- Not backward compatible with writers of an older release: their `ON CONFLICT (id)` names a key that
-- is gone, so a replayed batch of theirs fails (42P10) and is retried, uncommitted, until they are
-- replaced. Nothing is lost (docs/OPERATIONS.md, Migrations).
--
-- Existing rows carry over as they are: ids were unique, so they are unique per (topic, producer) too.
-- The new unique index is built before the old key is dropped. On a large history, build it beforehand
-- without blocking the writers and this migration takes it as it is:
--   CREATE UNIQUE INDEX CONCURRENTLY events_id_topic_producer ON events (id, topic, producer);
DO $$
BEGIN
    IF to_regclass('events_id_topic_producer') IS NULL THEN
        CREATE UNIQUE INDEX events_id_topic_producer ON events (id, topic, producer);
    END IF;
END
$$;
ALTER TABLE events
    DROP CONSTRAINT events_pkey,
    ADD CONSTRAINT events_pkey PRIMARY KEY USING INDEX events_id_topic_producer;

-- Why a message is a dead letter, as a word a listing can filter by: `undecodable` (not an event
-- envelope), `topic_mismatch` (an envelope naming another topic than the Kafka topic it was read from),
-- `refused` (the database refused the event) or `conflicting_duplicate` (the producer re-sent an id it
-- used before on the topic with a different payload; the first payload stays stored). `error` keeps the
-- full text. Rows parked before are classified by their error text.
ALTER TABLE dead_letters ADD COLUMN reason text NOT NULL DEFAULT 'undecodable';
UPDATE dead_letters SET reason = CASE
    WHEN error LIKE 'topic\_mismatch%' THEN 'topic_mismatch'
    WHEN error LIKE 'database refused%' THEN 'refused'
    ELSE 'undecodable'
END;
-- The writer always says why.
ALTER TABLE dead_letters ALTER COLUMN reason DROP DEFAULT;
-- Grants are per table, unchanged by ALTER TABLE: eventgate_write keeps INSERT/SELECT on both tables,
-- eventgate_read SELECT (the new column included).
