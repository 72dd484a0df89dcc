//! Spawns the whole system in-process for end-to-end tests: the ingest-api, one or more db-writers and
//! the stats-api, against the shared test stack (a real Postgres cluster and a real tansu broker), with a
//! database, Kafka topics and a consumer group of their own per test. [`processes`] runs the service
//! binaries as processes instead, for the tests that signal them or read their memory.

pub mod processes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eventgate_core::config::{Config, Secret};
use eventgate_db_writer::{Writer, WriterMetrics};
use eventgate_test_support::{stack, test_keys, token, wait_until, Stack, TestDatabase};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Access rules of the tests: `dev` may do everything, `writer` only write, `reader` only read.
const TEST_ACCESS: &str = r#"{
  "public.cps.za.runs": {"write": ["dev", "writer"], "read": ["dev", "reader"]},
  "audit.logs": {"write": ["dev", "writer"], "read": ["dev", "reader"]},
  "web.events": {"write": ["dev"], "read": ["dev"]}
}"#;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub struct RunningWriter {
    pub metrics: Arc<WriterMetrics>,
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl RunningWriter {
    /// SIGTERM-like stop: finish the batch, commit, leave the group.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

pub struct System {
    pub config: Config,
    pub database: TestDatabase,
    pub ingest_url: String,
    pub stats_url: String,
    pub writers: Vec<RunningWriter>,
    pub http: reqwest::Client,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop, for the per-test access file.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl System {
    /// Starts ingest-api, `writers` db-writers and stats-api on a fresh database and fresh Kafka topics.
    pub async fn start(writers: usize) -> System {
        System::start_with(stack().await, writers, |_| {}).await
    }

    /// Like [`System::start`], on `stack` (a `private_stack()` for tests that stop and start servers),
    /// with the configuration adjusted by `configure` before anything starts.
    pub async fn start_with(
        stack: &Stack,
        writers: usize,
        configure: impl FnOnce(&mut Config),
    ) -> System {
        let database = stack.fresh_database().await;
        let config = test_config(stack, &database);
        let dir = std::env::temp_dir().join(format!("eventgate-e2e-{}", database.name));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("access.json"), TEST_ACCESS).expect("access file");
        let mut config = config;
        config.catalogue.access_file = dir.join("access.json");
        configure(&mut config);

        let ingest = eventgate_ingest_api::Application::build(config.clone())
            .await
            .expect("ingest-api starts");
        let ingest_url = format!("http://127.0.0.1:{}", ingest.port());
        tokio::spawn(ingest.run_until_stopped());
        let stats = eventgate_stats_api::Application::build(config.clone())
            .await
            .expect("stats-api starts");
        let stats_url = format!("http://127.0.0.1:{}", stats.port());
        tokio::spawn(stats.run_until_stopped());

        let mut system = System {
            config,
            database,
            ingest_url,
            stats_url,
            writers: Vec::new(),
            http: reqwest::Client::new(),
            _dir: tempdir::Dir(dir),
        };
        for _ in 0..writers {
            system.add_writer().await;
        }
        system
    }

    pub async fn add_writer(&mut self) -> usize {
        let writer = Writer::build(&self.config).await.expect("writer starts");
        let metrics = writer.metrics.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(writer.run(stop.clone()));
        self.writers.push(RunningWriter {
            metrics,
            stop,
            task,
        });
        self.writers.len() - 1
    }

    /// Waits until every running writer owns partitions and together they own all of them: the group
    /// has settled and the work will be shared.
    pub async fn wait_for_balanced_group(&self, timeout: Duration) {
        let topics = std::fs::read_dir(&self.config.catalogue.topics_dir)
            .expect("topics dir")
            .count() as i64;
        let total = topics * i64::from(self.config.kafka.partitions);
        let settled = wait_until("the consumer group to settle", timeout, || async {
            let owned: Vec<i64> = self
                .writers
                .iter()
                .map(|w| w.metrics.assigned_partitions.get())
                .collect();
            owned.iter().all(|&n| n > 0) && owned.iter().sum::<i64>() == total
        })
        .await;
        if let Err(error) = settled {
            let owned: Vec<i64> = self
                .writers
                .iter()
                .map(|w| w.metrics.assigned_partitions.get())
                .collect();
            panic!("{error:#}; partitions owned: {owned:?}, expected {total} in all");
        }
    }

    /// Starts another stats-api on this system's database with a changed configuration and points
    /// `stats_url` at it.
    pub async fn restart_stats_api(&mut self, change: impl FnOnce(&mut Config)) {
        let mut config = self.config.clone();
        change(&mut config);
        let stats = eventgate_stats_api::Application::build(config)
            .await
            .expect("stats-api starts");
        self.stats_url = format!("http://127.0.0.1:{}", stats.port());
        tokio::spawn(stats.run_until_stopped());
    }

    /// POSTs `body` to a topic as `user`; returns the status and the JSON answer.
    pub async fn post(&self, topic: &str, user: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/topics/{topic}", self.ingest_url))
            .bearer_auth(token(user))
            .json(body)
            .send()
            .await
            .expect("ingest-api answers");
        read(response).await
    }

    pub async fn query(&self, topic: &str, user: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/stats/{topic}", self.stats_url))
            .bearer_auth(token(user))
            .json(body)
            .send()
            .await
            .expect("stats-api answers");
        read(response).await
    }

    /// `GET /stats/{topic}/dead-letters` with query parameters, as `user`.
    pub async fn dead_letters(
        &self,
        topic: &str,
        user: &str,
        params: &[(&str, &str)],
    ) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/stats/{topic}/dead-letters", self.stats_url))
            .bearer_auth(token(user))
            .query(params)
            .send()
            .await
            .expect("stats-api answers");
        read(response).await
    }

    /// Produces `payload` with `key` straight into the Kafka topic of `topic`, past the ingest-api (a
    /// poison message, say); returns its partition and offset.
    pub async fn produce_raw(&self, topic: &str, key: &str, payload: &[u8]) -> (i32, i64) {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = eventgate_core::kafka::client_config(&self.config.kafka)
            .set("message.timeout.ms", "10000")
            .create()
            .expect("producer");
        let kafka_topic = self.config.kafka.kafka_topic(topic);
        producer
            .send(
                FutureRecord::to(&kafka_topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map(|delivery| (delivery.partition, delivery.offset))
            .map_err(|(error, _)| error)
            .expect("the broker takes the raw message")
    }

    pub async fn count_events(&self) -> i64 {
        self.database
            .count("SELECT count(*) FROM events")
            .await
            .expect("count events")
    }

    /// Waits until the events table holds `n` rows.
    pub async fn wait_for_rows(&self, n: i64, timeout: Duration) {
        let result = wait_until(&format!("{n} rows in events"), timeout, || async {
            self.count_events().await >= n
        })
        .await;
        if let Err(error) = result {
            panic!("{error:#}; rows now: {}", self.count_events().await);
        }
    }

    /// Waits until `count_sql` (a `SELECT count(*)`) is at least 1.
    pub async fn wait_for(&self, what: &str, timeout: Duration, count_sql: &str) {
        let result = wait_until(what, timeout, || async {
            self.database.count(count_sql).await.unwrap_or(0) >= 1
        })
        .await;
        if let Err(error) = result {
            panic!("{error:#}");
        }
    }

    /// How many messages the broker holds for a topic: the sum of its partitions' high watermarks.
    /// Proves what was (not) published without waiting for something that should never come.
    pub fn published_messages(&self, topic: &str) -> i64 {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = eventgate_core::kafka::client_config(&self.config.kafka)
            .set("group.id", "eventgate-e2e-watermarks")
            .create()
            .expect("consumer");
        let kafka_topic = self.config.kafka.kafka_topic(topic);
        (0..self.config.kafka.partitions)
            .map(|partition| {
                let (low, high) = consumer
                    .fetch_watermarks(&kafka_topic, partition, Duration::from_secs(10))
                    .expect("watermarks");
                high - low
            })
            .sum()
    }

    /// Walks every page of a query and returns all events, checking each page's size.
    pub async fn query_all(&self, topic: &str, mut body: Value) -> Vec<Value> {
        let mut all = Vec::new();
        for _ in 0..10_000 {
            let (status, answer) = self.query(topic, "dev", &body).await;
            assert_eq!(status, 200, "{answer}");
            let page = answer["data"].as_array().expect("data array").clone();
            all.extend(page);
            if answer["pagination"]["has_more"] != Value::Bool(true) {
                assert!(answer["pagination"]["cursor"].is_null(), "{answer}");
                return all;
            }
            body["cursor"] = answer["pagination"]["cursor"].clone();
        }
        panic!("more than 10,000 pages");
    }
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer is not JSON ({status}): {text}"));
    (status, value)
}

/// A configuration pointing at the test stack, with Kafka topics and a consumer group of its own.
pub fn test_config(stack: &Stack, database: &TestDatabase) -> Config {
    let mut config = Config::default();
    let root = repo_root();
    config.catalogue.topics_dir = root.join("config/topics");
    config.catalogue.access_file = root.join("config/access.json");
    config.auth.public_keys = vec![test_keys().public_key_path.clone()];
    config.kafka.brokers = stack.kafka_brokers.clone();
    config.kafka.topic_prefix = format!("{}.", stack.unique_name("t"));
    config.kafka.partitions = 4;
    config.ingest.listen = "127.0.0.1:0".into();
    config.ingest.workers = Some(2);
    config.stats.listen = "127.0.0.1:0".into();
    config.stats.workers = Some(2);
    config.stats.database_url = Secret::new(database.reader_url.clone());
    config.stats.cursor_secret = Secret::new("a-test-cursor-secret-of-enough-length");
    // The writer runs as its least-privileged role (INSERT/SELECT only), as in production.
    config.writer.database_url = Secret::new(database.writer_role_url.clone());
    config.writer.migration_database_url = Secret::new(database.writer_url.clone());
    config.writer.group_id = stack.unique_name("group");
    config.writer.batch_timeout_ms = 50;
    // The template is migrated already.
    config.writer.run_migrations = false;
    // Tests send bursts far above a person's rate; tests/security.rs turns the limits on where it tests them.
    config.ratelimit.writes_per_second = 0;
    config.ratelimit.queries_per_second = 0;
    config
}
