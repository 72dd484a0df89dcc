-- Every start of a writer process. A writer records its start, refreshes `last_seen` while it runs and
-- sets `stopped_at` when it stops cleanly (SIGTERM). A start that stopped refreshing `last_seen` without a
-- clean stop is a crash; several crashes of one consumer group within the alert window are a crash loop,
-- which a restarted writer cannot see in its own memory. Rows older than a few windows are deleted.
CREATE TABLE writer_runs (
    id         bigserial   PRIMARY KEY,
    group_id   text        NOT NULL,
    instance   text        NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz
);
CREATE INDEX writer_runs_group_id_last_seen ON writer_runs (group_id, last_seen);

-- Alert state shared by the writers of a group, for failures that outlive any one writer process (a
-- crash loop): whether it is announced and when the last email went out, so that the group sends one
-- email per window and one "recovered" email, not one per restart. Updated under a row lock.
CREATE TABLE alert_state (
    group_id   text        NOT NULL,
    kind       text        NOT NULL,
    active     boolean     NOT NULL DEFAULT false,
    since      timestamptz,
    last_alert timestamptz,
    PRIMARY KEY (group_id, kind)
);

-- The writer's runtime role (eventgate_write) keeps both tables; created here unless it exists already.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_write') THEN
        CREATE ROLE eventgate_write NOLOGIN;
    END IF;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON writer_runs, alert_state TO eventgate_write;
GRANT USAGE ON SEQUENCE writer_runs_id_seq TO eventgate_write;
