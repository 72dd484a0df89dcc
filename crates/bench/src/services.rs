//! The environment of a run: the database `eventgate_bench`, the token key, and the services, spawned as
//! separate processes from the release binaries with the same configuration as `make run`
//! (`config/eventgate.toml` plus `EVENTGATE_*` overrides for addresses, database, topic prefix, group, and
//! JSON logs as in production).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use tokio::process::{Child, Command};

use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::KafkaConfig;

use crate::cpu::{self, Watched};
use crate::db;
use crate::Cli;

pub const DATABASE: &str = "eventgate_bench";
/// The user the services know (`config/access.json` lets `dev` write and read every topic).
pub const USER: &str = "dev";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Ingest,
    Writer,
    Stats,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ingest => "ingest-api",
            Kind::Writer => "db-writer",
            Kind::Stats => "stats-api",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Kind::Ingest => "eventgate-ingest-api",
            Kind::Writer => "eventgate-db-writer",
            Kind::Stats => "eventgate-stats-api",
        }
    }

    /// The readiness path: the ingest-api's checks the broker, the stats-api's the database; the writer's
    /// health server only starts once the writer has joined its group.
    fn ready_path(self) -> &'static str {
        match self {
            Kind::Ingest | Kind::Stats => "/health/ready",
            Kind::Writer => "/health",
        }
    }
}

/// A running service process.
pub struct Service {
    pub kind: Kind,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    pub fn watched(&self) -> Watched {
        Watched {
            name: self.kind.name().to_owned(),
            pid: self.pid,
            with_children: false,
        }
    }
}

/// Everything the phases share.
pub struct Bench {
    pub root: PathBuf,
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
    pub kafka_brokers: String,
    pub pg_host: String,
    pub pg_port: u16,
    /// A short random id: Kafka topic prefixes and group ids of this run are unique.
    pub run_id: String,
    pub cursor_secret: String,
    pub public_key: PathBuf,
    pub http: reqwest::Client,
    pub catalogue: Catalogue,
    /// The broker's and PostgreSQL's processes, when they run on this machine.
    infrastructure: Vec<Watched>,
    peak_rss: Mutex<BTreeMap<Kind, f64>>,
}

impl Bench {
    /// Creates the database (dropping one left by an interrupted run), migrates it, creates the field
    /// indexes the topics declare, and checks that the binaries exist.
    pub async fn prepare(cli: &Cli) -> anyhow::Result<Bench> {
        let root = std::fs::canonicalize(&cli.repo_root)
            .with_context(|| format!("repository root {}", cli.repo_root.display()))?;
        let bin_dir = absolute(&root, &cli.bin_dir);
        for kind in [Kind::Ingest, Kind::Writer, Kind::Stats] {
            let binary = bin_dir.join(kind.binary());
            anyhow::ensure!(
                binary.is_file(),
                "{} not found: build the services first (cargo build --release --bins)",
                binary.display()
            );
        }
        let out = absolute(&root, &cli.out);
        let log_dir = out
            .parent()
            .map_or_else(|| root.join("target/bench"), Path::to_path_buf)
            .join("logs");
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;

        let pg = tokio_postgres::Config::from_str(&cli.pg_url)
            .with_context(|| format!("--pg-url {:?} is not a PostgreSQL URL", cli.pg_url))?;
        let pg_host = match pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => bail!("--pg-url must name a TCP host"),
        };
        let pg_port = pg.get_ports().first().copied().unwrap_or(5432);

        let catalogue =
            Catalogue::load_dir(&root.join("config/topics")).context("loading topics")?;
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let mut bench = Bench {
            root,
            bin_dir,
            log_dir,
            kafka_brokers: cli.kafka.clone(),
            pg_host,
            pg_port,
            run_id,
            cursor_secret: format!("bench-{}", uuid::Uuid::new_v4().simple()),
            public_key: eventgate_test_support::test_keys().public_key_path.clone(),
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(1024)
                .timeout(Duration::from_secs(60))
                .build()
                .context("building the HTTP client")?,
            catalogue,
            infrastructure: Vec::new(),
            peak_rss: Mutex::new(BTreeMap::new()),
        };

