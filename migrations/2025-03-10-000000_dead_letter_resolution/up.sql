-- What became of a dead letter: an operator replayed it (`eventgate dead-letters replay`: decoded again,
-- validated against the topic's current schema and produced to its Kafka topic again with its original
-- id, so the event key (id, topic, producer) stores it at most once) or discarded it
-- (`eventgate dead-letters discard`); when, by whom, and a note (why it was discarded, or the offset
-- its replay got). NULL while it waits for a decision: listings show those by default.
--
-- Rights: the writers (eventgate_write) keep INSERT/SELECT and never resolve anything; the stats-api
-- (eventgate_read) reads the new columns with the table's SELECT. The command line resolves with the
-- schema owner's URL (eventgate, the role that runs the migrations), as `eventgate migrate` does: no
-- service role may UPDATE a dead letter.
ALTER TABLE dead_letters
    ADD COLUMN resolution text CHECK (resolution IN ('replayed', 'discarded')),
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolved_by text,
    ADD COLUMN resolution_note text,
    -- A resolution always says when and by whom; an unresolved row says neither.
    ADD CONSTRAINT dead_letters_resolution_complete CHECK (
        (resolution IS NULL) = (resolved_at IS NULL) AND (resolution IS NULL) = (resolved_by IS NULL)
    );

-- The unresolved dead letters of a topic: what `eventgate dead-letters list` shows by default (newest
-- first) and what `replay --topic T --all-unresolved` walks (oldest first).
CREATE INDEX dead_letters_unresolved ON dead_letters (topic, created_at, id) WHERE resolution IS NULL;
