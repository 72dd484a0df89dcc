#!/usr/bin/env bash
# `make test`: everything CI checks, on a fresh machine too.
#
# Installs what is missing (PostgreSQL, Chromium, OpenSSL's headers and stunnel from Debian, tansu into
# $TOOLS_DIR, cargo-nextest),
# starts a private PostgreSQL cluster (target/test-stack/make-test-<pid>/postgres) and a tansu broker on free
# ports, creates and migrates the template database eventgate_template, then runs
#   scripts/lint.sh (fmt, clippy, core's purity, unused dependencies); scripts/check-deploy.sh (promtool,
#   Kubernetes and compose schema checks of the deploy files); cargo nextest run --workspace
# and the benchmark tool once in its quick mode (`make bench-quick` sizes, debug binaries, no figure checked),
# with the stack exported to the tests (crates/test-support reads these):
#   EVENTGATE_TEST_PG_URL         postgres://postgres@127.0.0.1:PORT   (superuser, no database)
#   EVENTGATE_TEST_PG_DATADIR     the cluster's data directory        (lets tests stop/start it)
#   EVENTGATE_TEST_KAFKA_BROKERS  127.0.0.1:PORT
#   EVENTGATE_TEST_TANSU_PIDFILE, EVENTGATE_TEST_TANSU_LOG             (let tests stop/start the broker)
# The stack is stopped and removed on every exit. Arguments replace `--workspace` in the nextest (or cargo
# test) command, e.g. `scripts/test.sh -p eventgate-db-writer`; SKIP_LINT=1 skips fmt, clippy and the
# deploy checks.

# shellcheck disable=SC2317 # functions called through traps and stack_start_with_free_port
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

ROOT=$(pwd)
# One stack per run (several runs of this script may share a checkout); a run's stack is removed when
# it ends, and those of runs that died are removed by the next run.
STACK_DIR=$ROOT/target/test-stack/make-test-$$

step() { printf '\n==> %s\n' "$*" >&2; }

on_exit() {
    local status=$?
    trap - EXIT INT TERM
    if ((status != 0)); then
        for log in "$STACK_DIR/postgres/postgres.log" "$STACK_DIR/tansu.log"; do
            if [[ -s $log ]]; then
                printf '\n--- last lines of %s\n' "${log#"$ROOT"/}" >&2
                tail -n 15 "$log" >&2 || true
            fi
        done
    fi
    step "stopping the test stack"
    stack_clean_dir "$STACK_DIR" || true
    exit "$status"
}

step "PostgreSQL and tansu"
PG_BINDIR=$(stack_ensure_postgres)
export PG_BINDIR
TANSU_BIN=$(stack_ensure_tansu)
export TANSU_BIN
stack_log "postgres: $PG_BINDIR; tansu: $TANSU_BIN"

# The explorer page's browser test (crates/stats-api/tests/explorer_browser.rs) drives Debian's Chromium.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    step "installing chromium and chromium-driver (apt-get)"
    stack_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    stack_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
        chromium chromium-driver >&2
fi

