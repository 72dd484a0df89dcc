//! The deployment files cannot run here (no container engine), so they are kept right by reading them:
//! every YAML and JSON file parses; service names, ports, probes and binaries agree between the compose
//! file, the Prometheus configuration, the Kubernetes manifests and the Dockerfile; every `EVENTGATE_*`
//! variable they set is a real configuration key documented in `.env.example`, as is every variable the
//! code reads; every metric the alert rules and the dashboard use, and every alert, is documented in
//! `docs/OPERATIONS.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use eventgate_core::config::Config;
use eventgate_e2e::repo_root;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

const BINARIES: [&str; 3] = [
    "eventgate-ingest-api",
    "eventgate-stats-api",
    "eventgate-db-writer",
];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// All documents of a YAML file, with `<<` merge keys applied.
fn yaml_documents(path: &Path) -> Vec<Yaml> {
    serde_yaml_ng::Deserializer::from_str(&read(path))
        .map(|document| {
            let mut value = Yaml::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{}: bad merge key: {e}", path.display()));
            value
        })
        .collect()
}

fn yaml(path: &Path) -> Yaml {
    let mut documents = yaml_documents(path);
    assert_eq!(
        documents.len(),
        1,
        "{}: one document expected",
        path.display()
    );
    documents.remove(0)
}

