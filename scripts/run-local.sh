#!/usr/bin/env bash
# The local development stack, behind `make run`, `make token`, `make migrate`, `make maintain` and
# `make stop`.
#
#   scripts/run-local.sh [run]        PostgreSQL (.data/postgres, port $PG_PORT) + tansu (port $KAFKA_PORT,
#                                     its queue in the database tansu of that cluster) + the three services,
#                                     in the foreground, restarted with a back-off when one exits
#                                     (`supervise`); Ctrl-C stops everything
#   scripts/run-local.sh token [SUB] [TTL_SECS]
#                                     print a dev JWT for SUB (default dev) alone on stdout
#   scripts/run-local.sh keys         create the dev key pair in .data/keys unless it exists
#   scripts/run-local.sh migrate      apply the migrations to the local database (starts nothing)
#   scripts/run-local.sh maintain     maintain the local event history's partitions now (starts nothing)
#   scripts/run-local.sh stop         stop a running `make run` and whatever it left behind
#
# Ports: PG_PORT (55432), KAFKA_PORT (19092); the services listen where config/eventgate.toml says
# (ingest 127.0.0.1:8080, stats 127.0.0.1:8081, writer health/metrics 127.0.0.1:8082), overridable with
# EVENTGATE_INGEST__LISTEN and friends. Everything local lives in .data/ (git-ignored; `make clean`).
# The broker keeps topics, events and committed offsets in PostgreSQL (tansu's postgres storage), so a
# restart of `make run` or of the broker alone loses nothing it acknowledged, as with Kafka;
# TANSU_STORAGE_ENGINE=memory://tansu/ runs it on memory instead (faster; a restart empties it).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

ROOT=$(pwd)
DATA=$ROOT/.data
PG_PORT=${PG_PORT:-55432}
KAFKA_PORT=${KAFKA_PORT:-19092}
KEYS=$DATA/keys
CLI=$ROOT/target/debug/eventgate
PIDFILE=$DATA/run-local.pid
INGEST_LISTEN=${EVENTGATE_INGEST__LISTEN:-127.0.0.1:8080}
STATS_LISTEN=${EVENTGATE_STATS__LISTEN:-127.0.0.1:8081}
WRITER_LISTEN=${EVENTGATE_WRITER__LISTEN:-127.0.0.1:8082}

say() { printf '[run] %s\n' "$*" >&2; }

# The schema owner (migrations) and the writer's own login role (INSERT/SELECT only).
writer_url() { printf 'postgres://eventgate@127.0.0.1:%s/eventgate' "$PG_PORT"; }
writer_role_url() { printf 'postgres://eventgate_writer@127.0.0.1:%s/eventgate' "$PG_PORT"; }

# Builds the CLI without a word on stdout.
build_cli() {
    cargo build -q -p eventgate-cli --bin eventgate >&2
}

ensure_keys() {
    if [[ ! -s $KEYS/private.pem || ! -s $KEYS/public.pem ]]; then
        mkdir -p "$KEYS"
        "$CLI" keygen --dir "$KEYS" >&2
    fi
}

# `GET http://HOST:PORT/health` answers 2xx (curl when present, else bash's /dev/tcp).
healthy() {
    local addr=$1
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 2 "http://$addr/health" 2>/dev/null
        return
    fi
    (
        exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}" || exit 1
        printf 'GET /health HTTP/1.0\r\nHost: %s\r\n\r\n' "$addr" >&3
        IFS= read -r -t 2 status <&3 || exit 1
        [[ $status =~ ^HTTP/[0-9.]+\ 2 ]]
    ) 2>/dev/null
}

cmd_token() {
    local sub=${1:-dev} ttl=${2:-} groups=${3:-}
    local args=(token --key "$KEYS/private.pem" --sub "$sub")
    [[ -n $ttl ]] && args+=(--ttl-secs "$ttl")
    [[ -n $groups ]] && args+=(--groups "$groups")
    build_cli
    ensure_keys
    "$CLI" "${args[@]}"
}

require_postgres() {
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; then
        stack_die "no PostgreSQL on 127.0.0.1:$PG_PORT: start the stack with 'make run' first"
    fi
}

cmd_migrate() {
    require_postgres
    build_cli
    "$CLI" migrate --database-url "$(writer_url)"
}

