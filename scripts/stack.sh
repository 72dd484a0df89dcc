#!/usr/bin/env bash
# Local infrastructure for development and tests: a private PostgreSQL cluster and a tansu (Kafka-protocol)
# broker, both bound to 127.0.0.1 only. Used by the Makefile, scripts/run-local.sh, scripts/test.sh and the
# Rust test harness (crates/test-support).
#
# Run it (`bash scripts/stack.sh SUBCOMMAND ...`) or source it (`source scripts/stack.sh`) to get the
# stack_* functions. Diagnostics go to stderr; stdout carries only the requested value (a path, a port), so
# `bin=$(bash scripts/stack.sh ensure-postgres)` works.
#
# Subcommands:
#   ensure-postgres                      print Debian's PostgreSQL server bin dir; apt-get install it if absent
#   ensure-tansu                         print the patched tansu 0.6 binary; build it into $TOOLS_DIR if absent
#                                        (see scripts/tansu-patches and the tansu section below)
#   tansu-path                           print where ensure-tansu keeps the patched binary (without building)
#   start-postgres DATADIR PORT          initdb if needed, start on 127.0.0.1:PORT, create roles and database
#   stop-postgres DATADIR [MODE]         pg_ctl stop -m MODE (fast by default; smart|fast|immediate)
#   tansu-database PG_PORT [DATABASE]    create the role tansu and its DATABASE (default tansu) in the cluster on
#                                        PG_PORT, with the tables of tansu's postgres storage engine; print its URL
#   start-tansu PORT LOGFILE [PIDFILE]   start the broker in the background, wait for the port (storage: see
#                                        TANSU_STORAGE_ENGINE)
#   stop-tansu [PIDFILE]                 stop the broker started with that pidfile (default .data/tansu.pid)
#   wait-port PORT [TIMEOUT_SECS]        wait until 127.0.0.1:PORT accepts connections (default 30 s)
#   free-port                            print a TCP port that is free on 127.0.0.1 right now
#   start-with-free-port WHAT CMD [ARG…] run CMD ARG… PORT on a free PORT, up to 3 tries (a free port can be
#                                        taken before CMD binds it); print PORT, CMD's output goes to stderr
#   reap PID DIR                         wait until process PID exits, then clean-dir DIR (the test harness)
#   clean-dir DIR                        stop the servers kept in DIR and DIR/*/ (postgres/, tansu.pid), rm DIR
#
# Environment:
#   TOOLS_DIR      where tansu is installed (tansu-VERSION-PATCHSET/bin/tansu): default .tools in the repo, or
#                  ${XDG_CACHE_HOME:-$HOME/.cache}/eventgate/tools when CI=true (a cache that outlives the clone)
#   TANSU_BIN      use this tansu binary instead
#   PG_BINDIR      use the PostgreSQL server binaries in this directory instead
#   PG_EXTRA_OPTS  extra server options for start-postgres, e.g. "-c fsync=off" for throw-away test clusters
#   PG_OS_USER     OS user that runs the server when this script runs as root (default postgres)
#   TANSU_STORAGE_ENGINE
#                  start-tansu's storage: memory://tansu/ (the default: a restarted broker is empty) or the
#                  postgres://… URL that tansu-database prints (topics, records, committed offsets and SCRAM
#                  users survive a restart, as with Kafka; `make run` uses it)

set -euo pipefail

STACK_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_TANSU_VERSION="0.6.0"

stack_log() { printf 'stack: %s\n' "$*" >&2; }
stack_die() {
    stack_log "error: $*"
    exit 1
}

# Absolute form of a path that may not exist yet (relative to the current directory).
stack_abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$(pwd)" "$1" ;;
    esac
}

stack_as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        stack_die "need root for: $* (no sudo found)"
    fi
}

# ---------------------------------------------------------------------------------------------- helpers

stack_wait_port() {
    local port=${1:?usage: wait-port PORT [TIMEOUT]} timeout=${2:-30}
    local deadline=$((SECONDS + timeout))
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            stack_log "127.0.0.1:$port does not accept connections after ${timeout}s"
            return 1
        fi
        sleep 0.1
    done
}

stack_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
        return
    fi
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return
        fi
    done
    stack_die "no free port found"
}

