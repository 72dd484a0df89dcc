#!/usr/bin/env bash
# A streaming read replica: clone the primary once with pg_basebackup (-R writes standby.signal and the
# primary_conninfo), then run as a hot standby. Everything written on the primary, roles included, arrives.
set -euo pipefail
export PGDATA=/var/lib/postgresql/data
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_basebackup -h "$PRIMARY_HOST" -U replicator -D "$PGDATA" -R -X stream -P; do
    echo "waiting for the primary..."; sleep 2; rm -rf "${PGDATA:?}"/*
  done
  chmod 0700 "$PGDATA"
fi
exec postgres -c hot_standby=on
