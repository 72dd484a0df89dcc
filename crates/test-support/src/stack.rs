//! The PostgreSQL cluster and tansu broker the tests run against.
//!
//! `make test` (scripts/test.sh) starts one cluster and one broker for the whole run and exports:
//! - `EVENTGATE_TEST_PG_URL`: admin URL without a database, `postgres://postgres@127.0.0.1:PORT`;
//! - `EVENTGATE_TEST_PG_DATADIR`: the cluster's data directory (lets tests stop and restart it);
//! - `EVENTGATE_TEST_KAFKA_BROKERS`: `127.0.0.1:PORT`;
//! - `EVENTGATE_TEST_TANSU_PIDFILE`, `EVENTGATE_TEST_TANSU_LOG`: let tests stop and restart the broker.
//!
//! Without them (plain `cargo test` / `cargo nextest run`), the first [`stack()`] call of a process starts
//! a private cluster and broker in `target/test-stack/<pid>` on free ports through `scripts/stack.sh`, and
//! a watchdog (`stack.sh reap`, in its own process group) stops them and removes the directory when the
//! process exits, however it exits. `EVENTGATE_TEST_BROKER_STORAGE=postgres` makes the broker this
//! process starts keep its data in the cluster ([`BrokerStorage`]), e.g. to run the broker regression
//! tests against tansu's postgres storage engine.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// The migrated database every [`Stack::fresh_database`] is cloned from.
pub const TEMPLATE_DATABASE: &str = "eventgate_template";

/// Server options of the throw-away clusters: no fsync (data survives a server crash, not an OS crash).
const PG_TEST_OPTS: &str = "-c fsync=off";

/// Key of the advisory lock that serialises template creation across test processes.
const TEMPLATE_LOCK_KEY: i64 = 0x6576_656e_7467_7465; // "eventgte"

/// A PostgreSQL cluster and a Kafka-protocol broker, both on 127.0.0.1.
#[derive(Debug)]
pub struct Stack {
    /// Superuser URL without a database: `postgres://postgres@127.0.0.1:PORT`.
    pub admin_url: String,
    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub kafka_brokers: String,
    pub pg_port: u16,
    pg_host: String,
    pg_datadir: Option<PathBuf>,
    broker: Option<BrokerControl>,
    /// Set for [`private_stack()`]s: stopped and removed when the `Stack` is dropped.
    private_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct BrokerControl {
    port: u16,
    pidfile: PathBuf,
    logfile: PathBuf,
    /// `TANSU_STORAGE_ENGINE` for `stack.sh start-tansu`: a restart uses the same storage.
    storage_engine: Option<String>,
}

/// Where a broker started by the harness keeps topics, records, committed offsets and group state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BrokerStorage {
    /// tansu's memory storage (the default, and what `make test` and `make bench` use): fast, and a
    /// restarted broker is empty, which no Kafka cluster is.
    #[default]
    Memory,
    /// tansu's postgres storage engine, in the database `tansu` of the stack's cluster (what `make run`
    /// uses): a broker killed and started again has everything it acknowledged, as Kafka does.
    Postgres,
}

impl BrokerStorage {
    /// `EVENTGATE_TEST_BROKER_STORAGE`: `memory` (or unset) or `postgres`.
    fn from_env() -> anyhow::Result<BrokerStorage> {
        match env_var("EVENTGATE_TEST_BROKER_STORAGE").as_deref() {
            None | Some("memory") => Ok(BrokerStorage::Memory),
            Some("postgres") => Ok(BrokerStorage::Postgres),
            Some(other) => anyhow::bail!(
                "EVENTGATE_TEST_BROKER_STORAGE={other}: expected `memory` or `postgres`"
            ),
        }
    }
}

