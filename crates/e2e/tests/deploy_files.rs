//! The deployment files cannot run here (no container engine), so they are kept right by reading them:
//! every YAML and JSON file parses; service names, ports, probes and binaries agree between the compose
//! file, the Prometheus configuration, the Kubernetes manifests and the Dockerfile; every `EVENTGATE_*`
//! variable they set is a real configuration key documented in `.env.example`, as is every variable the
//! code reads; every metric the alert rules and the dashboard use, and every alert, is documented in
//! `docs/OPERATIONS.md`. And the deploy defects once found stay fixed: probes and scraping on the admin
//! port, which no public Service publishes; no Secret applied from the repository; `enableServiceLinks:
//! false`; migrations only as the schema owner; start-up budgets; grace periods that hold the worst-case
//! stop computed from the code. (scripts/check-deploy.sh adds promtool and the schema validators.)

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

/// Prefixes of the variables that set entries of a free-form table (a setting whose default is a map,
/// such as `kafka.client`, passed through as `EVENTGATE_KAFKA__CLIENT__<PROPERTY>`).
fn open_table_prefixes() -> BTreeSet<String> {
    let defaults = serde_json::to_value(Config::default()).expect("config serializes");
    let mut prefixes = BTreeSet::new();
    for (section, keys) in defaults.as_object().expect("sections") {
        for (key, value) in keys.as_object().expect("keys") {
            if value.is_object() {
                prefixes.insert(format!(
                    "EVENTGATE_{}__{}__",
                    section.to_uppercase(),
                    key.to_uppercase()
                ));
            }
        }
    }
    prefixes
}

