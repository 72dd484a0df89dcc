#!/usr/bin/env bash
# The deployment files checked by the tools made for them (run by `make test` with the lint step, and on
# its own: `bash scripts/check-deploy.sh`). Any failure fails the run.
#
#   promtool check config   deploy/prometheus/prometheus.yml (compose) and prometheus-kubernetes.yml
#   promtool check rules    deploy/prometheus/alerts.yml
#   promtool test rules     deploy/prometheus/tests/*.yml (every alert, compose and Kubernetes label sets)
#   kubernetes-validate     the rendered deploy/kubernetes kustomization, strict, against the OpenAPI
#                           schemas of K8S_VERSIONS (shipped inside the package: no network)
#   check_scrape.py         the Kubernetes relabelling applied to the rendered pods: each pod scraped once,
#                           on its admin port, as the job the alerts select; the rules' tests use those
#                           labels and make every alert fire
#   check-jsonschema        docker-compose.yml against the compose-spec schema (vendored in the package)
#
# What is missing is installed on first use, nothing system-wide but what apt brings:
#   - promtool: taken out of Debian's `prometheus` package (apt-get download + dpkg-deb; the package is not
#     installed, so no Prometheus server is started) into $CACHE/prometheus;
#   - the Python tools, pinned in scripts/deploy-check-requirements.txt, into the venv $CACHE/venv
#     (python3-venv from Debian when `python3 -m venv` is not available).
# CACHE is ${XDG_CACHE_HOME:-~/.cache}/eventgate/deploy-check; the rendered manifests go to
# target/deploy-check/ (rendered with the placeholders of secrets.env.example, never the real secrets.env).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/eventgate/deploy-check
REQUIREMENTS=$ROOT/scripts/deploy-check-requirements.txt
WORK=$ROOT/target/deploy-check
# The oldest and the newest Kubernetes versions the manifests are validated against.
read -r -a K8S_VERSIONS <<<"${K8S_VERSIONS:-1.28.0 1.37.0}"

step() { printf '\n==> %s\n' "$*" >&2; }
as_root() { if ((EUID == 0)); then "$@"; else sudo "$@"; fi; }

apt_lists_fresh=
apt_update_once() {
    if [[ -z $apt_lists_fresh ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        apt_lists_fresh=1
    fi
}
apt_install() {
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "$@" >&2
}

ensure_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        command -v promtool
        return
    fi
    local promtool=$CACHE/prometheus/usr/bin/promtool
    if [[ ! -x $promtool ]]; then
        step "promtool: extracting it from Debian's prometheus package" >&2
        local download
        download=$(mktemp -d)
        chmod a+rwx "$download" # apt-get download fetches as the _apt user
        if ! (cd "$download" && apt-get download prometheus >&2 2>/dev/null); then
            apt_update_once
            (cd "$download" && apt-get download prometheus >&2)
        fi
        mkdir -p "$CACHE/prometheus"
        dpkg-deb --fsys-tarfile "$download"/prometheus_*.deb | tar -x -C "$CACHE/prometheus" ./usr/bin/promtool
        rm -rf "$download"
    fi
    echo "$promtool"
}

ensure_venv() {
    local venv=$CACHE/venv python stamp
    if ! python=$(command -v python3); then
        apt_install python3 python3-venv
        python=$(command -v python3)
    fi
    stamp="$(sha256sum "$REQUIREMENTS" | cut -c1-16) $("$python" --version 2>&1) $python"
    if [[ -x $venv/bin/python && $(cat "$venv/.stamp" 2>/dev/null) == "$stamp" ]] &&
        "$venv/bin/python" -c 'import yaml, kubernetes_validate, check_jsonschema' 2>/dev/null; then
        return
    fi
    step "Python tools: a venv in $venv (scripts/deploy-check-requirements.txt)"
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        apt_install python3-venv
        "$python" -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check --no-input -r "$REQUIREMENTS" >&2
    echo "$stamp" >"$venv/.stamp"
}

PROMTOOL=$(ensure_promtool)
ensure_venv
PY=$CACHE/venv/bin
rm -rf "$WORK"
mkdir -p "$WORK"

step "promtool ($("$PROMTOOL" --version 2>&1 | head -1)): check rules, check config, test rules"
"$PROMTOOL" check rules deploy/prometheus/alerts.yml
"$PROMTOOL" check config deploy/prometheus/prometheus.yml
# Debian builds Prometheus without Kubernetes discovery, so its promtool refuses kubernetes_sd_configs:
# then the file is checked with that one block swapped for an empty static one (the relabelling, the rest
# of the job, is checked by check_scrape.py below).
if ! "$PROMTOOL" check config deploy/prometheus/prometheus-kubernetes.yml >"$WORK/promtool.log" 2>&1; then
    if ! grep -q 'field kubernetes_sd_configs not found' "$WORK/promtool.log"; then
        cat "$WORK/promtool.log" >&2
        exit 1
    fi
    echo "(this promtool has no Kubernetes discovery: checking prometheus-kubernetes.yml without it)" >&2
    "$PY/python" - deploy/prometheus/prometheus-kubernetes.yml "$WORK/prometheus-kubernetes.yml" <<'PYTHON'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
for job in config["scrape_configs"]:
    if job.pop("kubernetes_sd_configs", None) is not None:
        job["static_configs"] = [{"targets": []}]
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
PYTHON
    cp deploy/prometheus/alerts.yml "$WORK/alerts.yml"
    "$PROMTOOL" check config "$WORK/prometheus-kubernetes.yml"
fi
"$PROMTOOL" test rules deploy/prometheus/tests/*.yml

step "deploy/kubernetes rendered (deploy/check/render_kustomization.py, secrets.env.example's placeholders)"
"$PY/python" deploy/check/render_kustomization.py deploy/kubernetes --example-env >"$WORK/kubernetes.yaml"
grep -E '^kind: ' "$WORK/kubernetes.yaml" | sort | uniq -c >&2

for version in "${K8S_VERSIONS[@]}"; do
    step "kubernetes-validate --strict -k $version"
    "$PY/kubernetes-validate" --strict --quiet -k "$version" "$WORK/kubernetes.yaml"
    echo "every object valid against Kubernetes $version" >&2
done

step "scrape configurations vs manifests vs the rules' tests (deploy/check/check_scrape.py)"
"$PY/python" deploy/check/check_scrape.py "$WORK/kubernetes.yaml" deploy/prometheus

step "docker-compose.yml against the compose-spec schema (check-jsonschema)"
"$PY/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

step "deploy checks passed"
