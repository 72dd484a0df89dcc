#!/usr/bin/env bash
# Runs once, when the primary's data directory is created: the replication user, the read-only role the
# stats-api logs in as, the insert-only role the db-writer logs in as, and the pg_hba rule the replica
# needs. The schema itself comes from the migrations, run as the owner (eventgate), which grant SELECT to
# eventgate_read and INSERT/SELECT to eventgate_write.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '${REPLICATION_PASSWORD}';
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_read') THEN CREATE ROLE eventgate_read NOLOGIN; END IF;
END \$\$;
CREATE ROLE eventgate_stats LOGIN PASSWORD '${EVENTGATE_STATS_PASSWORD}' IN ROLE eventgate_read;
ALTER ROLE eventgate_stats SET default_transaction_read_only = on;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_write') THEN CREATE ROLE eventgate_write NOLOGIN; END IF;
END \$\$;
CREATE ROLE eventgate_writer LOGIN PASSWORD '${EVENTGATE_WRITER_PASSWORD}' IN ROLE eventgate_write;
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
