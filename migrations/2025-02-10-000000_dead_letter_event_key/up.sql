-- The event a dead letter was, when the writer could decode it: its id and producer, so a producer can
-- ask the stats-api what became of an event it sent (`GET /stats/{topic}/events/{id}/status`) without
-- anyone parsing raw messages. NULL for messages that are no event (`undecodable`) and for envelopes
-- read from another topic's Kafka topic (`topic_mismatch`: not this topic's event).
ALTER TABLE dead_letters ADD COLUMN event_id uuid, ADD COLUMN producer text;

-- The status question is (topic, event id, producer); only dead letters of events are indexed.
CREATE INDEX dead_letters_topic_event_id_producer ON dead_letters (topic, event_id, producer)
    WHERE event_id IS NOT NULL;

-- Rows parked before: the envelope's id and producer read from the raw message where it is one (refused
-- and conflicting duplicates always are). A row whose bytes do not parse is left without them: one bad
-- row must not fail the migration.
DO $$
DECLARE
    parked record;
    envelope jsonb;
BEGIN
    FOR parked IN
        SELECT id, raw FROM dead_letters
        WHERE reason IN ('refused', 'conflicting_duplicate') AND raw IS NOT NULL
    LOOP
        BEGIN
            -- A payload refused for a NUL (`\u0000`, which no JSON function of Postgres takes) is
            -- read without it: only the envelope's id and producer are wanted.
            envelope := replace(convert_from(parked.raw, 'UTF8'), '\u0000', '')::jsonb;
            UPDATE dead_letters
            SET event_id = (envelope->>'id')::uuid, producer = envelope->>'producer'
            WHERE id = parked.id;
        -- Bytes that are not UTF-8, not JSON, or an id that is not a UUID (class 22, data exceptions).
        EXCEPTION WHEN data_exception THEN
            NULL;
        END;
    END LOOP;
END
$$;
-- Grants are per table: eventgate_write keeps INSERT/SELECT, eventgate_read SELECT (new columns included).
