DROP TABLE IF EXISTS event_counts;
