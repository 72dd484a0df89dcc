#!/usr/bin/env bash
# `make bench` / `make bench-quick`: the measured speed of ingest, writer and queries (crates/bench).
#
#   scripts/bench.sh [--quick] [eventgate-bench flags…]     e.g. scripts/bench.sh --phases queries
#
# Builds the services and the bench in release mode, starts a private PostgreSQL cluster and tansu broker
# like `make run` does (same server settings; in target/bench/stack, on free ports, removed at exit), and
# runs target/release/eventgate-bench against them. It prints a Markdown table and writes
# target/bench/results.json; the services' logs go to target/bench/logs/.
#
# To use a running stack instead (e.g. the one of `make run`), give its superuser URL and broker:
#   BENCH_PG_URL=postgres://postgres@127.0.0.1:55432 BENCH_KAFKA_BROKERS=127.0.0.1:19092 make bench
# The bench works in a database of its own (eventgate_bench, dropped at the end) and on Kafka topics of
# its own, and spawns its own service processes on free ports.
#
# BENCH_SKIP_BUILD=1 skips the release build (the binaries must exist).

set -euo pipefail
# shellcheck disable=SC2317 # functions called through traps and stack_start_with_free_port

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

ROOT=$(pwd)
STACK_DIR=$ROOT/target/bench/stack

step() { printf '\n==> %s\n' "$*" >&2; }

if [[ ${BENCH_SKIP_BUILD:-} != 1 ]]; then
    step "cargo build --release (services and bench)"
    cargo build --release -p eventgate-bench -p eventgate-ingest-api -p eventgate-db-writer \
        -p eventgate-stats-api
fi

on_exit() {
    local status=$?
    trap - EXIT INT TERM
    step "stopping the bench stack"
    stack_clean_dir "$STACK_DIR" || true
    exit "$status"
}

# The server settings of `make run` (scripts/run-local.sh): Debian's defaults, durable.
start_pg() { stack_start_postgres "$STACK_DIR/postgres" "$1"; }
start_tansu() { stack_start_tansu "$1" "$STACK_DIR/tansu.log" "$STACK_DIR/tansu.pid"; }

if [[ -n ${BENCH_PG_URL:-} && -n ${BENCH_KAFKA_BROKERS:-} ]]; then
    stack_log "using the running stack: $BENCH_PG_URL, kafka $BENCH_KAFKA_BROKERS"
else
    step "PostgreSQL and tansu (target/bench/stack)"
    PG_BINDIR=$(stack_ensure_postgres)
    export PG_BINDIR
    TANSU_BIN=$(stack_ensure_tansu)
    export TANSU_BIN
    stack_clean_dir "$STACK_DIR" # leftovers of an interrupted run
    mkdir -p "$STACK_DIR"
    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    PG_PORT=$(stack_start_with_free_port postgres start_pg)
    KAFKA_PORT=$(stack_start_with_free_port tansu start_tansu)
    export BENCH_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT"
    export BENCH_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
    BENCH_BROKER_PID=$(<"$STACK_DIR/tansu.pid")
    export BENCH_BROKER_PID
fi

step "eventgate-bench $*"
target/release/eventgate-bench --bin-dir target/release "$@"
