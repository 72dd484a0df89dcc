#!/usr/bin/env python3
"""Holds the scrape configurations, the manifests and the alert rules' unit tests together, where promtool
alone cannot (scripts/check-deploy.sh runs it after rendering deploy/kubernetes):

1. Kubernetes: the `kubernetes-pods` job of deploy/prometheus/prometheus-kubernetes.yml is applied, with
   Prometheus' relabelling rules, to the targets that pod discovery would produce for each rendered
   Deployment (one per container port, plus one per port-less container). Each eventgate pod must give
   exactly one target, on its `admin` port, path /metrics, with job="eventgate-<name>" — the job the
   alert rules select. (Debian's promtool is built without Kubernetes discovery, so it cannot load this
   file; the relabelling is checked here instead.)
2. Compose: deploy/prometheus/prometheus.yml names the same three jobs.
3. The rules' unit tests (deploy/prometheus/tests): the `up` series of alerts_kubernetes_test.yml carry
   exactly the label names that step 1 produced, those of alerts_compose_test.yml job and instance; each
   file makes every alert of alerts.yml fire at least once, and keeps EventgateHigh5xxRate quiet on a
   readiness 503.

    check_scrape.py RENDERED_YAML PROMETHEUS_DIR
"""

import re
import sys

import yaml

JOBS = {"eventgate-ingest-api", "eventgate-stats-api", "eventgate-db-writer"}
SERIES = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
GO_TEMPLATE = re.compile(r"\$\$|\$\{(\w+)\}|\$(\w+)")

failures = []


def fail(message):
    failures.append(message)