/// A database of its own for one test, cloned from [`TEMPLATE_DATABASE`] and owned by `eventgate`.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    /// As `eventgate`, the owner (what migrations use; may also ANALYZE, create indexes, …).
    pub writer_url: String,
    /// As `eventgate_writer`, a member of `eventgate_write`: INSERT and SELECT on the event history only
    /// (what the db-writer connects as).
    pub writer_role_url: String,
    /// As `eventgate_stats`, read-only (what the stats-api uses).
    pub reader_url: String,
    /// As `postgres`, the superuser.
    pub admin_url: String,
}

/// The stack shared by the tests of this process (see the module docs).
pub async fn stack() -> &'static Stack {
    static SHARED: OnceCell<Stack> = OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            Stack::shared()
                .await
                .unwrap_or_else(|e| panic!("cannot set up the test stack: {e:#}"))
        })
        .await
}

/// A cluster and broker for this test alone, whatever the environment says: for tests that stop and
/// restart servers without disturbing the others. Stopped and removed when dropped. The broker keeps
/// its data in memory ([`private_stack_with`] for another storage).
pub async fn private_stack() -> Stack {
    private_stack_with(BrokerStorage::Memory).await
}

/// Like [`private_stack()`], with the broker's data kept in `storage`.
pub async fn private_stack_with(storage: BrokerStorage) -> Stack {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = process_dir().join(format!("private-{}", NEXT.fetch_add(1, Ordering::SeqCst)));
    let mut stack = Stack::start_owned(&dir, true, true, storage)
        .await
        .unwrap_or_else(|e| panic!("cannot start a private test stack: {e:#}"));
    stack.private_dir = Some(dir);
    stack
}

impl Stack {
    async fn shared() -> anyhow::Result<Stack> {
        let pg_url = env_var("EVENTGATE_TEST_PG_URL");
        let brokers = env_var("EVENTGATE_TEST_KAFKA_BROKERS");
        let mut stack = Stack::blank();
        if let Some(url) = &pg_url {
            let (host, port) = parse_pg_authority(url)?;
            stack.admin_url = url.trim_end_matches('/').to_owned();
            stack.pg_host = host;
            stack.pg_port = port;
            stack.pg_datadir = env_var("EVENTGATE_TEST_PG_DATADIR").map(PathBuf::from);
            stack.ensure_template().await?;
        } else {
            stack.start_postgres_in(&process_dir()).await?;
        }
        if let Some(brokers) = &brokers {
            stack.broker = match (
                env_var("EVENTGATE_TEST_TANSU_PIDFILE"),
                env_var("EVENTGATE_TEST_TANSU_LOG"),
            ) {
                (Some(pidfile), Some(logfile)) => Some(BrokerControl {
                    port: brokers
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(9092),
                    pidfile: pidfile.into(),
                    logfile: logfile.into(),
                    storage_engine: None,
                }),
                _ => None,
            };
            stack.kafka_brokers.clone_from(brokers);
        } else {
            stack
                .start_broker_in(&process_dir(), BrokerStorage::from_env()?)
                .await?;
        }
        if pg_url.is_none() || brokers.is_none() {
            stack.announce(&process_dir(), pg_url.is_none(), brokers.is_none());
        }
        Ok(stack)
    }

    fn blank() -> Stack {
        Stack {
            admin_url: String::new(),
            kafka_brokers: String::new(),
            pg_port: 0,
            pg_host: "127.0.0.1".into(),
            pg_datadir: None,
            broker: None,
            private_dir: None,
        }
    }

    /// Starts a cluster (when `pg`) and a broker (when `kafka`, its data in `storage`) kept in `dir`.
    async fn start_owned(
        dir: &Path,
        pg: bool,
        kafka: bool,
        storage: BrokerStorage,
    ) -> anyhow::Result<Stack> {
        let mut stack = Stack::blank();
        if pg {
            stack.start_postgres_in(dir).await?;
        }
        if kafka {
            stack.start_broker_in(dir, storage).await?;
        }
        stack.announce(dir, pg, kafka);
        Ok(stack)
    }

