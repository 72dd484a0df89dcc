-- The version of the topic's schema each event was validated against (docs/API.md "Schema versions and
-- compatibility"): named by the event (`$schema`) or its request (`Eventgate-Schema-Version`), else the
-- topic's latest. Every event stored before had one version to be validated against: 1.
--
-- A constant default makes this metadata-only since PostgreSQL 11: the existing rows are not rewritten
-- (they read the default from the catalogue), so the migration takes a moment on any size of history;
-- it still takes the table's ACCESS EXCLUSIVE lock for that moment. The writers (eventgate_write)
-- insert it with the table's INSERT right, the stats-api (eventgate_read) reads it with SELECT.
ALTER TABLE events ADD COLUMN schema_version smallint NOT NULL DEFAULT 1
    CHECK (schema_version >= 1);
