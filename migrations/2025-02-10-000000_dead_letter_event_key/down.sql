DROP INDEX IF EXISTS dead_letters_topic_event_id_producer;
ALTER TABLE dead_letters DROP COLUMN event_id, DROP COLUMN producer;
