-- Back to a global id key. Fails (unique violation) once two producers, or two topics, hold the same
-- id: which event to drop is not a migration's decision.
ALTER TABLE dead_letters DROP COLUMN reason;
ALTER TABLE events
    DROP CONSTRAINT events_pkey,
    ADD CONSTRAINT events_pkey PRIMARY KEY (id);