fn files_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            found.extend(files_under(&path, extensions));
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.contains(&e))
        {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn string(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

fn port_of(listen: &str) -> u16 {
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {listen:?}"))
}

/// Every `EVENTGATE_<SECTION>__<KEY>` the configuration accepts, plus `EVENTGATE_CONFIG`.
fn config_variables() -> BTreeSet<String> {
    let defaults = serde_json::to_value(Config::default()).expect("config serializes");
    let mut variables = BTreeSet::from(["EVENTGATE_CONFIG".to_owned()]);
    for (section, keys) in defaults.as_object().expect("sections") {
        for key in keys.as_object().expect("keys").keys() {
            variables.insert(format!(
                "EVENTGATE_{}__{}",
                section.to_uppercase(),
                key.to_uppercase()
            ));
        }
    }
    variables
}

/// Variables `.env.example` documents (set or commented out).
fn documented_variables() -> BTreeSet<String> {
    read(&repo_root().join(".env.example"))
        .lines()
        .map(|line| line.trim_start_matches('#').trim())
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| {
            name.starts_with("EVENTGATE_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

fn assert_known_and_documented(where_: &str, variables: &BTreeSet<String>) {
    let known = config_variables();
    let documented = documented_variables();
    let unknown: Vec<_> = variables.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "{where_}: not configuration keys: {unknown:?}"
    );
    let undocumented: Vec<_> = variables.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "{where_}: not in .env.example: {undocumented:?}"
    );
}

/// The `eventgate_*` metric families a PromQL expression uses.
fn metric_families(expr: &str) -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("eventgate_") {
        let name: String = rest[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[start + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name)
            .to_owned();
        families.insert(family);
    }
    families
}

fn operations_doc() -> String {
    read(&repo_root().join("docs/OPERATIONS.md"))
}

#[test]
fn every_deploy_file_parses() {
    let root = repo_root();
    let mut yaml_files = files_under(&root.join("deploy"), &["yml", "yaml"]);
    yaml_files.push(root.join("docker-compose.yml"));
    assert!(yaml_files.len() >= 10, "{yaml_files:?}");
    for path in &yaml_files {
        let documents = yaml_documents(path);
        assert!(!documents.is_empty(), "{} is empty", path.display());
    }
    let json_files = files_under(&root.join("deploy"), &["json"]);
    assert!(!json_files.is_empty());
    for path in json_files {
        serde_json::from_str::<serde_json::Value>(&read(&path))
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
    }
}

#[test]
fn compose_prometheus_and_dockerfile_agree() {
    let root = repo_root();
    let compose = yaml(&root.join("docker-compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services.keys().map(string).collect();
    for required in [
        "kafka",
        "postgres-primary",
        "postgres-replica",
        "mail",
        "prometheus",
        "ingest-api",
        "stats-api",
        "db-writer",
    ] {
        assert!(names.contains(required), "compose has no {required}");
    }
    let dockerfile = read(&root.join("Dockerfile"));

    // The Prometheus jobs scrape the services where they listen.
    let prometheus = yaml(&root.join("deploy/prometheus/prometheus.yml"));
    let mut scraped: BTreeMap<String, u16> = BTreeMap::new();
    for job in prometheus["scrape_configs"].as_sequence().expect("jobs") {
        for target in job["static_configs"]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|c| c["targets"].as_sequence().expect("targets"))
        {
            let target = string(target);
            let (host, port) = target.split_once(':').expect("host:port");
            scraped.insert(host.to_owned(), port.parse().expect("port"));
        }
        for sd in job["dns_sd_configs"].as_sequence().into_iter().flatten() {
            let port: u16 = string(&sd["port"]).parse().expect("port");
            for name in sd["names"].as_sequence().expect("names") {
                scraped.insert(string(name), port);
            }
        }
    }
    let rule_files: Vec<String> = prometheus["rule_files"]
        .as_sequence()
        .expect("rule files")
        .iter()
        .map(string)
        .collect();
    let prometheus_mounts: Vec<String> = services[&Yaml::from("prometheus")]["volumes"]
        .as_sequence()
        .expect("prometheus volumes")
        .iter()
        .map(string)
        .collect();
    for rule_file in &rule_files {
        assert!(
            prometheus_mounts
                .iter()
                .any(|m| m.ends_with(&format!(":{rule_file}:ro"))),
            "{rule_file} is not mounted into Prometheus"
        );
    }

    let mut variables = BTreeSet::new();
    for (service, section, binary) in [
        ("ingest-api", "INGEST", "eventgate-ingest-api"),
        ("stats-api", "STATS", "eventgate-stats-api"),
        ("db-writer", "WRITER", "eventgate-db-writer"),
    ] {
        let definition = &services[&Yaml::from(service)];
        assert_eq!(string(&definition["command"][0]), binary, "{service}");
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "{binary} not built"
        );
        let environment = definition["environment"].as_mapping().expect("environment");
        variables.extend(environment.keys().map(string));
        let listen = string(&environment[&Yaml::from(format!("EVENTGATE_{section}__LISTEN"))]);
        let port = port_of(&listen);
        assert!(
            listen.starts_with("0.0.0.0:"),
            "{service} must listen beyond localhost"
        );
        assert_eq!(
            scraped.get(service),
            Some(&port),
            "{service}: Prometheus target"
        );
        let health = definition["healthcheck"]["test"]
            .as_sequence()
            .expect("healthcheck")
            .iter()
            .map(string)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            health.contains(&format!("127.0.0.1:{port}/health/ready")),
            "{service}: {health}"
        );
        if service != "db-writer" {
            let published = string(&definition["ports"][0]);
            assert!(
                published.ends_with(&format!(":{port}:{port}")),
                "{service}: {published}"
            );
        }
        let grace = string(&definition["stop_grace_period"]);
        let timeout_ms: u64 = string(&environment[&Yaml::from("EVENTGATE_SHUTDOWN__TIMEOUT_MS")])
            .parse()
            .expect("timeout");
        let grace_secs: u64 = grace.trim_end_matches('s').parse().expect("seconds");
        assert!(
            grace_secs * 1000 > timeout_ms,
            "{service}: grace {grace} too short"
        );
    }
    assert_known_and_documented("docker-compose.yml", &variables);
    // The stats-api reads from the replica, never from the primary.
    let stats_url = string(
        &services[&Yaml::from("stats-api")]["environment"]
            [&Yaml::from("EVENTGATE_STATS__DATABASE_URL")],
    );
    assert!(stats_url.contains("@postgres-replica:"), "{stats_url}");

    // Grafana loads the dashboards from where the provider looks.
    let provider = yaml(&root.join("deploy/grafana/provisioning/dashboards/eventgate.yml"));
    let path = string(&provider["providers"][0]["options"]["path"]);
    let grafana_mounts: Vec<String> = services[&Yaml::from("grafana")]["volumes"]
        .as_sequence()
        .expect("grafana volumes")
        .iter()
        .map(string)
        .collect();
    assert!(
        grafana_mounts
            .iter()
            .any(|m| m.starts_with("./deploy/grafana/dashboards:") && m.contains(&path)),
        "{grafana_mounts:?} vs {path}"
    );
    // Dockerfile variables are configuration keys too.
    let dockerfile_variables: BTreeSet<String> = dockerfile
        .split(|c: char| c.is_whitespace() || c == '=')
        .filter(|word| {
            word.starts_with("EVENTGATE_")
                && word
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect();
    assert_known_and_documented("Dockerfile", &dockerfile_variables);
}

#[test]
fn kubernetes_manifests_are_consistent() {
    let dir = repo_root().join("deploy/kubernetes");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(string)
        .collect();
    let present: BTreeSet<String> = files_under(&dir, &["yaml", "yml"])
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .filter(|name| name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization resources");

    let mut objects: Vec<Yaml> = Vec::new();
    for name in &listed {
        objects.extend(yaml_documents(&dir.join(name)));
    }
    let find = |kind: &str, name: &str| -> &Yaml {
        objects
            .iter()
            .find(|o| {
                o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let config = find("ConfigMap", "eventgate-config")["data"]
        .as_mapping()
        .expect("config data")
        .clone();
    let secret = find("Secret", "eventgate-secrets")["stringData"]
        .as_mapping()
        .expect("secret data")
        .clone();
    let mut variables: BTreeSet<String> = config.keys().chain(secret.keys()).map(string).collect();
    let shutdown_ms: u64 = string(&config[&Yaml::from("EVENTGATE_SHUTDOWN__TIMEOUT_MS")])
        .parse()
        .expect("timeout");
    let partitions: u64 = string(&config[&Yaml::from("EVENTGATE_KAFKA__PARTITIONS")])
        .parse()
        .expect("partitions");

    for (name, section) in [
        ("ingest-api", "INGEST"),
        ("stats-api", "STATS"),
        ("db-writer", "WRITER"),
    ] {
        let deployment = find("Deployment", name);
        let spec = &deployment["spec"]["template"]["spec"];
        let grace: u64 = string(&spec["terminationGracePeriodSeconds"])
            .parse()
            .expect("grace");
        assert!(
            grace * 1000 > shutdown_ms,
            "{name}: grace period below the shutdown timeout"
        );
        let container = &spec["containers"][0];
        let binary = string(&container["command"][0]);
        assert!(BINARIES.contains(&binary.as_str()), "{name}: {binary}");
        assert_eq!(binary, format!("eventgate-{name}"));
        let env = container["env"].as_sequence().expect("env");
        variables.extend(env.iter().map(|e| string(&e["name"])));
        for entry in env {
            if let Some(reference) = entry["valueFrom"]["secretKeyRef"].as_mapping() {
                let key = &reference[&Yaml::from("key")];
                assert!(secret.contains_key(key), "{name}: secret has no {key:?}");
            }
        }
        let listen = env
            .iter()
            .find(|e| string(&e["name"]) == format!("EVENTGATE_{section}__LISTEN"))
            .map(|e| string(&e["value"]))
            .unwrap_or_else(|| panic!("{name}: no listen address"));
        let port = port_of(&listen);
        assert_eq!(
            string(&container["ports"][0]["containerPort"]),
            port.to_string()
        );
        assert_eq!(string(&container["ports"][0]["name"]), "http");
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            string(&annotations["prometheus.io/port"]),
            port.to_string(),
            "{name}"
        );
        assert_eq!(string(&annotations["prometheus.io/path"]), "/metrics");
        assert_eq!(
            string(&container["readinessProbe"]["httpGet"]["path"]),
            "/health/ready"
        );
        assert_eq!(
            string(&container["livenessProbe"]["httpGet"]["path"]),
            "/health/live"
        );
        let service = find("Service", name);
        assert_eq!(
            string(&service["spec"]["ports"][0]["port"]),
            port.to_string(),
            "{name}"
        );
        assert_eq!(string(&service["spec"]["ports"][0]["targetPort"]), "http");
        assert_eq!(
            service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
            "{name}: Service selects the Deployment's pods"
        );
    }
    let hpa = find("HorizontalPodAutoscaler", "db-writer");
    assert_eq!(string(&hpa["spec"]["scaleTargetRef"]["name"]), "db-writer");
    assert_eq!(
        string(&hpa["spec"]["maxReplicas"]),
        partitions.to_string(),
        "more writers than partitions would idle"
    );
    assert_known_and_documented("deploy/kubernetes", &variables);
}

#[test]
fn every_variable_the_code_reads_is_documented() {
    let documented = documented_variables();
    let mut read_by_code = BTreeSet::new();
    let crates = repo_root().join("crates");
    for path in files_under(&crates, &["rs"]) {
        // Production code only: not the test harnesses, not integration tests, not the unit-test modules
        // at the end of a file (they name mistyped variables on purpose).
        let relative = path.strip_prefix(&crates).expect("under crates");
        if relative.starts_with("test-support")
            || relative.starts_with("e2e")
            || relative.components().any(|c| c.as_os_str() == "tests")
        {
            continue;
        }
        let text = read(&path);
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let mut rest = code;
        while let Some(start) = rest.find("\"EVENTGATE_") {
            let name: String = rest[start + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[start + 1 + name.len()..];
            // The prefix itself (figment's Env::prefixed) and the test harness's own variables.
            if name != "EVENTGATE_" && !name.starts_with("EVENTGATE_TEST_") && name.contains("__")
                || name == "EVENTGATE_CONFIG"
            {
                read_by_code.insert(name);
            }
        }
    }
    assert!(read_by_code.contains("EVENTGATE_CONFIG"));
    let missing: Vec<_> = read_by_code.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "read by the code, not in .env.example: {missing:?}"
    );
    // And .env.example names nothing the configuration would refuse.
    let documented_config: BTreeSet<String> = documented
        .iter()
        .filter(|name| name.contains("__") || *name == "EVENTGATE_CONFIG")
        .cloned()
        .collect();
    let known = config_variables();
    let stale: Vec<_> = documented_config.difference(&known).collect();
    assert!(
        stale.is_empty(),
        ".env.example names unknown keys: {stale:?}"
    );
}

#[test]
fn alerts_and_dashboard_use_documented_metrics() {
    let root = repo_root();
    let operations = operations_doc();
    let undocumented = |families: BTreeSet<String>| -> Vec<String> {
        families
            .into_iter()
            .filter(|family| !operations.contains(&format!("`{family}`")))
            .collect()
    };

    let alerts = yaml(&root.join("deploy/prometheus/alerts.yml"));
    let mut alert_names = BTreeSet::new();
    for group in alerts["groups"].as_sequence().expect("groups") {
        assert!(group["name"].is_string());
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = string(&rule["alert"]);
            let expr = string(&rule["expr"]);
            let families = metric_families(&expr);
            assert!(
                !families.is_empty() || expr.contains("up{"),
                "{name}: {expr}"
            );
            let missing = undocumented(families);
            assert!(
                missing.is_empty(),
                "{name} uses undocumented metrics {missing:?}"
            );
            let severity = string(&rule["labels"]["severity"]);
            assert!(
                ["warning", "critical"].contains(&severity.as_str()),
                "{name}"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name}: no summary"
            );
            assert!(
                operations.contains(&format!("`{name}`")),
                "alert {name} is not explained in docs/OPERATIONS.md"
            );
            assert!(alert_names.insert(name.clone()), "{name} defined twice");
        }
    }
    for required in [
        "EventgateWriterLagHigh",
        "EventgateDeadLetters",
        "EventgateHigh5xxRate",
        "EventgateNoEventsAccepted",
    ] {
        assert!(alert_names.contains(required), "missing alert {required}");
    }

    let dashboard: serde_json::Value = serde_json::from_str(&read(
        &root.join("deploy/grafana/dashboards/eventgate.json"),
    ))
    .expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "eventgate");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queried = BTreeSet::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}: no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let families = metric_families(expr);
            assert!(!families.is_empty(), "{}: {expr}", panel["title"]);
            queried.extend(families);
        }
    }
    let missing = undocumented(queried.clone());
    assert!(
        missing.is_empty(),
        "dashboard uses undocumented metrics {missing:?}"
    );
    for essential in [
        "eventgate_writer_consumer_lag",
        "eventgate_ingest_events_accepted_total",
        "eventgate_http_requests_total",
        "eventgate_writer_dead_letters_total",
    ] {
        assert!(
            queried.contains(essential),
            "dashboard does not show {essential}"
        );
    }
}

#[test]
fn operations_doc_lists_every_config_key() {
    let operations = operations_doc();
    let missing: Vec<String> = config_variables()
        .into_iter()
        .filter(|variable| !operations.contains(&format!("`{variable}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/OPERATIONS.md: {missing:?}");
}
