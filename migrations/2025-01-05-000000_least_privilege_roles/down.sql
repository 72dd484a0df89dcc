REVOKE SELECT, INSERT ON events, dead_letters FROM eventgate_write;
REVOKE USAGE ON SEQUENCE dead_letters_id_seq FROM eventgate_write;
