//! The service binaries run as operators run them, for the tests that need a process of their own: to
//! signal it (SIGHUP), or to read its own peak memory. Each is configured by `EVENTGATE_*` variables only
//! (test-support's [`ServiceProcess`]), logs to a file in the test's directory, and is killed when dropped.
//!
//! The binaries are the workspace's own (`target/<profile>/eventgate-*`, next to the test's directory);
//! `make test` builds them (`cargo nextest run --workspace` builds every binary).

use std::path::{Path, PathBuf};
use std::time::Duration;

use eventgate_core::config::Config;
use eventgate_test_support::{free_port, get_json, wait_until, ServiceProcess};

const READY_WAIT: Duration = Duration::from_secs(180);

/// The path of the workspace binary `name`.
pub fn binary(name: &str) -> PathBuf {
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the services first (cargo build --bins; make test does)",
        path.display()
    );
    path
}

/// A service process and the port of its HTTP listener.
pub struct Service {
    pub name: String,
    pub process: ServiceProcess,
    pub port: u16,
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `path` answers 200; panics with the service's log when it does not.
    pub async fn wait_ready(&self, http: &reqwest::Client, path: &str) {
        let url = self.url(path);
        let ready = wait_until(
            &format!("{} to be ready", self.name),
            READY_WAIT,
            || async { matches!(get_json(http, &url).await, Some((200, _))) },
        )
        .await;
        if let Err(error) = ready {
            panic!("{error:#}\n{}", self.process.log());
        }
    }
}

/// The settings every service shares, as `EVENTGATE_*` variables (rate limits off).
pub fn common_env(config: &Config) -> Vec<(&'static str, String)> {
    vec![
        (
            "EVENTGATE_CATALOGUE__TOPICS_DIR",
            config.catalogue.topics_dir.display().to_string(),
        ),
        (
            "EVENTGATE_CATALOGUE__ACCESS_FILE",
            config.catalogue.access_file.display().to_string(),
        ),
        (
            "EVENTGATE_AUTH__PUBLIC_KEYS",
            format!("[{}]", config.auth.public_keys[0].display()),
        ),
        ("EVENTGATE_KAFKA__BROKERS", config.kafka.brokers.clone()),
        (
            "EVENTGATE_KAFKA__TOPIC_PREFIX",
            config.kafka.topic_prefix.clone(),
        ),
        (
            "EVENTGATE_KAFKA__PARTITIONS",
            config.kafka.partitions.to_string(),
        ),
        ("EVENTGATE_RATELIMIT__WRITES_PER_SECOND", "0".into()),
        ("EVENTGATE_RATELIMIT__QUERIES_PER_SECOND", "0".into()),
        ("EVENTGATE_TELEMETRY__LOG_FORMAT", "json".into()),
    ]
}

/// Starts `binary_name` with `env`, its log `dir/<name>.log`, listening on `port`.
pub fn spawn(
    dir: &Path,
    binary_name: &str,
    name: &str,
    env: Vec<(&'static str, String)>,
    port: u16,
) -> Service {
    let process = ServiceProcess::spawn(
        binary(binary_name).to_str().expect("utf-8 path"),
        name,
        &env,
        &dir.join(format!("{name}.log")),
    );
    Service {
        name: name.to_owned(),
        process,
        port,
    }
}

/// The ingest-api, ready.
pub async fn start_ingest_api(http: &reqwest::Client, dir: &Path, config: &Config) -> Service {
    let port = free_port();
    let mut env = common_env(config);
    env.push(("EVENTGATE_INGEST__LISTEN", format!("127.0.0.1:{port}")));
    let service = spawn(dir, "eventgate-ingest-api", "ingest-api", env, port);
    service.wait_ready(http, "/health/ready").await;
    service
}

/// A writer of the test's consumer group (no migrations: the test database has them), ready.
pub async fn start_writer(
    http: &reqwest::Client,
    dir: &Path,
    config: &Config,
    name: &str,
) -> Service {
    let port = free_port();
    let mut env = common_env(config);
    env.extend([
        (
            "EVENTGATE_WRITER__DATABASE_URL",
            config.writer.database_url.expose().to_owned(),
        ),
        ("EVENTGATE_WRITER__RUN_MIGRATIONS", "false".into()),
        ("EVENTGATE_WRITER__GROUP_ID", config.writer.group_id.clone()),
        ("EVENTGATE_WRITER__LISTEN", format!("127.0.0.1:{port}")),
        ("EVENTGATE_WRITER__BATCH_TIMEOUT_MS", "50".into()),
    ]);
    let service = spawn(dir, "eventgate-db-writer", name, env, port);
    service.wait_ready(http, "/health").await;
    service
}

/// The stats-api, ready.
pub async fn start_stats_api(http: &reqwest::Client, dir: &Path, config: &Config) -> Service {
    let port = free_port();
    let mut env = common_env(config);
    env.extend([
        ("EVENTGATE_STATS__LISTEN", format!("127.0.0.1:{port}")),
        (
            "EVENTGATE_STATS__DATABASE_URL",
            config.stats.database_url.expose().to_owned(),
        ),
        (
            "EVENTGATE_STATS__CURSOR_SECRET",
            config.stats.cursor_secret.expose().to_owned(),
        ),
    ]);
    let service = spawn(dir, "eventgate-stats-api", "stats-api", env, port);
    service.wait_ready(http, "/health/ready").await;
    service
}
