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

-- Messages that can never be written (undecodable, rejected by a constraint). They are parked here with
-- everything needed to inspect or replay them, so they never block their partition. The unique
-- (kafka_topic, kafka_partition, kafka_offset) makes a redelivered poison message park once.
CREATE TABLE dead_letters (
    id              bigserial   PRIMARY KEY,
    topic           text,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    raw             bytea,
    error           text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX dead_letters_topic_created_at_id ON dead_letters (topic, created_at, id);
GRANT SELECT ON dead_letters TO eventgate_read;
