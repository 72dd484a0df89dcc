//! SIGTERM to the real `eventgate-db-writer` binary while events stream into Kafka: readiness turns 503,
//! the writer writes and commits the batch in hand (the group's committed offsets equal the rows it
//! wrote), exits 0, and a writer started afterwards brings every acknowledged event to Postgres once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use time::OffsetDateTime;

use eventgate_core::envelope::Event;
use eventgate_test_support::{
    assert_exactly_once, free_port, get_json, metric, stack, wait_until, ServiceProcess, Stack,
    TestDatabase,
};

const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 2;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Setup {
    database: TestDatabase,
    prefix: String,
    group: String,
    brokers: String,
    dir: PathBuf,
}

impl Setup {
    async fn new(stack: &Stack) -> Setup {
        let dir =
            std::env::temp_dir().join(format!("eventgate-writer-stop-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Setup {
            database: stack.fresh_database().await,
            prefix: format!("{}.", stack.unique_name("wstop")),
            group: stack.unique_name("wstop-group"),
            brokers: stack.kafka_brokers.clone(),
            dir,
        }
    }

    /// The writer binary as operators run it: `EVENTGATE_*` only, JSON logs to `<name>.log`.
    fn spawn_writer(&self, name: &str, port: u16) -> ServiceProcess {
        let env = [
            (
                "EVENTGATE_CATALOGUE__TOPICS_DIR",
                repo_root().join("config/topics").display().to_string(),
            ),
            ("EVENTGATE_KAFKA__BROKERS", self.brokers.clone()),
            ("EVENTGATE_KAFKA__TOPIC_PREFIX", self.prefix.clone()),
            ("EVENTGATE_KAFKA__PARTITIONS", PARTITIONS.to_string()),
            (
                "EVENTGATE_WRITER__DATABASE_URL",
                self.database.writer_role_url.clone(),
            ),
            ("EVENTGATE_WRITER__RUN_MIGRATIONS", "false".into()),
            ("EVENTGATE_WRITER__GROUP_ID", self.group.clone()),
            ("EVENTGATE_WRITER__LISTEN", format!("127.0.0.1:{port}")),
            // Long batches: a SIGTERM almost surely finds one in hand, which must be written.
            ("EVENTGATE_WRITER__BATCH_TIMEOUT_MS", "1000".into()),
            ("EVENTGATE_TELEMETRY__LOG_FORMAT", "json".into()),
            ("EVENTGATE_SHUTDOWN__TIMEOUT_MS", "15000".into()),
        ];
        ServiceProcess::spawn(
            env!("CARGO_BIN_EXE_eventgate-db-writer"),
            name,
            &env,
            &self.dir.join(format!("{name}.log")),
        )
    }

    /// Messages the group committed, over all partitions.
    fn committed(&self) -> i64 {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .create()
            .expect("consumer");
        let mut partitions = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            partitions.add_partition(&format!("{}audit.logs", self.prefix), partition);
        }
        let committed = consumer
            .committed_offsets(partitions, Duration::from_secs(10))
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .map(|element| match element.offset() {
                Offset::Offset(offset) => offset,
                _ => 0,
            })
            .sum()
    }
}

async fn owns_partitions(http: &reqwest::Client, port: u16) -> bool {
    metric(http, port, "eventgate_writer_assigned_partitions")
        .await
        .is_some_and(|owned| owned > 0.0)
}

/// Exits 0 within `WAIT`.
async fn assert_clean_exit(writer: &mut ServiceProcess) {
    let status = writer.wait_exit(WAIT).await;
    assert!(status.success(), "{status:?}\n{}", writer.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_stream_commits_the_last_batch_and_loses_nothing() {
    let stack = stack().await;
    let setup = Setup::new(stack).await;
    let http = reqwest::Client::new();
    let port = free_port();
    let ready = format!("http://127.0.0.1:{port}/health/ready");
    let mut first = setup.spawn_writer("first", port);
    wait_until("the writer to own partitions", WAIT, || async {
        matches!(get_json(&http, &ready).await, Some((200, _)))
            && owns_partitions(&http, port).await
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", first.log()));

    // A producer streams envelopes into the topic (what the ingest-api publishes), noting each one the
    // broker acknowledged, until told to stop.
    let acknowledged = Arc::new(Mutex::new(HashSet::<uuid::Uuid>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let producer_task = {
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &setup.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .expect("producer");
        let kafka_topic = format!("{}audit.logs", setup.prefix);
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let event = Event {
                    id: uuid::Uuid::now_v7(),
                    topic: "audit.logs".into(),
                    timestamp: OffsetDateTime::now_utc(),
                    producer: "stream".into(),
                    payload: json!({"event_name": format!("s-{n}"), "description": "stream", "customer_id": n}),
                };
                let key = event.id.to_string();
                let payload = event.to_json_bytes();
                let record = FutureRecord::to(&kafka_topic).key(&key).payload(&payload);
                if producer.send(record, Duration::from_secs(10)).await.is_ok() {
                    acknowledged.lock().unwrap().insert(event.id);
                }
            }
        })
    };
    wait_until("rows written mid-stream", WAIT, || async {
        setup
            .database
            .count("SELECT count(*) FROM events")
            .await
            .unwrap_or(0)
            >= 50
    })
    .await
    .unwrap();

    first.sigterm();
    wait_until(
        "readiness to answer 503 or the process to be gone",
        WAIT,
        || async {
            match get_json(&http, &ready).await {
                Some((503, body)) => body["status"] == "stopping",
                Some(_) => false,
                None => true,
            }
        },
    )
    .await
    .unwrap();
    assert_clean_exit(&mut first).await;
    let log = first.log();
    assert!(log.contains("writer stopped"), "{log}");
    assert!(!log.contains("batch abandoned"), "{log}");
    // Every row this writer wrote is covered by a committed offset, and nothing more was committed:
    // its last batch was written and then committed.
    let rows = setup
        .database
        .count("SELECT count(*) FROM events")
        .await
        .expect("count");
    assert_eq!(setup.committed(), rows, "{log}");

    // The stream ends; a new writer resumes from the committed offsets and brings in the rest.
    stop.store(true, Ordering::SeqCst);
    producer_task.await.expect("producer task");
    let acknowledged: Vec<String> = acknowledged
        .lock()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    let port = free_port();
    let mut second = setup.spawn_writer("second", port);
    assert_exactly_once(&setup.database, &acknowledged, WAIT, || second.log()).await;
    second.sigterm();
    assert_clean_exit(&mut second).await;
    let _ = std::fs::remove_dir_all(&setup.dir);
}