    /// Starts a cluster in `dir/postgres` on a free port, with the migrated template.
    async fn start_postgres_in(&mut self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let datadir = dir.join("postgres");
        let port = retry_on_port_clash(|port| {
            let datadir = datadir.clone();
            async move {
                stack_sh(
                    &[
                        "start-postgres".as_ref(),
                        datadir.as_os_str(),
                        port.to_string().as_ref(),
                    ],
                    true,
                    None,
                )
                .await
            }
        })
        .await?;
        self.pg_port = port;
        self.admin_url = format!("postgres://postgres@127.0.0.1:{port}");
        self.pg_datadir = Some(datadir);
        self.ensure_template().await
    }

    /// Starts a broker (pid file and log in `dir`) on a free port; with [`BrokerStorage::Postgres`], its
    /// data goes to the database `tansu` of this stack's cluster (`stack.sh tansu-database`).
    async fn start_broker_in(&mut self, dir: &Path, storage: BrokerStorage) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let storage_engine = match storage {
            BrokerStorage::Memory => None,
            BrokerStorage::Postgres => {
                anyhow::ensure!(
                    self.pg_port != 0,
                    "a broker with postgres storage needs the stack's PostgreSQL cluster"
                );
                let port = self.pg_port.to_string();
                Some(
                    stack_sh(
                        &["tansu-database".as_ref(), port.as_ref(), "tansu".as_ref()],
                        false,
                        None,
                    )
                    .await?,
                )
            }
        };
        let pidfile = dir.join("tansu.pid");
        let logfile = dir.join("tansu.log");
        let port = retry_on_port_clash(|port| {
            let (pidfile, logfile) = (pidfile.clone(), logfile.clone());
            let storage_engine = storage_engine.clone();
            async move {
                let port = port.to_string();
                stack_sh(
                    &[
                        "start-tansu".as_ref(),
                        port.as_ref(),
                        logfile.as_os_str(),
                        pidfile.as_os_str(),
                    ],
                    false,
                    storage_engine.as_deref(),
                )
                .await
            }
        })
        .await?;
        self.kafka_brokers = format!("127.0.0.1:{port}");
        self.broker = Some(BrokerControl {
            port,
            pidfile,
            logfile,
            storage_engine,
        });
        Ok(())
    }

    /// Says on stderr where the servers this process started are.
    fn announce(&self, dir: &Path, pg_owned: bool, broker_owned: bool) {
        let storage = match self.broker.as_ref() {
            Some(broker) if broker.storage_engine.is_some() => " (postgres storage)",
            _ => "",
        };
        eprintln!(
            "test stack in {}: postgres {} kafka {}{storage}",
            dir.display(),
            if pg_owned {
                self.admin_url.as_str()
            } else {
                "(from env)"
            },
            if broker_owned {
                self.kafka_brokers.as_str()
            } else {
                "(from env)"
            },
        );
    }

    /// `postgres://USER@HOST:PORT/DATABASE` on this cluster (trust authentication: no passwords).
    pub fn database_url(&self, user: &str, database: &str) -> String {
        format!(
            "postgres://{user}@{}:{}/{database}",
            self.pg_host, self.pg_port
        )
    }

    /// Creates and migrates [`TEMPLATE_DATABASE`] unless it exists; serialised across processes by an
    /// advisory lock.
    async fn ensure_template(&self) -> anyhow::Result<()> {
        let conn = connect(&self.database_url("postgres", "postgres")).await?;
        conn.batch_execute(&format!("SELECT pg_advisory_lock({TEMPLATE_LOCK_KEY})"))
            .await?;
        let result = self.create_template_locked(&conn).await;
        let _ = conn
            .batch_execute(&format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK_KEY})"))
            .await;
        result
    }

    async fn create_template_locked(&self, conn: &Client) -> anyhow::Result<()> {
        let exists = query_i64(
            conn,
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{TEMPLATE_DATABASE}'"),
        )
        .await?;
        if exists > 0 {
            return Ok(());
        }
        conn.batch_execute(&format!(
            "CREATE DATABASE {TEMPLATE_DATABASE} OWNER eventgate"
        ))
        .await?;
        if let Err(e) =
            eventgate_core::db::run_migrations(&self.database_url("eventgate", TEMPLATE_DATABASE))
                .await
        {
            let _ = conn
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {TEMPLATE_DATABASE} WITH (FORCE)"
                ))
                .await;
            anyhow::bail!("migrating {TEMPLATE_DATABASE}: {e}");
        }
        Ok(())
    }

    /// A new database `eg_<uuid>` cloned from the migrated template, owned by `eventgate`.
    pub async fn fresh_database(&self) -> TestDatabase {
        self.try_fresh_database()
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database: {e:#}"))
    }

    async fn try_fresh_database(&self) -> anyhow::Result<TestDatabase> {
        let name = format!("eg_{}", uuid::Uuid::new_v4().simple());
        let conn = connect(&self.database_url("postgres", "postgres")).await?;
        let sql = format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE} OWNER eventgate");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match conn.batch_execute(&sql).await {
                Ok(()) => break,
                // A connection to the template (the migration's, just closed) has not gone yet.
                Err(e)
                    if e.code() == Some(&SqlState::OBJECT_IN_USE) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(anyhow::anyhow!("{sql}: {e}")),
            }
        }
        Ok(TestDatabase {
            writer_url: self.database_url("eventgate", &name),
            writer_role_url: self.database_url("eventgate_writer", &name),
            reader_url: self.database_url("eventgate_stats", &name),
            admin_url: self.database_url("postgres", &name),
            name,
        })
    }

    /// `prefix` followed by 8 random hex digits, e.g. `unique_name("t")` = `t3f9a0c12`: for Kafka topic
    /// prefixes (add the `.` yourself) and consumer group ids.
    pub fn unique_name(&self, prefix: &str) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("{prefix}{}", &id[..8])
    }

    /// Creates a Kafka topic (replication 1); a topic that already exists is fine.
    pub async fn create_kafka_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka_brokers)
            .create()
            .expect("cannot create a Kafka admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .unwrap_or_else(|e| panic!("cannot create Kafka topic {name}: {e}"));
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => panic!("cannot create Kafka topic {topic}: {code}"),
            }
        }
    }

    /// Kills the cluster (`pg_ctl stop -m immediate`: like a crash). Only for a cluster this process owns
    /// or that `make test` exported `EVENTGATE_TEST_PG_DATADIR` for; the shared cluster serves every
    /// test of the run, so fault-injection tests should use a [`private_stack()`].
    pub fn stop_postgres(&self) {
        let datadir = self.pg_datadir();
        stack_sh_blocking(
            &[
                "stop-postgres".as_ref(),
                datadir.as_os_str(),
                "immediate".as_ref(),
            ],
            false,
            None,
        )
        .unwrap_or_else(|e| panic!("cannot stop postgres: {e:#}"));
    }

    /// Starts the cluster again on the same port (after [`Stack::stop_postgres`]); returns when it accepts
    /// connections.
    pub fn start_postgres(&self) {
        let datadir = self.pg_datadir();
        let port = self.pg_port.to_string();
        stack_sh_blocking(
            &[
                "start-postgres".as_ref(),
                datadir.as_os_str(),
                port.as_ref(),
            ],
            true,
            None,
        )
        .unwrap_or_else(|e| panic!("cannot start postgres: {e:#}"));
    }

    /// Freezes the broker (SIGSTOP): it keeps its sockets and its state but answers nothing, like a
    /// broker behind a network partition. [`Stack::resume_broker`] lets it go on where it stopped, with
    /// its topics, offsets and producer ids (which a stop and start of the memory-only broker loses).
    pub fn pause_broker(&self) {
        self.signal_broker("-STOP");
    }

    /// Lets a broker frozen by [`Stack::pause_broker`] run again (SIGCONT).
    pub fn resume_broker(&self) {
        self.signal_broker("-CONT");
    }

    fn signal_broker(&self, signal: &str) {
        let broker = self.broker();
        let pid = std::fs::read_to_string(&broker.pidfile)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", broker.pidfile.display()));
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.trim())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill {signal} {} failed", pid.trim());
    }

    /// Stops the broker (SIGTERM, SIGKILL after 10 s). With [`BrokerStorage::Memory`] a restarted broker
    /// is empty; with [`BrokerStorage::Postgres`] it has everything it acknowledged.
    pub fn stop_broker(&self) {
        let broker = self.broker();
        stack_sh_blocking(
            &["stop-tansu".as_ref(), broker.pidfile.as_os_str()],
            false,
            None,
        )
        .unwrap_or_else(|e| panic!("cannot stop tansu: {e:#}"));
    }

    /// Kills the broker with SIGKILL, as a crash or an OOM kill would, and returns once it is gone.
    pub fn kill_broker(&self) {
        let broker = self.broker();
        let pid = std::fs::read_to_string(&broker.pidfile)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", broker.pidfile.display()));
        let pid = pid.trim();
        self.signal_broker("-KILL");
        let proc = PathBuf::from(format!("/proc/{pid}/cmdline"));
        let deadline = Instant::now() + Duration::from_secs(10);
        // Gone, or a zombie (an empty command line) until it is reaped.
        while std::fs::read(&proc).is_ok_and(|cmdline| !cmdline.is_empty()) {
            assert!(
                Instant::now() < deadline,
                "tansu (pid {pid}) still runs 10 s after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&broker.pidfile);
    }

    /// Starts the broker again on the same port, with the same storage (see [`Stack::stop_broker`]).
    pub fn start_broker(&self) {
        let broker = self.broker();
        let port = broker.port.to_string();
        let args = [
            "start-tansu".as_ref(),
            port.as_ref(),
            broker.logfile.as_os_str(),
            broker.pidfile.as_os_str(),
        ];
        stack_sh_blocking(&args, false, broker.storage_engine.as_deref())
            .unwrap_or_else(|e| panic!("cannot start tansu: {e:#}"));
    }

    /// The last `lines` lines of the broker's log under a heading, for failure messages (empty when this
    /// process does not control the broker).
    pub fn broker_log_tail(&self, lines: usize) -> String {
        let Some(broker) = &self.broker else {
            return String::new();
        };
        let log = std::fs::read_to_string(&broker.logfile).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- tansu log ({}), last lines:\n{}",
            broker.logfile.display(),
            tail.join("\n")
        )
    }

    fn pg_datadir(&self) -> &Path {
        self.pg_datadir.as_deref().expect(
            "this process does not control the PostgreSQL cluster (not started by it and \
             EVENTGATE_TEST_PG_DATADIR unset): use private_stack()",
        )
    }

    fn broker(&self) -> &BrokerControl {
        self.broker.as_ref().expect(
            "this process does not control the broker (not started by it and EVENTGATE_TEST_TANSU_PIDFILE / \
             EVENTGATE_TEST_TANSU_LOG unset): use private_stack()",
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(dir) = &self.private_dir {
            let _ = stack_sh_blocking(&["clean-dir".as_ref(), dir.as_os_str()], false, None);
        }
    }
}

impl TestDatabase {
    /// Runs one or more SQL statements as the superuser in this database.
    pub async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        let conn = connect(&self.admin_url).await?;
        conn.batch_execute(sql)
            .await
            .map_err(|e| anyhow::anyhow!("{sql}: {e}"))
    }

    /// The single value of a query returning one row and one integer column (e.g. `select count(*) from
    /// events`), run as the superuser in this database.
    pub async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        let conn = connect(&self.admin_url).await?;
        query_i64(&conn, sql).await
    }
}