# One maintenance run now, as the schema owner, with config/eventgate.toml's storage settings (what the
# writer of `make run` does every storage.maintenance_interval_ms anyway).
cmd_maintain() {
    require_postgres
    build_cli
    "$CLI" maintain --database-url "$(writer_url)"
}

cmd_stop() {
    local pid i
    if [[ -s $PIDFILE ]]; then
        pid=$(<"$PIDFILE")
        if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            say "stopping make run (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            for i in $(seq 1 300); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
        rm -f "$PIDFILE"
    fi
    # Whatever an interrupted run left behind.
    stack_stop_tansu "$DATA/tansu.pid"
    stack_stop_postgres "$DATA/postgres" fast
}

SERVICE_PIDS=()
SERVICE_NAMES=()
SERVICE_BINS=()
SERVICE_STARTED=()
SERVICE_BACKOFF=()

cleanup() {
    local status=$? pid i
    trap - EXIT INT TERM
    if ((${#SERVICE_PIDS[@]} > 0)); then
        say "stopping services"
        kill -TERM "${SERVICE_PIDS[@]}" 2>/dev/null || true
        for i in $(seq 1 100); do
            local alive=0
            for pid in "${SERVICE_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            ((alive)) || break
            sleep 0.1
        done
        kill -KILL "${SERVICE_PIDS[@]}" 2>/dev/null || true
    fi
    stack_stop_tansu "$DATA/tansu.pid" || true
    stack_stop_postgres "$DATA/postgres" fast || true
    rm -f "$PIDFILE"
    say "stopped"
    exit "$status"
}

start_service() {
    local name=$1 bin=$2
    SERVICE_NAMES+=("$name")
    SERVICE_BINS+=("$bin")
    SERVICE_BACKOFF+=(1)
    SERVICE_PIDS+=(0)
    SERVICE_STARTED+=(0)
    spawn_service $((${#SERVICE_NAMES[@]} - 1))
}

# Starts service number $1 (again).
spawn_service() {
    local i=$1 name=${SERVICE_NAMES[$1]} bin=${SERVICE_BINS[$1]}
    # setsid: the terminal's Ctrl-C reaches this script only, which stops the services with one SIGTERM.
    # Their output goes through a sed that ignores SIGINT, so they never write into a closed pipe. The
    # service's pid is $! (setsid execs in place: a background job of a script leads no process group).
    setsid "$bin" > >(trap '' INT && exec sed -u "s/^/[$name] /") 2>&1 &
    SERVICE_PIDS[i]=$!
    SERVICE_STARTED[i]=$SECONDS
}

# Supervises the services until Ctrl-C / SIGTERM (the traps), as an orchestrator would in production: a
# service that exits — crashed, OOM-killed, or killed by hand to see what happens — is started again
# after a back-off (1 s, doubling up to 30 s; back to 1 s once it ran for a minute), and the others carry
# on. The writer's replacement rejoins the group and goes on from the committed offsets.
supervise() {
    local status i delay
    while :; do
        status=0
        wait -n "${SERVICE_PIDS[@]}" || status=$?
        for i in "${!SERVICE_PIDS[@]}"; do
            kill -0 "${SERVICE_PIDS[$i]}" 2>/dev/null && continue
            if ((SECONDS - SERVICE_STARTED[i] >= 60)); then SERVICE_BACKOFF[i]=1; fi
            delay=${SERVICE_BACKOFF[$i]}
            say "${SERVICE_NAMES[$i]} exited (status $status): starting it again in ${delay} s"
            sleep "$delay"
            SERVICE_BACKOFF[i]=$((delay * 2 > 30 ? 30 : delay * 2))
            spawn_service "$i"
        done
    done
}

cmd_run() {
    mkdir -p "$DATA"
    if [[ -s $PIDFILE ]] && kill -0 "$(<"$PIDFILE")" 2>/dev/null; then
        stack_die "make run is already running (pid $(<"$PIDFILE")): 'make stop' first"
    fi
    printf '%s\n' "$$" >"$PIDFILE"
    trap cleanup EXIT
    # Ctrl-C / SIGTERM / make stop: a requested stop, so a clean exit once everything is down.
    trap 'exit 0' INT TERM

    say "checking PostgreSQL and tansu"
    stack_ensure_postgres >/dev/null
    stack_ensure_tansu >/dev/null
    stack_start_postgres "$DATA/postgres" "$PG_PORT"
    local storage=${TANSU_STORAGE_ENGINE:-}
    [[ -n $storage ]] || storage=$(stack_tansu_database "$PG_PORT" tansu)
    TANSU_STORAGE_ENGINE=$storage stack_start_tansu "$KAFKA_PORT" "$DATA/tansu.log" "$DATA/tansu.pid"

    # librdkafka is built with TLS and SASL against the system OpenSSL: its headers and pkg-config.
    if ! pkg-config --exists openssl 2>/dev/null; then
        say "installing libssl-dev and pkg-config (apt-get)"
        stack_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        stack_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
            libssl-dev pkg-config >&2
    fi
    say "building the workspace"
    cargo build --workspace --bins
    ensure_keys
    if [[ ! -s $DATA/cursor_secret ]]; then
        (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$DATA/cursor_secret")
    fi
    say "migrating $(writer_url)"
    "$CLI" migrate --database-url "$(writer_url)"

    export EVENTGATE_KAFKA__BROKERS="127.0.0.1:$KAFKA_PORT"
    export EVENTGATE_WRITER__DATABASE_URL EVENTGATE_WRITER__MIGRATION_DATABASE_URL
    EVENTGATE_WRITER__DATABASE_URL=$(writer_role_url)
    EVENTGATE_WRITER__MIGRATION_DATABASE_URL=$(writer_url)
    export EVENTGATE_STATS__DATABASE_URL="postgres://eventgate_stats@127.0.0.1:$PG_PORT/eventgate"
    export EVENTGATE_AUTH__PUBLIC_KEYS="[\"$KEYS/public.pem\"]"
    # The dev key signs tokens without iss/aud: no production warning about it here.
    export EVENTGATE_AUTH__DEVELOPMENT=true
    export EVENTGATE_STATS__CURSOR_SECRET
    EVENTGATE_STATS__CURSOR_SECRET=$(<"$DATA/cursor_secret")

    start_service ingest target/debug/eventgate-ingest-api
    start_service writer target/debug/eventgate-db-writer
    start_service stats target/debug/eventgate-stats-api

    local addr pending deadline=$((SECONDS + 90))
    while :; do
        pending=()
        for addr in "$INGEST_LISTEN" "$STATS_LISTEN" "$WRITER_LISTEN"; do
            healthy "$addr" || pending+=("$addr")
        done
        ((${#pending[@]} == 0)) && break
        if ((SECONDS >= deadline)); then
            say "warning: no healthy answer yet from ${pending[*]} (see the logs above)"
            break
        fi
        for pid in "${SERVICE_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || stack_die "a service exited during start-up (see the logs above)"
        done
        sleep 0.5
    done

    cat >&2 <<EOF

======================================================================================================
 eventgate is running (Ctrl-C stops everything; 'make stop' from another terminal does too)
   ingest-api  http://$INGEST_LISTEN     stats-api  http://$STATS_LISTEN     writer  http://$WRITER_LISTEN/health
   postgres    postgres://eventgate@127.0.0.1:$PG_PORT/eventgate     kafka  127.0.0.1:$KAFKA_PORT
               (the broker's queue: ${storage%%\?*})

   TOKEN=\$(make -s token SUB=dev)          # config/access.json grants 'dev' every topic
   curl -s -X POST http://$INGEST_LISTEN/topics/audit.logs -H "Authorization: Bearer \$TOKEN" \\
        -H 'Content-Type: application/json' -d '{"event_name":"login","description":"hi","customer_id":42}'
   curl -s -X POST http://$STATS_LISTEN/stats/audit.logs -H "Authorization: Bearer \$TOKEN" \\
        -H 'Content-Type: application/json' -d '{"sort":["-timestamp"],"limit":5}'
======================================================================================================

EOF

    supervise
}

case "${1:-run}" in
    run) cmd_run ;;
    token) cmd_token "${2:-}" "${3:-}" "${4:-}" ;;
    keys)
        build_cli
        ensure_keys
        say "dev keys: $KEYS/private.pem, $KEYS/public.pem"
        ;;
    migrate) cmd_migrate ;;
    maintain) cmd_maintain ;;
    stop) cmd_stop ;;
    *) stack_die "usage: $0 [run|token [SUB] [TTL_SECS]|keys|migrate|maintain|stop]" ;;
esac