/// Whether the configuration accepts the variable: one of its keys, or an entry of a free-form table.
fn is_config_variable(name: &str, known: &BTreeSet<String>, open: &BTreeSet<String>) -> bool {
    known.contains(name)
        || open
            .iter()
            .any(|prefix| name.len() > prefix.len() && name.starts_with(prefix.as_str()))
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
    let open = open_table_prefixes();
    let documented = documented_variables();
    let unknown: Vec<_> = variables
        .iter()
        .filter(|name| !is_config_variable(name, &known, &open))
        .collect();
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

/// The number written right after `prefix` in a source file of the repository.
fn number_after(path: &str, prefix: &str) -> u64 {
    let text = read(&repo_root().join(path));
    let start = text.find(prefix).unwrap_or_else(|| {
        panic!(
            "{path}: `{prefix}` not found. The services' shutdown path changed: recompute their \
             worst-case stop (docs/OPERATIONS.md, \"Deploying: grace periods\"), the grace periods of \
             deploy/kubernetes and docker-compose.yml, and this test"
        )
    });
    text[start + prefix.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: no number after `{prefix}`: {e}"))
}

/// Exporting buffered spans at exit (`Telemetry::shutdown`), every service.
fn span_export_ms() -> u64 {
    number_after(
        "crates/core/src/telemetry.rs",
        "shutdown_with_timeout(Duration::from_secs(",
    ) * 1000
}

/// Closing the APIs' admin listener after the public one (`core::http::server`: `stop(false)`, without
/// waiting for its requests): a second allowed.
const ADMIN_LISTENER_CLOSE_MS: u64 = 1000;

/// The APIs' worst-case stop: everything up to the producer's flush is inside the shutdown timeout
/// (`core::shutdown::serve_until`, the ingest-api's flush with what is left), then the admin listener and
/// the spans.
fn api_worst_case_stop_ms(timeout_ms: u64) -> u64 {
    timeout_ms + ADMIN_LISTENER_CLOSE_MS + span_export_ms()
}

/// What the writer's stop adds to the shutdown timeout in the worst case (Postgres unreachable), from its
/// code: the write attempts in flight at SIGTERM and at the end of the timeout (each ends within a pool
/// checkout), leaving the group, the monitor's round in progress (a broker and a database probe), recording
/// the clean stop, the queued emails, the health listener, the spans. docs/OPERATIONS.md has the same sum.
fn writer_fixed_waits_ms(probe_interval_ms: u64) -> u64 {
    let checkout = number_after(
        "crates/core/src/db/pool.rs",
        "connection_timeout: Duration::from_secs(",
    ) * 1000;
    let leave = number_after(
        "crates/db-writer/src/writer.rs",
        "const LEAVE_GRACE: Duration = Duration::from_secs(",
    ) * 1000;
    let alerts = number_after(
        "crates/db-writer/src/writer.rs",
        "const ALERTS_GRACE: Duration = Duration::from_secs(",
    ) * 1000;
    let min_probe = number_after(
        "crates/db-writer/src/monitor.rs",
        "const MIN_PROBE_TIMEOUT: Duration = Duration::from_secs(",
    ) * 1000;
    let listener = number_after("crates/db-writer/src/health.rs", ".shutdown_timeout(") * 1000;
    let probes = 2 * probe_interval_ms.max(min_probe);
    2 * checkout + leave + probes + 2 * alerts + listener + span_export_ms()
}

/// The writer's written arithmetic (manifest comments, docs) names the fixed waits as `T + N s`.
fn assert_arithmetic_written(fixed_ms: u64) {
    let root = repo_root();
    let written = format!("T + {} s", fixed_ms / 1000);
    for path in [
        "deploy/kubernetes/db-writer.yaml",
        "docs/OPERATIONS.md",
        "docker-compose.yml",
    ] {
        let text = read(&root.join(path)).replace("\n#", "").replace("  ", " ");
        assert!(
            text.contains(&written),
            "{path}: the writer's worst-case stop is {written} by the code; the arithmetic written there \
             is out of date"
        );
    }
}

/// The variable `eventgate migrate` reads the schema owner's URL from (its `--database-url`).
fn migrate_url_variable() -> String {
    let cli = read(&repo_root().join("crates/cli/src/main.rs"));
    let migrate = cli
        .find("Migrate {")
        .expect("crates/cli/src/main.rs: no Migrate command");
    let rest = &cli[migrate..];
    let start = rest.find("env = \"").expect("Migrate: no env for its URL") + "env = \"".len();
    rest[start..]
        .split('"')
        .next()
        .expect("variable name")
        .to_owned()
}

/// A compose mount `host:container[:ro]`, split.
fn mount(spec: &str) -> (&str, &str) {
    let mut parts = spec.split(':');
    (
        parts.next().expect("host path"),
        parts.next().expect("container path"),
    )
}

/// The `KEY=value` lines of an env file (kustomize's rules: `#` comments and blank lines skipped).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .map(str::trim_start)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: {line:?} is not KEY=value", path.display()));
            (key.to_owned(), value.to_owned())
        })
        .collect()
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
        "migrate",
        "ingest-api",
        "stats-api",
        "db-writer",
    ] {
        assert!(names.contains(required), "compose has no {required}");
    }
    let dockerfile = read(&root.join("Dockerfile"));

    // The Prometheus jobs scrape the services' admin ports.
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
    // Rule files are mounted where the configuration looks for them (relative paths: beside it).
    let prometheus_mounts: Vec<String> = services[&Yaml::from("prometheus")]["volumes"]
        .as_sequence()
        .expect("prometheus volumes")
        .iter()
        .map(string)
        .collect();
    let config_dir = prometheus_mounts
        .iter()
        .map(|m| mount(m.as_str()))
        .find(|(host, _)| *host == "./deploy/prometheus/prometheus.yml")
        .map(|(_, container)| container.rsplit_once('/').expect("a directory").0)
        .expect("prometheus.yml is not mounted into Prometheus");
    for rule_file in prometheus["rule_files"].as_sequence().expect("rule files") {
        let rule_file = string(rule_file);
        assert!(
            !rule_file.starts_with('/'),
            "{rule_file}: relative, so that promtool finds it beside prometheus.yml"
        );
        assert!(root.join("deploy/prometheus").join(&rule_file).is_file());
        let expected = (
            format!("./deploy/prometheus/{rule_file}"),
            format!("{config_dir}/{rule_file}"),
        );
        assert!(
            prometheus_mounts
                .iter()
                .map(|m| mount(m.as_str()))
                .any(|(host, container)| (host, container)
                    == (expected.0.as_str(), expected.1.as_str())),
            "{rule_file} is not mounted into Prometheus beside prometheus.yml"
        );
    }

    let defaults = Config::default();
    let mut variables = BTreeSet::new();
    for (service, section, binary, admin_key) in [
        (
            "ingest-api",
            "INGEST",
            "eventgate-ingest-api",
            "EVENTGATE_INGEST__ADMIN_LISTEN",
        ),
        (
            "stats-api",
            "STATS",
            "eventgate-stats-api",
            "EVENTGATE_STATS__ADMIN_LISTEN",
        ),
        // The writer's only listener is its admin port.
        (
            "db-writer",
            "WRITER",
            "eventgate-db-writer",
            "EVENTGATE_WRITER__LISTEN",
        ),
    ] {
        let definition = &services[&Yaml::from(service)];
        assert_eq!(string(&definition["command"][0]), binary, "{service}");
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "{binary} not built"
        );
        let environment = definition["environment"].as_mapping().expect("environment");
        variables.extend(environment.keys().map(string));
        let admin_listen = string(&environment[&Yaml::from(admin_key)]);
        let admin_port = port_of(&admin_listen);
        assert!(
            admin_listen.starts_with("0.0.0.0:"),
            "{service}: the admin port must listen beyond localhost, for Prometheus"
        );
        assert_eq!(
            scraped.get(service),
            Some(&admin_port),
            "{service}: Prometheus scrapes the admin port"
        );
        let health = definition["healthcheck"]["test"]
            .as_sequence()
            .expect("healthcheck")
            .iter()
            .map(string)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            health.contains(&format!("127.0.0.1:{admin_port}/health/ready")),
            "{service}: {health}"
        );
        let published: Vec<String> = definition["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(string)
            .collect();
        assert!(
            published
                .iter()
                .all(|p| !p.ends_with(&format!(":{admin_port}"))),
            "{service}: the admin port is published: {published:?}"
        );
        if service != "db-writer" {
            let listen = string(&environment[&Yaml::from(format!("EVENTGATE_{section}__LISTEN"))]);
            let port = port_of(&listen);
            assert_ne!(port, admin_port, "{service}: API and admin on one port");
            assert!(listen.starts_with("0.0.0.0:"), "{service}: {listen}");
            assert!(
                published.len() == 1 && published[0].ends_with(&format!(":{port}:{port}")),
                "{service}: {published:?}"
            );
        }
        let grace = string(&definition["stop_grace_period"]);
        let timeout_ms: u64 = string(&environment[&Yaml::from("EVENTGATE_SHUTDOWN__TIMEOUT_MS")])
            .parse()
            .expect("timeout");
        let grace_ms = grace.trim_end_matches('s').parse::<u64>().expect("seconds") * 1000;
        let worst_ms = if service == "db-writer" {
            timeout_ms + writer_fixed_waits_ms(defaults.alerts.probe_interval_ms)
        } else {
            api_worst_case_stop_ms(timeout_ms)
        };
        assert!(
            grace_ms >= worst_ms,
            "{service}: stop_grace_period {grace} is below the worst-case stop, {worst_ms} ms"
        );
    }

    // Migrations run once, as the schema owner, before the writers; the writers never migrate.
    let migrate = &services[&Yaml::from("migrate")];
    assert_eq!(string(&migrate["command"][0]), "eventgate");
    assert_eq!(string(&migrate["command"][1]), "migrate");
    let migrate_env = migrate["environment"].as_mapping().expect("environment");
    variables.extend(migrate_env.keys().map(string));
    let migrate_url = migrate_url_variable();
    let owner_url = string(&migrate_env[&Yaml::from(migrate_url.as_str())]);
    assert!(
        owner_url.starts_with("postgres://eventgate:"),
        "{owner_url}"
    );
    let writer = &services[&Yaml::from("db-writer")];
    let writer_env = writer["environment"].as_mapping().expect("environment");
    assert_eq!(
        string(&writer_env[&Yaml::from("EVENTGATE_WRITER__RUN_MIGRATIONS")]),
        "false"
    );
    assert!(
        !writer_env.contains_key(migrate_url.as_str()),
        "the writer gets the owner's URL"
    );
    for dependent in ["db-writer", "stats-api"] {
        assert_eq!(
            string(&services[&Yaml::from(dependent)]["depends_on"]["migrate"]["condition"]),
            "service_completed_successfully",
            "{dependent} must wait for the migrations"
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
    let root = repo_root();
    let dir = root.join("deploy/kubernetes");
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

    // The Secret is never applied from the repository: generated from the operator's git-ignored
    // secrets.env (a missing file stops `kubectl apply -k`), whose template only holds placeholders.
    assert!(
        !objects.iter().any(|o| o["kind"].as_str() == Some("Secret")),
        "a Secret in the resources would overwrite the real one on every apply"
    );
    let generators = kustomization["secretGenerator"]
        .as_sequence()
        .expect("secretGenerator");
    assert_eq!(generators.len(), 1);
    assert_eq!(string(&generators[0]["name"]), "eventgate-secrets");
    let envs: Vec<String> = generators[0]["envs"]
        .as_sequence()
        .expect("envs")
        .iter()
        .map(string)
        .collect();
    assert_eq!(envs, ["secrets.env"]);
    assert!(
        read(&root.join(".gitignore"))
            .lines()
            .any(|l| l.trim() == "/deploy/kubernetes/secrets.env"),
        "secrets.env must be git-ignored"
    );
    let secret = env_file(&dir.join("secrets.env.example"));
    for (key, value) in &secret {
        if key.ends_with("_URL") || key.ends_with("PASSWORD") || key.ends_with("SECRET") {
            assert!(
                value.contains("change-me"),
                "secrets.env.example: {key} must hold a placeholder the services refuse"
            );
        }
    }

    let config = find("ConfigMap", "eventgate-config")["data"]
        .as_mapping()
        .expect("config data")
        .clone();
    let mut variables: BTreeSet<String> = config
        .keys()
        .map(string)
        .chain(secret.keys().cloned())
        .collect();
    let shared_timeout_ms: u64 = string(&config[&Yaml::from("EVENTGATE_SHUTDOWN__TIMEOUT_MS")])
        .parse()
        .expect("timeout");
    let probe_interval_ms = config
        .get(Yaml::from("EVENTGATE_ALERTS__PROBE_INTERVAL_MS"))
        .map(|v| string(v).parse().expect("probe interval"))
        .unwrap_or_else(|| Config::default().alerts.probe_interval_ms);
    let partitions: u64 = string(&config[&Yaml::from("EVENTGATE_KAFKA__PARTITIONS")])
        .parse()
        .expect("partitions");
    let prometheus_port = |deployment: &Yaml| {
        string(&deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
    };

    for (name, section) in [
        ("ingest-api", "INGEST"),
        ("stats-api", "STATS"),
        ("db-writer", "WRITER"),
    ] {
        let deployment = find("Deployment", name);
        let template = &deployment["spec"]["template"];
        let spec = &template["spec"];
        // Service links would inject variables the configuration refuses.
        assert_eq!(
            spec["enableServiceLinks"].as_bool(),
            Some(false),
            "{name}: enableServiceLinks"
        );
        let labels = &template["metadata"]["labels"];
        assert_eq!(string(&labels["app.kubernetes.io/name"]), name);
        // With the name, the Prometheus job eventgate-<name> (prometheus-kubernetes.yml).
        assert_eq!(string(&labels["app.kubernetes.io/part-of"]), "eventgate");

        let container = &spec["containers"][0];
        let binary = string(&container["command"][0]);
        assert!(BINARIES.contains(&binary.as_str()), "{name}: {binary}");
        assert_eq!(binary, format!("eventgate-{name}"));
        let env = container["env"].as_sequence().expect("env");
        let env_value = |key: &str| {
            env.iter()
                .find(|e| string(&e["name"]) == key)
                .map(|e| string(&e["value"]))
        };
        let init_containers = spec["initContainers"].as_sequence().cloned();
        for entry in env.iter().chain(
            init_containers
                .iter()
                .flatten()
                .flat_map(|c| c["env"].as_sequence().expect("init container env").iter()),
        ) {
            variables.insert(string(&entry["name"]));
            if let Some(reference) = entry["valueFrom"]["secretKeyRef"].as_mapping() {
                assert_eq!(string(&reference[&Yaml::from("name")]), "eventgate-secrets");
                let key = string(&reference[&Yaml::from("key")]);
                assert!(secret.contains_key(&key), "{name}: secret has no {key}");
            }
        }

        // Ports: `admin` (metrics, probes) beside `http` (the API; not the writer's).
        let ports: BTreeMap<String, String> = container["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .map(|p| (string(&p["name"]), string(&p["containerPort"])))
            .collect();
        let admin_key = if name == "db-writer" {
            "EVENTGATE_WRITER__LISTEN".to_owned()
        } else {
            format!("EVENTGATE_{section}__ADMIN_LISTEN")
        };
        let admin_listen =
            env_value(&admin_key).unwrap_or_else(|| panic!("{name}: no {admin_key}"));
        let admin_port = port_of(&admin_listen).to_string();
        assert_eq!(ports.get("admin"), Some(&admin_port), "{name}: admin port");
        assert_eq!(
            prometheus_port(deployment),
            admin_port,
            "{name}: Prometheus scrapes the admin port"
        );
        assert_eq!(
            string(&template["metadata"]["annotations"]["prometheus.io/path"]),
            "/metrics"
        );
        let service = find("Service", name);
        let service_ports = service["spec"]["ports"].as_sequence().expect("ports");
        if name == "db-writer" {
            assert_eq!(
                ports.len(),
                1,
                "{name}: the writer serves its admin port only"
            );
            assert_eq!(string(&service["spec"]["clusterIP"]), "None", "headless");
        } else {
            let listen = env_value(&format!("EVENTGATE_{section}__LISTEN"))
                .unwrap_or_else(|| panic!("{name}: no listen address"));
            let port = port_of(&listen).to_string();
            assert_eq!(ports.get("http"), Some(&port), "{name}: http port");
            assert_ne!(port, admin_port, "{name}: API and admin on one port");
            // The public Service publishes the API, never the admin port.
            assert_eq!(service_ports.len(), 1, "{name}: Service ports");
            assert_eq!(string(&service_ports[0]["port"]), port, "{name}");
            assert_eq!(string(&service_ports[0]["targetPort"]), "http");
        }
        assert_eq!(
            service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
            "{name}: Service selects the Deployment's pods"
        );

        // Probes on the admin port; a start-up budget before liveness may restart the container.
        for (probe, path) in [
            ("startupProbe", "/health/live"),
            ("readinessProbe", "/health/ready"),
            ("livenessProbe", "/health/live"),
        ] {
            let get = &container[probe]["httpGet"];
            assert_eq!(string(&get["path"]), path, "{name}: {probe}");
            assert_eq!(string(&get["port"]), "admin", "{name}: {probe} port");
        }
        let startup = &container["startupProbe"];
        let budget_secs: u64 = string(&startup["failureThreshold"])
            .parse::<u64>()
            .expect("failureThreshold")
            * string(&startup["periodSeconds"])
                .parse::<u64>()
                .expect("periodSeconds");
        // The writer opens its port only after joining the group (and, migrating itself, after the
        // migrations and index builds): at least 10 minutes.
        let least = if name == "db-writer" { 600 } else { 60 };
        assert!(
            budget_secs >= least,
            "{name}: start-up budget {budget_secs} s < {least} s"
        );

        // The grace period holds the worst-case stop.
        let timeout_ms = env_value("EVENTGATE_SHUTDOWN__TIMEOUT_MS")
            .map(|v| v.parse().expect("timeout"))
            .unwrap_or(shared_timeout_ms);
        let grace_ms = string(&spec["terminationGracePeriodSeconds"])
            .parse::<u64>()
            .expect("grace")
            * 1000;
        let worst_ms = if name == "db-writer" {
            let fixed = writer_fixed_waits_ms(probe_interval_ms);
            assert_arithmetic_written(fixed);
            timeout_ms + fixed
        } else {
            api_worst_case_stop_ms(timeout_ms)
        };
        assert!(
            grace_ms >= worst_ms,
            "{name}: terminationGracePeriodSeconds below the worst-case stop ({worst_ms} ms)"
        );
    }

    // The writer migrates in an init container, as the schema owner; the writer itself cannot.
    let writer_spec = &find("Deployment", "db-writer")["spec"]["template"]["spec"];
    let init = &writer_spec["initContainers"][0];
    assert_eq!(string(&init["command"][0]), "eventgate");
    assert_eq!(string(&init["command"][1]), "migrate");
    let init_env: Vec<String> = init["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| string(&e["name"]))
        .collect();
    let migrate_url = migrate_url_variable();
    assert_eq!(init_env, [migrate_url.as_str()]);
    assert!(secret[&migrate_url].starts_with("postgres://eventgate:"));
    let writer_env: BTreeMap<String, String> = writer_spec["containers"][0]["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            (
                string(&e["name"]),
                e.get("value").map(string).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(writer_env["EVENTGATE_WRITER__RUN_MIGRATIONS"], "false");
    assert!(
        !writer_env.contains_key(&migrate_url),
        "the writer gets the owner's URL"
    );

    let hpa = find("HorizontalPodAutoscaler", "db-writer");
    assert_eq!(string(&hpa["spec"]["scaleTargetRef"]["name"]), "db-writer");
    assert_eq!(
        string(&hpa["spec"]["maxReplicas"]),
        partitions.to_string(),
        "more writers than partitions would idle"
    );
    assert_known_and_documented("deploy/kubernetes", &variables);

    // Both Prometheus configurations load the rules beside them.
    for config in ["prometheus.yml", "prometheus-kubernetes.yml"] {
        let prometheus = yaml(&root.join("deploy/prometheus").join(config));
        for rule_file in prometheus["rule_files"].as_sequence().expect("rule files") {
            assert!(
                root.join("deploy/prometheus")
                    .join(string(rule_file))
                    .is_file(),
                "{config}: {rule_file:?}"
            );
        }
    }
}

#[test]
fn every_variable_the_code_reads_is_documented() {
    let documented = documented_variables();
    let mut read_by_code = BTreeSet::new();
    let crates = repo_root().join("crates");
    for path in files_under(&crates, &["rs"]) {
        // Production code only: not the test harnesses, not integration tests, not the unit-test modules
        // at the end of a file or in a `tests.rs` of their own (they name mistyped variables on purpose).
        let relative = path.strip_prefix(&crates).expect("under crates");
        if relative.starts_with("test-support")
            || relative.starts_with("e2e")
            || relative.components().any(|c| c.as_os_str() == "tests")
            || relative.file_name().is_some_and(|name| name == "tests.rs")
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
    let open = open_table_prefixes();
    let stale: Vec<_> = documented_config
        .iter()
        .filter(|name| !is_config_variable(name, &known, &open))
        .collect();
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
