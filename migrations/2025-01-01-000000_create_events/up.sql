-- The event history. One row per accepted event; the id is the idempotency key, so a message the writer
-- sees twice (redelivery after a crash, a producer retry with the same event_id) is stored once.
CREATE TABLE events (
    id          uuid        PRIMARY KEY,
    topic       text        NOT NULL,
    received_at timestamptz NOT NULL,
    producer    text        NOT NULL,
    payload     jsonb       NOT NULL
);

-- Serves the default order (newest first) and keyset pagination over it within one topic.
CREATE INDEX events_topic_received_at_id ON events (topic, received_at, id);

-- Serves equality and containment filters on payload fields (payload @> '{"field": value}').
-- jsonb_path_ops: smaller and faster than the default opclass for @>, which is the only operator we use.
CREATE INDEX events_payload_path_ops ON events USING gin (payload jsonb_path_ops);

-- The stats-api connects as a login role that is a member of eventgate_read: it can only SELECT.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_read') THEN
        CREATE ROLE eventgate_read NOLOGIN;
    END IF;
END
$$;
GRANT SELECT ON events TO eventgate_read;
