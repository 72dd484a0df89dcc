# eventgate developer entry points. `make help` lists them.
#
# Local state lives in .data/ (PostgreSQL cluster, dev keys, cursor secret, tansu log) and tools in .tools/
# (tansu), both git-ignored. Ports: PG_PORT (55432) and KAFKA_PORT (19092), e.g. `make run PG_PORT=55433`.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PG_PORT ?= 55432
KAFKA_PORT ?= 19092
SUB ?= dev
TTL ?=
GROUPS ?=
BENCH_ARGS ?=
export PG_PORT KAFKA_PORT

.PHONY: help run token keys test migrate maintain build lint fmt clean stop bench bench-quick

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

run: ## Start PostgreSQL, tansu and the three services in the foreground (Ctrl-C stops all)
	@bash scripts/run-local.sh run

token: ## Print a dev JWT alone on stdout: make -s token SUB=dev [TTL=3600] [GROUPS=a,b]
	@bash scripts/run-local.sh token "$(SUB)" "$(TTL)" "$(GROUPS)"

keys: ## Create the dev key pair in .data/keys unless it exists (docker compose mounts public.pem)
	@bash scripts/run-local.sh keys

test: ## fmt check, clippy and every test against a private PostgreSQL + tansu (installs what is missing)
	@bash scripts/test.sh

bench: ## Measured speed of ingest, writer, queries, aggregates, exports on release builds (~20 min; BENCH_ARGS=… for more flags)
	@bash scripts/bench.sh $(BENCH_ARGS)

bench-quick: ## The same with small sizes (about a minute): proves the tool works
	@bash scripts/bench.sh --quick $(BENCH_ARGS)

migrate: ## Apply the migrations to the local database of `make run` (which must be running)
	@bash scripts/run-local.sh migrate

maintain: ## Maintain the event history's partitions of `make run`'s database now (spans ahead, retention, indexes)
	@bash scripts/run-local.sh maintain

build: ## Build every binary of the workspace (debug)
	cargo build --workspace --bins

lint: ## fmt check, clippy -D warnings, core's purity and unused dependencies (scripts/lint.sh)
	@bash scripts/lint.sh

fmt: ## Format the code
	cargo fmt --all

stop: ## Stop a running `make run` and the servers it left behind
	@bash scripts/run-local.sh stop

clean: ## Remove local state (.data) and test-stack leftovers; stops nothing (`make stop` first)
	rm -rf .data target/test-stack
