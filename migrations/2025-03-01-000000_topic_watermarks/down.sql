DROP TABLE IF EXISTS event_commits;
DROP TABLE IF EXISTS topic_watermarks;