def sanitize(name):
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def expand(template, match):
    """Go's regexp.Expand, which Prometheus uses for `replacement` and `target_label`."""

    def group(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(2)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:
            value = None
        return value or ""

    return GO_TEMPLATE.sub(group, template)


def relabel(labels, configs):
    """Prometheus' relabelling (replace, keep, drop, labelmap, labeldrop, labelkeep); None when dropped."""
    labels = dict(labels)
    for config in configs:
        action = config.get("action", "replace")
        regex = re.compile(f"^(?:{config.get('regex', '(.*)')})$")
        separator = config.get("separator", ";")
        value = separator.join(labels.get(name, "") for name in config.get("source_labels", []))
        replacement = str(config.get("replacement", "$1"))
        if action == "replace":
            match = regex.match(value)
            if not match:
                continue
            target = expand(config["target_label"], match)
            result = expand(replacement, match)
            if result:
                labels[target] = result
            else:
                labels.pop(target, None)
        elif action == "keep":
            if not regex.match(value):
                return None
        elif action == "drop":
            if regex.match(value):
                return None
        elif action == "labelmap":
            for name, label_value in list(labels.items()):
                match = regex.match(name)
                if match:
                    labels[expand(replacement, match)] = label_value
        elif action == "labeldrop":
            labels = {k: v for k, v in labels.items() if not regex.match(k)}
        elif action == "labelkeep":
            labels = {k: v for k, v in labels.items() if regex.match(k)}
        else:
            raise SystemExit(f"check_scrape: relabel action {action} is not simulated here")
    return labels


def pod_targets(deployment, pod_ip, pod_name):
    """What Kubernetes pod discovery gives for one pod of the Deployment."""
    template = deployment["spec"]["template"]
    metadata, spec = template.get("metadata", {}), template["spec"]
    pod_labels = dict(metadata.get("labels") or {})
    pod_labels["pod-template-hash"] = pod_name.split("-")[-2]
    common = {
        "__meta_kubernetes_namespace": deployment["metadata"].get("namespace", "default"),
        "__meta_kubernetes_pod_name": pod_name,
        "__meta_kubernetes_pod_ip": pod_ip,
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_controller_kind": "ReplicaSet",
        "__meta_kubernetes_pod_node_name": "node-1",
    }
    for key, value in pod_labels.items():
        common[f"__meta_kubernetes_pod_label_{sanitize(key)}"] = value
        common[f"__meta_kubernetes_pod_labelpresent_{sanitize(key)}"] = "true"
    for key, value in (metadata.get("annotations") or {}).items():
        common[f"__meta_kubernetes_pod_annotation_{sanitize(key)}"] = str(value)
        common[f"__meta_kubernetes_pod_annotationpresent_{sanitize(key)}"] = "true"
    targets = []
    for init, containers in (("true", spec.get("initContainers") or []), ("false", spec["containers"])):
        for container in containers:
            base = dict(common)
            base["__meta_kubernetes_pod_container_name"] = container["name"]
            base["__meta_kubernetes_pod_container_init"] = init
            ports = container.get("ports") or []
            if not ports:
                targets.append(dict(base, __address__=pod_ip))
            for port in ports:
                targets.append(
                    dict(
                        base,
                        __address__=f"{pod_ip}:{port['containerPort']}",
                        __meta_kubernetes_pod_container_port_name=port.get("name", ""),
                        __meta_kubernetes_pod_container_port_number=str(port["containerPort"]),
                        __meta_kubernetes_pod_container_port_protocol=port.get("protocol", "TCP"),
                    )
                )
    return targets


def scrape(job, discovered):
    """The target labels Prometheus keeps (plus __address__ and __metrics_path__), deduplicated."""
    kept = {}
    for target in discovered:
        labels = dict(target, job=job["job_name"], __metrics_path__=job.get("metrics_path", "/metrics"))
        labels["__scheme__"] = job.get("scheme", "http")
        labels = relabel(labels, job.get("relabel_configs") or [])
        if labels is None or "__address__" not in labels:
            continue
        labels.setdefault("instance", labels["__address__"])
        final = {
            k: v for k, v in labels.items() if not k.startswith("__") or k in ("__address__", "__metrics_path__")
        }
        kept[tuple(sorted(final.items()))] = final
    return list(kept.values())


def parse_series(text):
    match = SERIES.match(text)
    if not match:
        raise SystemExit(f"check_scrape: cannot parse series {text!r}")
    labels = {}
    if match.group(2):
        rest = match.group(2)
        while rest.strip():
            m = MATCHER.match(rest)
            if not m:
                raise SystemExit(f"check_scrape: cannot parse labels of {text!r}")
            labels[m.group(1)] = m.group(2)
            rest = rest[m.end():]
    return match.group(1), labels


def check_kubernetes(rendered, prometheus_dir):
    with open(f"{prometheus_dir}/prometheus-kubernetes.yml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == "kubernetes-pods"]
    if len(jobs) != 1:
        fail("prometheus-kubernetes.yml: one job named kubernetes-pods expected")
        return {}
    label_names = {}
    deployments = [o for o in rendered if o.get("kind") == "Deployment"]
    for index, deployment in enumerate(deployments):
        name = deployment["metadata"]["name"]
        pod_name = f"{name}-5f6d7c8b9{index}-abcde"
        targets = scrape(jobs[0], pod_targets(deployment, f"10.244.{index}.7", pod_name))
        if len(targets) != 1:
            fail(f"{name}: {len(targets)} scrape targets per pod, one expected: {targets}")
            continue
        target = targets[0]
        containers = deployment["spec"]["template"]["spec"]["containers"]
        admin = [p["containerPort"] for c in containers for p in c.get("ports") or [] if p.get("name") == "admin"]
        expected = {
            "job": f"eventgate-{name}",
            "__address__": f"10.244.{index}.7:{admin[0] if admin else '?'}",
            "__metrics_path__": "/metrics",
            "namespace": deployment["metadata"].get("namespace"),
            "pod": pod_name,
        }
        for key, value in expected.items():
            if target.get(key) != value:
                fail(f"{name}: the kubernetes-pods job gives {key}={target.get(key)!r}, expected {value!r}")
        label_names[target["job"]] = {k for k in target if not k.startswith("__")}
        print(f"  {name}: job={target['job']} address={target['__address__']} path={target['__metrics_path__']}")
    if set(label_names) != JOBS:
        fail(f"Kubernetes scraping gives the jobs {sorted(label_names)}, the rules expect {sorted(JOBS)}")
    return label_names


def check_compose(prometheus_dir):
    with open(f"{prometheus_dir}/prometheus.yml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    if jobs != JOBS:
        fail(f"prometheus.yml names the jobs {sorted(jobs)}, the rules expect {sorted(JOBS)}")
    return {job: {"job", "instance"} for job in JOBS}


def check_rules_tests(prometheus_dir, expected_names):
    with open(f"{prometheus_dir}/alerts.yml", encoding="utf-8") as handle:
        alerts = {r["alert"] for g in yaml.safe_load(handle)["groups"] for r in g["rules"] if "alert" in r}
    for flavour, names in expected_names.items():
        path = f"{prometheus_dir}/tests/alerts_{flavour}_test.yml"
        with open(path, encoding="utf-8") as handle:
            tests = yaml.safe_load(handle)["tests"]
        fired, quiet_on_readiness = set(), False
        for test in tests:
            series = [parse_series(s["series"]) for s in test.get("input_series", [])]
            for metric, labels in series:
                job = labels.get("job")
                if job not in JOBS:
                    fail(f"{path}: series {metric} of job {job!r}, not one the scrape configurations give")
                elif metric == "up" and set(labels) != names.get(job, set()):
                    fail(
                        f"{path}: up{{job={job!r}}} has the labels {sorted(labels)}, "
                        f"the scrape configuration gives {sorted(names.get(job, set()))}"
                    )
            readiness_503 = any(
                l.get("route", "").startswith("/health") and l.get("status", "").startswith("5") for _, l in series
            )
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    fired.add(case["alertname"])
                elif case["alertname"] == "EventgateHigh5xxRate" and readiness_503:
                    quiet_on_readiness = True
        for alert in sorted(alerts - fired):
            fail(f"{path}: no test makes {alert} fire")
        if not quiet_on_readiness:
            fail(f"{path}: no test keeps EventgateHigh5xxRate quiet on readiness 503s")
        print(f"  {path}: {len(fired & alerts)}/{len(alerts)} alerts fire, 5xx quiet on readiness 503s")


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as handle:
        rendered = [o for o in yaml.safe_load_all(handle) if o]
    prometheus_dir = sys.argv[2]
    kubernetes = check_kubernetes(rendered, prometheus_dir)
    compose = check_compose(prometheus_dir)
    check_rules_tests(prometheus_dir, {"kubernetes": kubernetes, "compose": compose})
    for message in dict.fromkeys(failures):
        print(f"FAILED: {message}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