stack_start_with_free_port() {
    local what=${1:?usage: start-with-free-port WHAT CMD [ARG...]} port attempt
    shift
    (($# > 0)) || stack_die "usage: start-with-free-port WHAT CMD [ARG...]"
    for attempt in 1 2 3; do
        port=$(stack_free_port)
        if ("$@" "$port") >&2; then
            printf '%s\n' "$port"
            return
        fi
        stack_log "$what did not start on port $port (attempt $attempt)"
    done
    stack_die "$what did not start"
}

# ---------------------------------------------------------------------------------------------- postgres

# Highest-versioned Debian PostgreSQL server bin dir, or nothing.
stack_pg_bindir() {
    if [[ -n ${PG_BINDIR:-} ]]; then
        [[ -x $PG_BINDIR/initdb ]] || stack_die "PG_BINDIR=$PG_BINDIR has no initdb"
        printf '%s\n' "$PG_BINDIR"
        return
    fi
    local d best=""
    while IFS= read -r d; do
        if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres && -x $d/psql ]]; then best=$d; fi
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V)
    [[ -n $best ]] && printf '%s\n' "$best"
    return 0
}

stack_ensure_postgres() {
    local bindir
    bindir=$(stack_pg_bindir)
    if [[ -z $bindir ]]; then
        stack_log "PostgreSQL server binaries not found: installing Debian's postgresql (apt-get)"
        # One apt run at a time, even when several test processes get here together.
        (
            flock -w 1800 9 || stack_die "timed out waiting for another apt-get run"
            if [[ -z $(stack_pg_bindir) ]]; then
                stack_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
                stack_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                    -o DPkg::Lock::Timeout=600 postgresql >&2
            fi
        ) 9>"${TMPDIR:-/tmp}/eventgate-apt.lock"
        bindir=$(stack_pg_bindir)
        [[ -n $bindir ]] || stack_die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
    fi
    printf '%s\n' "$bindir"
}

# The OS user that runs the server: postgres refuses to run as root, so as root we use PG_OS_USER.
stack_pg_os_user() {
    if [[ $EUID -eq 0 ]]; then printf '%s\n' "${PG_OS_USER:-postgres}"; fi
}

stack_pg_ensure_os_user() {
    local user
    user=$(stack_pg_os_user)
    [[ -z $user ]] && return 0
    if ! id -u "$user" >/dev/null 2>&1; then
        stack_log "creating OS user $user to run PostgreSQL"
        useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
            --shell /usr/sbin/nologin "$user"
    fi
}

