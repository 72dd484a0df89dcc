-- Back to one plain table: every partition's rows are copied into it (a rewrite of the history, unlike
-- the way up), then the partitioned table is dropped.
ALTER TABLE events RENAME TO events_partitioned;
CREATE TABLE events (
    id             uuid        NOT NULL,
    topic          text        NOT NULL,
    received_at    timestamptz NOT NULL,
    producer       text        NOT NULL,
    payload        jsonb       NOT NULL,
    schema_version smallint    NOT NULL DEFAULT 1 CHECK (schema_version >= 1),
    CONSTRAINT events_pkey PRIMARY KEY (id, topic, producer)
);
INSERT INTO events SELECT id, topic, received_at, producer, payload, schema_version
FROM events_partitioned ORDER BY received_at ON CONFLICT DO NOTHING;
DROP TABLE events_partitioned;
CREATE INDEX events_topic_received_at_id ON events (topic, received_at, id);
CREATE INDEX events_payload_path_ops ON events USING gin (payload jsonb_path_ops);
GRANT SELECT ON events TO eventgate_read;
GRANT SELECT, INSERT ON events TO eventgate_write;