async fn query_i64(conn: &Client, sql: &str) -> anyhow::Result<i64> {
    let inner = sql.trim().trim_end_matches(';');
    let row = conn
        .query_one(&format!("SELECT ({inner})::bigint AS n"), &[])
        .await
        .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
    let n: Option<i64> = row.try_get(0)?;
    n.ok_or_else(|| anyhow::anyhow!("{sql}: returned NULL"))
}

/// A plain connection, its I/O driven by a task of its own.
async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "test connection closed");
        }
    });
    Ok(client)
}

/// `(host, port)` of `postgres://user@host:port[/db][?params]`.
fn parse_pg_authority(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    match hostport.rsplit_once(':') {
        Some((host, port)) => Ok((
            host.to_owned(),
            port.parse()
                .map_err(|_| anyhow::anyhow!("bad port in {url}"))?,
        )),
        None if !hostport.is_empty() => Ok((hostport.to_owned(), 5432)),
        None => anyhow::bail!("no host in {url}"),
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The workspace root (this crate lives in `crates/test-support`).
pub(crate) fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target/` in the workspace.
pub(crate) fn target_dir() -> PathBuf {
    match env_var("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// `target/test-stack/<pid>`, created fresh on first use, with a watchdog that cleans it up when this
/// process exits.
fn process_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static REAPER: Mutex<Option<Child>> = Mutex::new(None);
    DIR.get_or_init(|| {
        let pid = std::process::id();
        let dir = target_dir().join("test-stack").join(pid.to_string());
        if dir.exists() {
            // Left by an earlier process with the same pid.
            let _ = stack_sh_blocking(&["clean-dir".as_ref(), dir.as_os_str()], false, None);
        }
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let reaper = Command::new("bash")
            .arg(workspace_root().join("scripts/stack.sh"))
            .arg("reap")
            .arg(pid.to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a test runner killing ours must not take the watchdog with it.
            .process_group(0)
            .spawn()
            .expect("cannot start the test stack watchdog (bash scripts/stack.sh reap)");
        *REAPER.lock().unwrap_or_else(|e| e.into_inner()) = Some(reaper);
        dir
    })
    .clone()
}

/// `bash scripts/stack.sh ARGS…`; `pg_test_opts`: the server options of throw-away clusters;
/// `storage_engine`: the broker's `TANSU_STORAGE_ENGINE` (memory when `None`).
fn stack_sh_command(args: &[&OsStr], pg_test_opts: bool, storage_engine: Option<&str>) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(workspace_root().join("scripts/stack.sh"))
        .args(args)
        .stdin(Stdio::null());
    if pg_test_opts {
        command.env("PG_EXTRA_OPTS", PG_TEST_OPTS);
    }
    match storage_engine {
        Some(url) => command.env("TANSU_STORAGE_ENGINE", url),
        None => command.env_remove("TANSU_STORAGE_ENGINE"),
    };
    command
}

fn check_output(args: &[&OsStr], output: std::process::Output) -> anyhow::Result<String> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    anyhow::bail!(
        "scripts/stack.sh {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim_end()
    )
}

async fn stack_sh(
    args: &[&OsStr],
    pg_test_opts: bool,
    storage_engine: Option<&str>,
) -> anyhow::Result<String> {
    let output =
        tokio::process::Command::from(stack_sh_command(args, pg_test_opts, storage_engine))
            .output()
            .await?;
    check_output(args, output)
}

fn stack_sh_blocking(
    args: &[&OsStr],
    pg_test_opts: bool,
    storage_engine: Option<&str>,
) -> anyhow::Result<String> {
    let output = stack_sh_command(args, pg_test_opts, storage_engine).output()?;
    check_output(args, output)
}

/// Runs `start(port)` with a free port, again with another one when it fails (another process may have
/// taken the port in between); returns the port it succeeded with.
async fn retry_on_port_clash<F, Fut>(mut start: F) -> anyhow::Result<u16>
where
    F: FnMut(u16) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let mut last = None;
    for _ in 0..3 {
        let port = crate::free_port();
        match start(port).await {
            Ok(_) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
}

#[cfg(test)]
mod tests {
    use super::{connect, parse_pg_authority, private_stack, query_i64, stack};
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use std::time::Duration;
    use tokio_postgres::error::SqlState;

    #[test]
    fn parses_admin_urls() {
        assert_eq!(
            parse_pg_authority("postgres://postgres@127.0.0.1:55432").unwrap(),
            ("127.0.0.1".into(), 55432)
        );
        assert_eq!(
            parse_pg_authority("postgres://u:p@db:5433/x?sslmode=disable").unwrap(),
            ("db".into(), 5433)
        );
        assert_eq!(
            parse_pg_authority("postgres://u@db/x").unwrap(),
            ("db".into(), 5432)
        );
    }

    #[tokio::test]
    async fn fresh_database_is_migrated_empty_and_roles_work() {
        let stack = stack().await;
        let db = stack.fresh_database().await;
        assert!(db.name.starts_with("eg_"));
        assert_eq!(db.count("select count(*) from events").await.unwrap(), 0);

        // The writer role owns the tables.
        let writer = connect(&db.writer_url).await.unwrap();
        writer
            .batch_execute(
                "INSERT INTO events (id, topic, received_at, producer, payload) \
                 VALUES (gen_random_uuid(), 'orders', now(), 'alice', '{\"n\": 1}')",
            )
            .await
            .unwrap();
        assert_eq!(db.count("select count(*) from events;").await.unwrap(), 1);

        // The stats role reads, and cannot write.
        let reader = connect(&db.reader_url).await.unwrap();
        assert_eq!(
            query_i64(&reader, "select count(*) from events")
                .await
                .unwrap(),
            1
        );
        let err = reader
            .batch_execute("DELETE FROM events")
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
            "{err}"
        );

        // Databases are independent.
        let other = stack.fresh_database().await;
        assert_eq!(other.count("select count(*) from events").await.unwrap(), 0);
        db.execute("DELETE FROM events; INSERT INTO events SELECT gen_random_uuid(), 't', now(), 'p', '{}'")
            .await
            .unwrap();
        assert!(db
            .count("select max(id::text) from events where false")
            .await
            .is_err());
    }

    #[tokio::test]
    async fn kafka_topic_round_trip() {
        let stack = stack().await;
        let topic = format!("{}.roundtrip", stack.unique_name("t"));
        stack.create_kafka_topic(&topic, 2).await;
        stack.create_kafka_topic(&topic, 2).await; // already exists: fine

        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &stack.kafka_brokers)
            .set("message.timeout.ms", "10000")
            .create()
            .unwrap();
        producer
            .send(
                FutureRecord::to(&topic).key("k").payload("hello tansu"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();

        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &stack.kafka_brokers)
            .set("group.id", stack.unique_name("g"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.payload(), Some(&b"hello tansu"[..]));
        assert_eq!(message.key(), Some(&b"k"[..]));
    }

    #[tokio::test]
    async fn private_stack_survives_a_postgres_restart() {
        let stack = private_stack().await;
        let db = stack.fresh_database().await;
        db.execute("INSERT INTO events VALUES (gen_random_uuid(), 't', now(), 'p', '{}')")
            .await
            .unwrap();
        stack.stop_postgres();
        assert!(db.count("select count(*) from events").await.is_err());
        stack.start_postgres();
        assert_eq!(db.count("select count(*) from events").await.unwrap(), 1);

        stack.stop_broker();
        stack.start_broker();
        stack.create_kafka_topic(&stack.unique_name("t"), 1).await;
        let dir = stack.private_dir.clone().unwrap();
        drop(stack);
        assert!(!dir.exists());
    }
}
