-- Auto-indexes (docs/OPERATIONS.md "Auto-indexes"): which payload fields analysts filter and sort by,
-- and the fields the maintenance gave an expression index for that reason.

-- Uses per topic, field and hour, as the stats-api counts them (equality, `_in`, ranges, sort keys on
-- payload fields the topic did not declare indexed). Each stats-api adds its counts every
-- `stats.field_usage_flush_ms`; the maintenance deletes the hours older than `storage.auto_index_window`.
CREATE TABLE field_usage (
    topic text        NOT NULL,
    -- The field's canonical name in the query language (`tenant_id`, `additional_info.region`).
    field text        NOT NULL,
    -- The hour's start (UTC).
    hour  timestamptz NOT NULL,
    uses  bigint      NOT NULL CHECK (uses > 0),
    PRIMARY KEY (topic, field, hour)
);

-- The fields the maintenance chose (at most `storage.auto_index_max_per_topic` per topic). Their index
-- is the one a declared field gets (`<leaf>_f<hash of the expression>`), so declaring the field later
-- keeps it. The stats-api compares the indexed expression for the fields whose indexes are ready.
CREATE TABLE auto_indexed_fields (
    topic     text        NOT NULL,
    field     text        NOT NULL,
    chosen_at timestamptz NOT NULL,
    -- When a run had built its index on every partition of the topic; NULL until then.
    ready_at  timestamptz,
    -- The last hour it was used in: dropped once that is a whole window ago.
    last_used timestamptz NOT NULL,
    PRIMARY KEY (topic, field)
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_read') THEN
        CREATE ROLE eventgate_read NOLOGIN;
    END IF;
END
$$;
-- The stats-api's one write: adding its counts (an upsert, which reads `uses` of the row it adds to:
-- SELECT on that table). Nothing else of the stats role writes; the maintenance (the owner) prunes.
GRANT SELECT, INSERT, UPDATE ON field_usage TO eventgate_read;
REVOKE DELETE, TRUNCATE, REFERENCES, TRIGGER ON field_usage FROM eventgate_read;
GRANT SELECT ON auto_indexed_fields TO eventgate_read;