        let admin = db::connect(&bench.url("postgres", "postgres")).await?;
        // One statement per call: neither may run inside the implicit transaction of a multi-statement
        // query.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .await
            .context("dropping the bench database of an earlier run")?;
        admin
            .batch_execute(&format!("CREATE DATABASE {DATABASE} OWNER eventgate"))
            .await
            .context("creating the bench database (does the role eventgate exist? scripts/stack.sh creates it)")?;
        if let Some(postmaster) = db::postmaster_pid(&admin).await {
            bench.infrastructure.push(Watched {
                name: "postgres".into(),
                pid: postmaster,
                with_children: true,
            });
        }
        if let Some(pid) = broker_pid(&bench.kafka_brokers) {
            bench.infrastructure.push(Watched {
                name: "broker".into(),
                pid,
                with_children: false,
            });
        }
        let owner = bench.url("eventgate", DATABASE);
        eventgate_core::db::run_migrations(&owner)
            .await
            .context("migrating the bench database")?;
        let policy = eventgate_core::db::StoragePolicy::new(
            &bench.catalogue,
            &eventgate_core::config::StorageConfig::default(),
        );
        eventgate_core::db::maintain_now(&owner, &policy)
            .await
            .context("creating the partitions and their indexes")?;
        Ok(bench)
    }

    /// `postgres://USER@HOST:PORT/DATABASE` (the clusters of `scripts/stack.sh` trust local connections).
    pub fn url(&self, user: &str, database: &str) -> String {
        format!(
            "postgres://{user}@{}:{}/{database}",
            self.pg_host, self.pg_port
        )
    }

    pub fn owner_url(&self) -> String {
        self.url("eventgate", DATABASE)
    }

    /// The Kafka topic prefix of a phase: fresh topics, so a phase never sees another's messages.
    pub fn prefix(&self, phase: &str) -> String {
        format!("bench{}.{phase}.", self.run_id)
    }

    pub fn kafka_config(&self, prefix: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: self.kafka_brokers.clone(),
            topic_prefix: prefix.to_owned(),
            ..KafkaConfig::default()
        }
    }

    /// The broker and PostgreSQL processes plus the given services, for CPU accounting.
    pub fn watched(&self, services: &[&Service]) -> Vec<Watched> {
        let mut all = self.infrastructure.clone();
        all.extend(services.iter().map(|s| s.watched()));
        all
    }

    /// Starts a service for a phase and waits until it answers its readiness probe.
    pub async fn spawn(&self, kind: Kind, phase: &str) -> anyhow::Result<Service> {
        self.spawn_configured(kind, phase, 0, &[]).await
    }

    /// [`Bench::spawn`] with settings of its own (`EVENTGATE_*` variables) on top of the usual ones.
    pub async fn spawn_with(
        &self,
        kind: Kind,
        phase: &str,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        self.spawn_configured(kind, phase, 0, settings).await
    }

    /// [`Bench::spawn`] for one of several instances of a service in a phase (writers of one group).
    pub async fn spawn_instance(
        &self,
        kind: Kind,
        phase: &str,
        instance: usize,
    ) -> anyhow::Result<Service> {
        self.spawn_configured(kind, phase, instance, &[]).await
    }

    async fn spawn_configured(
        &self,
        kind: Kind,
        phase: &str,
        instance: usize,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let suffix = if instance == 0 {
            String::new()
        } else {
            format!("-{instance}")
        };
        let log = self
            .log_dir
            .join(format!("{phase}-{}{suffix}.log", kind.name()));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(self.bin_dir.join(kind.binary()));
        command
            .current_dir(&self.root)
            .env("EVENTGATE_CONFIG", self.root.join("config/eventgate.toml"))
            .env("EVENTGATE_KAFKA__BROKERS", &self.kafka_brokers)
            .env("EVENTGATE_KAFKA__TOPIC_PREFIX", self.prefix(phase))
            .env(
                "EVENTGATE_AUTH__PUBLIC_KEYS",
                format!("[\"{}\"]", self.public_key.display()),
            )
            // A benchmark measures the pipeline, not the per-user limits.
            .env("EVENTGATE_RATELIMIT__WRITES_PER_SECOND", "0")
            .env("EVENTGATE_RATELIMIT__QUERIES_PER_SECOND", "0")
            // The log format of production (the images set it); `make run`'s coloured lines cost more.
            .env("EVENTGATE_TELEMETRY__LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        match kind {
            Kind::Ingest => {
                command.env("EVENTGATE_INGEST__LISTEN", &listen);
            }
            Kind::Writer => {
                command
                    .env("EVENTGATE_WRITER__LISTEN", &listen)
                    .env("EVENTGATE_WRITER__DATABASE_URL", self.owner_url())
                    .env("EVENTGATE_WRITER__MIGRATION_DATABASE_URL", self.owner_url())
                    .env("EVENTGATE_WRITER__RUN_MIGRATIONS", "false")
                    .env(
                        "EVENTGATE_WRITER__GROUP_ID",
                        format!("bench{}-{phase}", self.run_id),
                    );
            }
            Kind::Stats => {
                command
                    .env("EVENTGATE_STATS__LISTEN", &listen)
                    .env(
                        "EVENTGATE_STATS__DATABASE_URL",
                        self.url("eventgate_stats", DATABASE),
                    )
                    .env("EVENTGATE_STATS__CURSOR_SECRET", &self.cursor_secret);
            }
        }
        for (name, value) in settings {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", kind.binary()))?;
        let pid = child
            .id()
            .with_context(|| format!("{} exited at once", kind.binary()))?;
        let url = format!("http://{listen}");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited during start-up ({status}); its log ({}):\n{}",
                    kind.name(),
                    log.display(),
                    tail(&log)
                );
            }
            let probe = self
                .http
                .get(format!("{url}{}", kind.ready_path()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready after 90 s; its log ({}):\n{}",
                    kind.name(),
                    log.display(),
                    tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Service {
            kind,
            pid,
            url,
            child,
            log,
        })
    }

    /// Records the service's peak RSS, then stops it like an orchestrator would (SIGTERM, then SIGKILL
    /// after 30 s).
    pub async fn stop(&self, mut service: Service) -> anyhow::Result<()> {
        self.record_rss(&service);
        let _ = Command::new("kill")
            .args(["-TERM", &service.pid.to_string()])
            .status()
            .await;
        if !matches!(
            tokio::time::timeout(Duration::from_secs(30), service.child.wait()).await,
            Ok(Ok(_))
        ) {
            let _ = service.child.start_kill();
            let _ = service.child.wait().await;
            eprintln!(
                "bench: {} did not stop within 30 s of SIGTERM (log: {})",
                service.kind.name(),
                service.log.display()
            );
        }
        if let Err(error) = trim_log(&service.log) {
            eprintln!("bench: cannot trim {}: {error}", service.log.display());
        }
        Ok(())
    }

    pub fn record_rss(&self, service: &Service) {
        if let Some(mb) = cpu::peak_rss_mb(service.pid) {
            if let Ok(mut peaks) = self.peak_rss.lock() {
                let entry = peaks.entry(service.kind).or_insert(0.0);
                *entry = entry.max(mb);
            }
        }
    }

    /// Peak RSS per service over all its instances of the run, in MiB.
    pub fn peak_rss_mb(&self) -> BTreeMap<String, f64> {
        self.peak_rss
            .lock()
            .map(|peaks| {
                peaks
                    .iter()
                    .map(|(kind, mb)| (kind.name().to_owned(), (mb * 10.0).round() / 10.0))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes the Kafka topics of a phase (the broker may keep them in memory). Best effort.
    pub async fn delete_topics(&self, phase: &str) {
        let kafka = self.kafka_config(&self.prefix(phase));
        let names = eventgate_core::kafka::kafka_topics(&kafka, &self.catalogue);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka_brokers)
            .create();
        if let Ok(admin) = admin {
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
            if let Err(error) = admin.delete_topics(&refs, &options).await {
                eprintln!("bench: could not delete the topics of phase {phase}: {error}");
            }
        }
    }

    /// Drops the database unless asked to keep it.
    pub async fn finish(&self, keep_database: bool) -> anyhow::Result<()> {
        if keep_database {
            eprintln!("bench: keeping database {DATABASE}");
            return Ok(());
        }
        let admin = db::connect(&self.url("postgres", "postgres")).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .await
            .context("dropping the bench database")?;
        Ok(())
    }
}

fn absolute(root: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A service logs a line or two per request (hundreds of MB in a full run): a log beyond 20 MiB keeps
/// only its last 2 MiB.
fn trim_log(path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    const KEEP: u64 = 2 << 20;
    let len = std::fs::metadata(path)?.len();
    if len <= 20 << 20 {
        return Ok(());
    }
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(len - KEEP))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let start = tail.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut trimmed = format!(
        "[eventgate-bench: the first {} bytes of this log were removed]\n",
        len - (tail.len() - start) as u64
    )
    .into_bytes();
    trimmed.extend_from_slice(&tail[start..]);
    std::fs::write(path, trimmed)
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The pid of the local process listening on the broker's port (`BENCH_BROKER_PID` when given), for CPU
/// accounting; `None` when the broker is elsewhere or cannot be found.
fn broker_pid(brokers: &str) -> Option<u32> {
    if let Some(pid) = std::env::var("BENCH_BROKER_PID")
        .ok()
        .and_then(|p| p.trim().parse().ok())
    {
        return Some(pid);
    }
    let port: u16 = brokers
        .split(',')
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    listening_pid(port)
}

/// Finds the process owning a listening TCP socket on `port` through /proc/net/tcp and the processes'
/// file descriptors (only processes this user may inspect).
fn listening_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT, st 0A is LISTEN, inode is column 9.
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_logs_keep_their_end_from_a_line_start() {
        let path = std::env::temp_dir().join(format!("bench-trim-{}.log", std::process::id()));
        let line = "x".repeat(99) + "\n";
        std::fs::write(&path, line.repeat(210_000) + "last line\n").unwrap();
        trim_log(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(text.len() <= (2 << 20) + 100, "{}", text.len());
        assert!(text.starts_with("[eventgate-bench: the first "));
        assert!(text.ends_with("last line\n"));
        assert!(text
            .lines()
            .skip(1)
            .all(|l| l.len() == 99 || l == "last line"));

        let small = std::env::temp_dir().join(format!("bench-small-{}.log", std::process::id()));
        std::fs::write(&small, "short\n").unwrap();
        trim_log(&small).unwrap();
        assert_eq!(std::fs::read_to_string(&small).unwrap(), "short\n");
        std::fs::remove_file(&small).unwrap();
    }
}