# Runs a command as the server's OS user (as is when not root).
stack_pg_run() {
    local user
    user=$(stack_pg_os_user)
    if [[ -n $user ]]; then
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

# Creates DATADIR if needed and prints the physical directory the server uses. As root the directory is
# handed to the server's OS user; when that user cannot reach it (e.g. a clone under a 0700 home), the
# cluster lives under ${TMPDIR:-/tmp}/eventgate-pg/ instead and DATADIR becomes a symlink to it.
stack_pg_datadir() {
    local requested=$1 dir user real
    requested=$(stack_abspath "$requested")
    mkdir -p "$requested"
    dir=$(cd "$requested" && pwd -P)
    user=$(stack_pg_os_user)
    [[ -z $user ]] && { printf '%s\n' "$dir"; return; }
    stack_pg_ensure_os_user
    chown "$user:" "$dir"
    if runuser -u "$user" -- test -r "$dir" -a -w "$dir" -a -x "$dir"; then
        printf '%s\n' "$dir"
        return
    fi
    [[ -z $(ls -A "$dir") ]] || stack_die "$dir is not reachable by OS user $user and not empty"
    real="${TMPDIR:-/tmp}/eventgate-pg/$(printf '%s' "$dir" | sha1sum | cut -c1-16)"
    stack_log "$user cannot reach $dir: keeping the cluster in $real (symlinked)"
    mkdir -p "$(dirname "$real")" "$real"
    chmod 0755 "$(dirname "$real")"
    chown "$user:" "$real"
    rmdir "$dir"
    ln -s "$real" "$requested"
    printf '%s\n' "$real"
}

stack_pg_psql() {
    local bindir=$1 port=$2
    shift 2
    PGOPTIONS="-c client_min_messages=warning" PGCONNECT_TIMEOUT=10 "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"
}

stack_start_postgres() {
    local requested=${1:?usage: start-postgres DATADIR PORT} port=${2:?usage: start-postgres DATADIR PORT}
    local bindir dir sockdir out running_port
    bindir=$(stack_ensure_postgres)
    dir=$(stack_pg_datadir "$requested")

    if [[ ! -s $dir/PG_VERSION ]]; then
        rm -f "$dir/postgres.log"
        [[ -z $(ls -A "$dir") ]] || stack_die "$dir holds no cluster but is not empty: remove it first"
        stack_log "initdb $dir"
        out=$(stack_pg_run "$bindir/initdb" -D "$dir" --auth=trust --username=postgres -E UTF8 --locale=C \
            --no-sync 2>&1) || {
            printf '%s\n' "$out" >&2
            stack_die "initdb failed"
        }
    fi

    if stack_pg_run "$bindir/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        running_port=$(sed -n 4p "$dir/postmaster.pid" 2>/dev/null || true)
        if [[ $running_port != "$port" ]]; then
            stack_die "a server already runs in $dir on port $running_port (asked for $port): stop it first"
        fi
        stack_log "postgres already running in $dir on port $port"
    else
        # Unix socket paths are limited to ~107 bytes: fall back to the temp dir for deep data dirs.
        sockdir=$dir
        if ((${#dir} > 90)); then sockdir=${TMPDIR:-/tmp}; fi
        stack_log "starting postgres on 127.0.0.1:$port (log: $dir/postgres.log)"
        if ! stack_pg_run "$bindir/pg_ctl" -D "$dir" -w -t 60 -l "$dir/postgres.log" \
            -o "-p $port -k '$sockdir' -c listen_addresses=127.0.0.1 ${PG_EXTRA_OPTS:-}" start >/dev/null; then
            tail -n 30 "$dir/postgres.log" >&2 || true
            stack_die "postgres did not start (port $port taken?)"
        fi
    fi

    # Roles and the app database, idempotently. eventgate (CREATEDB, no CREATEROLE) owns the database and
    # runs the migrations, which grant table privileges to the NOLOGIN group roles created here:
    # eventgate_read (the stats-api's eventgate_stats is a member) and eventgate_write (the db-writer's
    # eventgate_writer is a member: INSERT/SELECT only, it cannot ALTER or DROP).
    stack_pg_psql "$bindir" "$port" -d postgres >/dev/null <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate') THEN
        CREATE ROLE eventgate LOGIN CREATEDB;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_read') THEN
        CREATE ROLE eventgate_read NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_write') THEN
        CREATE ROLE eventgate_write NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_stats') THEN
        CREATE ROLE eventgate_stats LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'eventgate_writer') THEN
        CREATE ROLE eventgate_writer LOGIN;
    END IF;
END
$$;
GRANT eventgate_read TO eventgate_stats;
GRANT eventgate_write TO eventgate_writer;
ALTER ROLE eventgate_stats SET default_transaction_read_only = on;
SELECT 'CREATE DATABASE eventgate OWNER eventgate'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'eventgate')
\gexec
SQL
}

stack_stop_postgres() {
    local requested=${1:?usage: stop-postgres DATADIR [MODE]} mode=${2:-fast} dir bindir
    dir=$(cd "$requested" 2>/dev/null && pwd -P) || return 0
    [[ -s $dir/PG_VERSION ]] || return 0
    bindir=$(stack_pg_bindir)
    [[ -n $bindir ]] || return 0
    if stack_pg_run "$bindir/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        stack_log "stopping postgres in $dir (-m $mode)"
        stack_pg_run "$bindir/pg_ctl" -D "$dir" -m "$mode" -w -t 60 stop >/dev/null
    fi
}

# ---------------------------------------------------------------------------------------------- tansu

# The broker is tansu $STACK_TANSU_VERSION from crates.io with the patches in scripts/tansu-patches/CRATE/*.patch
# (unified diffs against the pristine crate sources, applied in name order): the pristine .crate files are
# fetched by cargo, unpacked, patched and wired in with cargo's [patch.crates-io] through --config. The
# binary goes to $TOOLS_DIR/tansu-VERSION-PATCHSET/bin/tansu, PATCHSET being a hash of the patches: when
# the patches change, so does the directory, and a new binary is built. TANSU_STAMP in that directory names
# the patches it was built with. The sources and cargo's target dir stay in the build cache
# (${XDG_CACHE_HOME:-$HOME/.cache}/eventgate/tansu-build), so a rebuild after a patch change only
# recompiles the patched crates and what depends on them.

# dynostore: memory:// storage (tests, bench). postgres: the storage engine `make run` and the broker-restart
# tests use (scripts/tansu-patches/postgres-schema.sql; ~1 min more to build, docs/tansu-bugs.md).
STACK_TANSU_FEATURES="dynostore,postgres"
STACK_TANSU_PATCHES="$STACK_REPO_ROOT/scripts/tansu-patches"

stack_cache_tools_dir() {
    printf '%s\n' "${XDG_CACHE_HOME:-${HOME:-$(cd ~ && pwd)}/.cache}/eventgate/tools"
}

stack_tools_dir() {
    if [[ -n ${TOOLS_DIR:-} ]]; then
        stack_abspath "$TOOLS_DIR"
    elif [[ ${CI:-} == true ]]; then
        stack_cache_tools_dir
    else
        printf '%s\n' "$STACK_REPO_ROOT/.tools"
    fi
}

# Where the sources are patched and cargo builds (outside any clone: a build inside the repo would be taken
# for a member of its cargo workspace).
stack_tansu_build_dir() {
    printf '%s\n' "${XDG_CACHE_HOME:-${HOME:-$(cd ~ && pwd)}/.cache}/eventgate/tansu-build"
}

# The patch files, relative to scripts/tansu-patches, in the order they are applied (CRATE/NNNN-name.patch).
stack_tansu_patch_files() {
    (cd "$STACK_TANSU_PATCHES" && find . -mindepth 2 -maxdepth 2 -name '*.patch' -type f | sed 's|^\./||' |
        LC_ALL=C sort)
}

# The crates the patches apply to.
stack_tansu_patched_crates() {
    stack_tansu_patch_files | cut -d/ -f1 | LC_ALL=C sort -u
}

# What the binary is built from: version, features and every patch (name and content), one line each.
stack_tansu_recipe() {
    local file
    printf 'tansu %s features=%s\n' "$STACK_TANSU_VERSION" "$STACK_TANSU_FEATURES"
    while IFS= read -r file; do
        printf '%s %s\n' "$(sha256sum <"$STACK_TANSU_PATCHES/$file" | cut -c1-64)" "$file"
    done < <(stack_tansu_patch_files)
}

stack_tansu_patchset() {
    stack_tansu_recipe | sha256sum | cut -c1-12
}

# The directory (under a tools dir) of the patched build: tansu-0.6.0-<patchset>.
stack_tansu_dirname() {
    printf 'tansu-%s-%s\n' "$STACK_TANSU_VERSION" "$(stack_tansu_patchset)"
}

# True when $1 is tansu $STACK_TANSU_VERSION built with the current patches (its stamp matches the recipe).
stack_tansu_ok() {
    local bin=$1 stamp
    stamp="$(dirname "$(dirname "$bin")")/TANSU_STAMP"
    [[ -x $bin && -f $stamp ]] || return 1
    [[ $(<"$stamp") == "$(stack_tansu_recipe)" ]] || return 1
    "$bin" --version 2>/dev/null | grep -q "$STACK_TANSU_VERSION"
}

# `patch` (Debian's patch package) is not on every machine: install it when absent.
stack_tansu_need_patch() {
    command -v patch >/dev/null 2>&1 && return 0
    stack_log "patch not found: installing Debian's patch (apt-get)"
    (
        flock -w 1800 9 || stack_die "timed out waiting for another apt-get run"
        if ! command -v patch >/dev/null 2>&1; then
            stack_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
            stack_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                -o DPkg::Lock::Timeout=600 patch >&2
        fi
    ) 9>"${TMPDIR:-/tmp}/eventgate-apt.lock"
    command -v patch >/dev/null 2>&1 || stack_die "patch installed but not found"
}

# The pristine .crate file of NAME-$STACK_TANSU_VERSION in cargo's download cache, or nothing.
stack_tansu_crate_file() {
    local f
    for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$1-$STACK_TANSU_VERSION.crate"; do
        if [[ -s $f ]]; then
            printf '%s\n' "$f"
            return
        fi
    done
}

# Unpacks NAME-$STACK_TANSU_VERSION.crate from cargo's cache into DIR (replacing DIR/NAME-VERSION).
stack_tansu_unpack() {
    local name=$1 dir=$2 crate
    crate=$(stack_tansu_crate_file "$name")
    [[ -n $crate ]] || stack_die "$name-$STACK_TANSU_VERSION.crate is not in cargo's cache"
    rm -rf "${dir:?}/$name-$STACK_TANSU_VERSION"
    tar -xzf "$crate" -C "$dir"
    [[ -f $dir/$name-$STACK_TANSU_VERSION/Cargo.toml ]] || stack_die "$crate holds no $name-$STACK_TANSU_VERSION/"
}

# Builds the patched tansu into DEST (DEST/bin/tansu, DEST/TANSU_STAMP). Runs under the build dir's lock.
stack_tansu_build() {
    local dest=$1 build src log crate file lock args=() update=() before after started=$SECONDS
    build=$(stack_tansu_build_dir)
    src=$build/src
    log=$build/build.log
    # The build cache already holds this recipe's binary (built for another tools dir): copy it.
    if [[ -x $build/target/release/tansu && -f $src/RECIPE && $(<"$src/RECIPE") == "$(stack_tansu_recipe)" ]]; then
        stack_log "tansu with these patches is in the build cache ($build)"
        stack_tansu_install "$build/target/release/tansu" "$dest"
        return
    fi
    stack_log "building tansu $STACK_TANSU_VERSION with the patches of scripts/tansu-patches into $dest" \
        "(15-20 min on 2 cores when nothing is cached, ~5 min when only the patches changed; log: $log)"
    command -v cargo >/dev/null 2>&1 || stack_die "cargo not found: cannot build tansu"
    stack_tansu_need_patch
    rm -rf "$src"
    mkdir -p "$src/fetch/src"
    : >"$log"

    # 1. tansu-VERSION.crate itself (the binary crate and its Cargo.lock), through a throw-away package
    #    that depends on it without features (so that little else is resolved and downloaded).
    if [[ -z $(stack_tansu_crate_file tansu) ]]; then
        cat >"$src/fetch/Cargo.toml" <<TOML
[package]
name = "eventgate-tansu-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
tansu = { version = "=$STACK_TANSU_VERSION", default-features = false }

[workspace]
TOML
        : >"$src/fetch/src/lib.rs"
        cargo fetch --manifest-path "$src/fetch/Cargo.toml" >>"$log" 2>&1 ||
            stack_die "cargo fetch of tansu $STACK_TANSU_VERSION failed (log: $log)"
    fi
    stack_tansu_unpack tansu "$src"
    # A package of its own, whatever directory the build cache is in.
    printf '\n[workspace]\n' >>"$src/tansu-$STACK_TANSU_VERSION/Cargo.toml"

    # 2. Everything tansu's Cargo.lock names, the crates to patch among them.
    cargo fetch --locked --manifest-path "$src/tansu-$STACK_TANSU_VERSION/Cargo.toml" >>"$log" 2>&1 ||
        stack_die "cargo fetch of tansu's dependencies failed (log: $log)"

    # 3. The patched crates, wired in with [patch.crates-io].
    while IFS= read -r crate; do
        stack_tansu_unpack "$crate" "$src"
        while IFS= read -r file; do
            [[ $file == "$crate"/* ]] || continue
            stack_log "patching $crate-$STACK_TANSU_VERSION: $file"
            patch --batch --forward --silent -p1 -d "$src/$crate-$STACK_TANSU_VERSION" \
                <"$STACK_TANSU_PATCHES/$file" >>"$log" 2>&1 ||
                stack_die "$file does not apply to $crate $STACK_TANSU_VERSION (log: $log)"
        done < <(stack_tansu_patch_files)
        args+=(--config "patch.crates-io.$crate.path=\"$src/$crate-$STACK_TANSU_VERSION\"")
        update+=(-p "$crate")
    done < <(stack_tansu_patched_crates)

    # 4. Only the patched crates may change in the lock file (their source becomes a path): every other
    #    package stays at the version tansu was released with.
    lock="$src/tansu-$STACK_TANSU_VERSION/Cargo.lock"
    before=$(grep -A1 '^name = ' "$lock")
    cargo update --offline --manifest-path "$src/tansu-$STACK_TANSU_VERSION/Cargo.toml" "${args[@]}" \
        "${update[@]}" >>"$log" 2>&1 ||
        stack_die "cargo update of the patched crates failed (log: $log)"
    after=$(grep -A1 '^name = ' "$lock")
    [[ $before == "$after" ]] || stack_die "patching changed the versions in tansu's Cargo.lock (log: $log)"

    # 5. Build (the target dir outlives the sources: a rebuild only compiles what changed).
    cargo build --release --locked --offline --bin tansu \
        --features "$STACK_TANSU_FEATURES" --manifest-path "$src/tansu-$STACK_TANSU_VERSION/Cargo.toml" \
        --target-dir "$build/target" "${args[@]}" >>"$log" 2>&1 ||
        {
            tail -n 40 "$log" >&2
            stack_die "building tansu failed (log: $log)"
        }
    stack_tansu_recipe >"$src/RECIPE"
    stack_tansu_install "$build/target/release/tansu" "$dest"
    stack_log "built tansu in $((SECONDS - started)) s"
}

# Installs the binary BIN as DEST/bin/tansu with its stamp DEST/TANSU_STAMP (the recipe).
stack_tansu_install() {
    local bin=$1 dest=$2
    rm -rf "$dest.tmp"
    mkdir -p "$dest.tmp/bin"
    cp "$bin" "$dest.tmp/bin/tansu"
    stack_tansu_recipe >"$dest.tmp/TANSU_STAMP"
    rm -rf "$dest"
    mv "$dest.tmp" "$dest"
}

stack_tansu_path() {
    printf '%s/%s/bin/tansu\n' "$(stack_tools_dir)" "$(stack_tansu_dirname)"
}

stack_ensure_tansu() {
    local tools dir bin build
    if [[ -n ${TANSU_BIN:-} ]]; then
        [[ -x $TANSU_BIN ]] || stack_die "TANSU_BIN=$TANSU_BIN is not executable"
        printf '%s\n' "$TANSU_BIN"
        return
    fi
    tools=$(stack_tools_dir)
    dir=$tools/$(stack_tansu_dirname)
    bin=$dir/bin/tansu
    # Without an explicit TOOLS_DIR, the same patched tansu already built in the other default place will do
    # (the CI cache for a checkout, the checkout's .tools for CI).
    if [[ -z ${TOOLS_DIR:-} ]] && ! stack_tansu_ok "$bin"; then
        local other
        for other in "$STACK_REPO_ROOT/.tools" "$(stack_cache_tools_dir)"; do
            other=$other/$(stack_tansu_dirname)/bin/tansu
            if stack_tansu_ok "$other"; then
                printf '%s\n' "$other"
                return
            fi
        done
    fi
    if ! stack_tansu_ok "$bin"; then
        build=$(stack_tansu_build_dir)
        mkdir -p "$tools" "$build"
        # One build at a time, across checkouts (they share the build cache).
        (
            flock -w 3600 9 || stack_die "timed out waiting for another tansu build"
            if ! stack_tansu_ok "$bin"; then stack_tansu_build "$dir"; fi
        ) 9>"$build/.lock"
    fi
    stack_tansu_ok "$bin" || stack_die "$bin is not tansu $STACK_TANSU_VERSION with the current patches"
    printf '%s\n' "$bin"
}

# True when the pidfile names a live tansu process.
stack_tansu_running() {
    local pidfile=$1 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'tansu'
}

stack_start_tansu() {
    local port=${1:?usage: start-tansu PORT LOGFILE [PIDFILE]} logfile=${2:?usage: start-tansu PORT LOGFILE [PIDFILE]}
    local pidfile bin pid
    logfile=$(stack_abspath "$logfile")
    pidfile=$(stack_abspath "${3:-${logfile%.log}.pid}")
    mkdir -p "$(dirname "$logfile")" "$(dirname "$pidfile")"
    if stack_tansu_running "$pidfile"; then
        stack_log "tansu already running (pid $(<"$pidfile"))"
        stack_wait_port "$port" 30
        return
    fi
    bin=$(stack_ensure_tansu)
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        stack_die "port $port is already in use"
    fi
    local storage=${TANSU_STORAGE_ENGINE:-memory://tansu/}
    stack_log "starting tansu on 127.0.0.1:$port, storage ${storage%%\?*} (log: $logfile)"
    # cwd /: tansu loads a .env from its working directory and its parents. setsid (when this shell has
    # no job control, so that setsid execs in place and $! stays tansu's pid): a Ctrl-C in the terminal
    # must not kill the broker under the services; whoever started it stops it.
    local detach=()
    if [[ $- != *m* ]] && command -v setsid >/dev/null 2>&1; then detach=(setsid); fi
    (cd / && exec "${detach[@]}" "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine "$storage") \
        </dev/null >>"$logfile" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$pidfile"
    local deadline=$((SECONDS + 60))
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
            tail -n 20 "$logfile" >&2 || true
            kill "$pid" 2>/dev/null || true
            rm -f "$pidfile"
            stack_die "tansu did not start on port $port"
        fi
        sleep 0.1
    done
}

# The database of tansu's postgres storage engine in the cluster on PG_PORT (started by start-postgres):
# role tansu (trust authentication, like the others), DATABASE owned by it, and the engine's tables, which
# tansu does not create itself (scripts/tansu-patches/postgres-schema.sql; idempotent). Prints the URL for
# TANSU_STORAGE_ENGINE.
stack_tansu_database() {
    local port=${1:?usage: tansu-database PG_PORT [DATABASE]} db=${2:-tansu} bindir
    [[ $db =~ ^[a-z_][a-z0-9_]*$ ]] || stack_die "tansu-database: '$db' is not a plain lower-case database name"
    bindir=$(stack_ensure_postgres)
    stack_pg_psql "$bindir" "$port" -d postgres >/dev/null <<SQL
SELECT 'CREATE ROLE tansu LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tansu')
\\gexec
SELECT 'CREATE DATABASE $db OWNER tansu' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db')
\\gexec
SQL
    PGOPTIONS="-c client_min_messages=warning" PGCONNECT_TIMEOUT=10 "$bindir/psql" -X -q -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$port" -U tansu -d "$db" -f "$STACK_TANSU_PATCHES/postgres-schema.sql" >/dev/null ||
        stack_die "creating the tables of tansu's postgres storage in database $db failed"
    printf 'postgres://tansu@127.0.0.1:%s/%s\n' "$port" "$db"
}

stack_stop_tansu() {
    local pidfile pid
    pidfile=$(stack_abspath "${1:-${TANSU_PIDFILE:-$STACK_REPO_ROOT/.data/tansu.pid}}")
    if stack_tansu_running "$pidfile"; then
        pid=$(<"$pidfile")
        stack_log "stopping tansu (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# ---------------------------------------------------------------------------------------------- reaper

# Stops the servers kept in DIR and its direct subdirectories (each may hold postgres/ and tansu.pid), then
# removes DIR, including clusters relocated to the temp dir (see stack_pg_datadir).
stack_clean_dir() {
    local dir=${1:?usage: clean-dir DIR} sub real
    [[ -d $dir ]] || return 0
    for sub in "$dir" "$dir"/*/; do
        sub=${sub%/}
        [[ -d $sub ]] || continue
        # The broker first: it may keep its data in that cluster.
        if [[ -e $sub/tansu.pid ]]; then stack_stop_tansu "$sub/tansu.pid" || true; fi
        if [[ -e $sub/postgres ]]; then
            stack_stop_postgres "$sub/postgres" immediate || true
            real=$(cd "$sub/postgres" 2>/dev/null && pwd -P) || real=""
            if [[ -n $real && -L $sub/postgres ]]; then rm -rf "$real" || true; fi
        fi
    done
    rm -rf "$dir" || true
}

stack_reap() {
    local pid=${1:?usage: reap PID DIR} dir=${2:?usage: reap PID DIR}
    [[ $pid =~ ^[1-9][0-9]*$ ]] || stack_die "reap: bad pid '$pid'"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
    stack_clean_dir "$dir"
}

# ---------------------------------------------------------------------------------------------- main

stack_main() {
    local cmd=${1:-help}
    shift || true
    case "$cmd" in
        ensure-postgres) stack_ensure_postgres "$@" ;;
        ensure-tansu) stack_ensure_tansu "$@" ;;
        tansu-path) stack_tansu_path "$@" ;;
        start-postgres) stack_start_postgres "$@" ;;
        stop-postgres) stack_stop_postgres "$@" ;;
        tansu-database) stack_tansu_database "$@" ;;
        start-tansu) stack_start_tansu "$@" ;;
        stop-tansu) stack_stop_tansu "$@" ;;
        wait-port) stack_wait_port "$@" ;;
        free-port) stack_free_port "$@" ;;
        start-with-free-port) stack_start_with_free_port "$@" ;;
        reap) stack_reap "$@" ;;
        clean-dir) stack_clean_dir "$@" ;;
        help | -h | --help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
        *) stack_die "unknown subcommand '$cmd' (try: help)" ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    stack_main "$@"
fi