# librdkafka is built with TLS and SASL SCRAM against the system OpenSSL (rdkafka's "ssl" feature):
# libssl-dev and pkg-config. The Kafka security tests (crates/e2e/tests/kafka_security.rs) put stunnel in
# front of a tansu and make their certificates with openssl.
missing_packages=()
pkg-config --exists openssl 2>/dev/null || missing_packages+=(libssl-dev pkg-config)
command -v stunnel4 >/dev/null 2>&1 || missing_packages+=(stunnel4)
command -v openssl >/dev/null 2>&1 || missing_packages+=(openssl)
if ((${#missing_packages[@]} > 0)); then
    step "installing ${missing_packages[*]} (apt-get)"
    stack_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    stack_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
        "${missing_packages[@]}" >&2
fi

# crates/stats-api/tests/sqlstate.rs runs Postgres with German messages (lc_messages) to prove that errors
# are told apart by SQLSTATE, not by their text: the server needs the locale.
if ! locale -a 2>/dev/null | grep -qiE '^de_DE\.utf-?8$'; then
    step "generating the de_DE.UTF-8 locale (localedef)"
    if [[ ! -e /usr/share/i18n/locales/de_DE ]]; then
        stack_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
            locales >&2
    fi
    stack_as_root localedef -i de_DE -f UTF-8 de_DE.UTF-8
fi

# crates/e2e/tests/openapi.rs runs schemathesis (PyPI) against both APIs: a venv of its own.
EVENTGATE_TEST_SCHEMATHESIS=$(bash scripts/schemathesis.sh)
export EVENTGATE_TEST_SCHEMATHESIS

for leftover in "$ROOT"/target/test-stack/make-test "$ROOT"/target/test-stack/make-test-*; do
    [[ -d $leftover ]] || continue
    owner=${leftover##*-}
    # The stack of a run still going on is not ours to remove.
    if [[ $owner =~ ^[0-9]+$ ]] && kill -0 "$owner" 2>/dev/null; then continue; fi
    stack_clean_dir "$leftover"
done
mkdir -p "$STACK_DIR"
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_pg() { PG_EXTRA_OPTS="-c fsync=off -c max_connections=300" stack_start_postgres "$STACK_DIR/postgres" "$1"; }
start_tansu() { stack_start_tansu "$1" "$STACK_DIR/tansu.log" "$STACK_DIR/tansu.pid"; }
PG_PORT=$(stack_start_with_free_port postgres start_pg)
KAFKA_PORT=$(stack_start_with_free_port tansu start_tansu)

step "template database eventgate_template"
cargo build -p eventgate-cli --bin eventgate
stack_pg_psql "$PG_BINDIR" "$PG_PORT" -d postgres -c "CREATE DATABASE eventgate_template OWNER eventgate"
target/debug/eventgate migrate --database-url "postgres://eventgate@127.0.0.1:$PG_PORT/eventgate_template"

export EVENTGATE_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT"
export EVENTGATE_TEST_PG_DATADIR="$STACK_DIR/postgres"
export EVENTGATE_TEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export EVENTGATE_TEST_TANSU_PIDFILE="$STACK_DIR/tansu.pid"
export EVENTGATE_TEST_TANSU_LOG="$STACK_DIR/tansu.log"
stack_log "EVENTGATE_TEST_PG_URL=$EVENTGATE_TEST_PG_URL EVENTGATE_TEST_KAFKA_BROKERS=$EVENTGATE_TEST_KAFKA_BROKERS"

if [[ ${SKIP_LINT:-} != 1 ]]; then
    bash scripts/lint.sh
    bash scripts/check-deploy.sh
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest"
    cargo install --locked cargo-nextest >&2 || stack_log "cargo-nextest could not be installed: using cargo test"
fi

# Arguments replace --workspace (e.g. `-p eventgate-db-writer`, or `--workspace -- some_test`).
args=("$@")
if ((${#args[@]} == 0)); then args=(--workspace); fi
status=0
if cargo nextest --version >/dev/null 2>&1; then
    step "cargo nextest run --no-fail-fast ${args[*]}"
    cargo nextest run --no-fail-fast "${args[@]}" || status=$?
else
    step "cargo test --no-fail-fast ${args[*]}"
    cargo test --no-fail-fast "${args[@]}" || status=$?
fi

# The benchmark tool once, with its quick sizes, the debug binaries and this stack: proves that it runs
# end to end against the real services. No figure is checked (debug builds, a shared machine). Only in a
# whole-workspace run; SKIP_BENCH=1 skips it.
if (($# == 0)) && [[ ${SKIP_BENCH:-} != 1 ]]; then
    step "eventgate-bench --quick (the tool works; figures not checked)"
    cargo build -p eventgate-bench -p eventgate-ingest-api -p eventgate-db-writer -p eventgate-stats-api --bins
    BENCH_PG_URL=$EVENTGATE_TEST_PG_URL BENCH_KAFKA_BROKERS=$EVENTGATE_TEST_KAFKA_BROKERS \
        target/debug/eventgate-bench --quick --bin-dir target/debug --out target/bench/ci-results.json ||
        status=$?
fi
exit "$status"
