DROP TABLE alert_state;
DROP TABLE writer_runs;
