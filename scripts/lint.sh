#!/usr/bin/env bash
# `make lint`, and the lint step of `make test`: formatting, clippy with warnings as errors, and the guards
# that keep the crate boundaries where ARCHITECTURE.md says they are:
#   - eventgate-core without features depends on no database, HTTP server or Kafka crate (it is the pure
#     shared heart; those come in only behind its features `db`, `http`, `kafka`, `reload`, `otlp`);
#   - no crate declares a dependency it does not use (cargo-machete, installed on first use).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "eventgate-core without features is pure"
forbidden='^(diesel|diesel-async|diesel_migrations|bb8|bb8-postgres|tokio-postgres|actix-web|actix-http|actix-service|rdkafka|reqwest|lettre|opentelemetry-otlp)$'
found=$(cargo tree -p eventgate-core --no-default-features -e normal --prefix none --format '{p}' |
    awk '{print $1}' | sort -u | grep -E "$forbidden" || true)
if [[ -n $found ]]; then
    printf 'eventgate-core without features depends on:\n%s\nMove the code that needs them behind a feature.\n' \
        "$found" >&2
    exit 1
fi
# The guard itself must see the crates when they are there: with `db`, diesel is in the tree.
if ! cargo tree -p eventgate-core --features db -e normal --prefix none --format '{p}' | grep -q '^diesel '; then
    echo "the purity guard cannot see eventgate-core's dependencies (cargo tree output changed?)" >&2
    exit 1
fi

step "cargo machete (dependencies declared but not used)"
if ! cargo machete --version >/dev/null 2>&1; then
    step "installing cargo-machete"
    cargo install --locked cargo-machete >&2
fi
cargo machete
