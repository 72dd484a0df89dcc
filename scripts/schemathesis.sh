#!/usr/bin/env bash
# Installs schemathesis (PyPI), pinned in scripts/schemathesis-requirements.txt, into its own venv
# ${XDG_CACHE_HOME:-~/.cache}/eventgate/schemathesis/venv (python3-venv from Debian when `python3 -m venv`
# is not available; never the system Python), and prints the path of its `schemathesis` binary.
# `make test` (scripts/test.sh) exports it as EVENTGATE_TEST_SCHEMATHESIS for crates/e2e/tests/openapi.rs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/eventgate/schemathesis
REQUIREMENTS=$ROOT/scripts/schemathesis-requirements.txt
VENV=$CACHE/venv

as_root() { if ((EUID == 0)); then "$@"; else sudo "$@"; fi; }
apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "$@" >&2
}

if ! python=$(command -v python3); then
    apt_install python3 python3-venv
    python=$(command -v python3)
fi
stamp="$(sha256sum "$REQUIREMENTS" | cut -c1-16) $("$python" --version 2>&1) $python"
if [[ ! -x $VENV/bin/schemathesis || $(cat "$VENV/.stamp" 2>/dev/null) != "$stamp" ]] ||
    ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
    printf '\n==> schemathesis: a venv in %s (scripts/schemathesis-requirements.txt)\n' "$VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    if ! "$python" -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        apt_install python3-venv
        "$python" -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-input -r "$REQUIREMENTS" >&2
    echo "$stamp" >"$VENV/.stamp"
fi
echo "$VENV/bin/schemathesis"
