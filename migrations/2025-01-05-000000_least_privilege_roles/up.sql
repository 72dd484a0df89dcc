-- Least privilege for the services' login roles. The schema belongs to the role that runs the migrations
-- (eventgate); only it can ALTER or DROP anything. The services log in as other roles that are members of
-- these NOLOGIN group roles:
--   eventgate_write  (the db-writer's eventgate_writer): INSERT and SELECT on the event history, nothing
--                    else there: it cannot UPDATE, DELETE, TRUNCATE, ALTER or DROP an event.
--   eventgate_read   (the stats-api's eventgate_stats): SELECT only, granted by the first migration.
-- The roles are created by whoever creates the login roles (scripts/stack.sh, the compose init script, a
-- DBA), since the owner need not have CREATEROLE; a missing one is created here, which needs CREATEROLE.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_write') THEN
        CREATE ROLE eventgate_write NOLOGIN;
    END IF;
END
$$;
GRANT SELECT, INSERT ON events, dead_letters TO eventgate_write;
GRANT USAGE ON SEQUENCE dead_letters_id_seq TO eventgate_write;
-- Whatever was granted before (a hand-made grant, an older set-up) is taken back.
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON events, dead_letters FROM eventgate_write;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON events, dead_letters FROM eventgate_read;
