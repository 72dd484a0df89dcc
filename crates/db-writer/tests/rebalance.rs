//! The writer in a consumer group whose broker is librdkafka's mock cluster (`rdkafka::mocking`): a
//! Kafka protocol implementation with Kafka's group semantics (it checks member and generation on
//! commits and heartbeats and can inject errors), so rebalances happen exactly as the test arranges them,
//! without any broker's quirks. Postgres is the real test cluster; a lock on `events` holds a batch in
//! the middle of its write for as long as a test needs.
//!
//! - a partition revoked while its batch is written is not committed by its old owner (no stale
//!   commit), and is stored once in the end;
//! - writes stalled past `max.poll.interval.ms` do not get the member ejected (it pauses and keeps
//!   polling), and a write failing on `lock_timeout` is retried, not parked;
//! - a member ejected while its batch is written (its assignment lost) commits nothing of that batch,
//!   reads it again and stores it once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use eventgate_core::config::{Config, Secret};
use eventgate_core::envelope::Event;
use eventgate_db_writer::{Writer, WriterMetrics};
use eventgate_test_support::{stack, wait_until, TestDatabase};

const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 2;
const SESSION_TIMEOUT_MS: u64 = 6_000;

fn topics_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/topics")
}

/// The catalogue's topic names (the Kafka topics are these behind the test's prefix).
fn catalogue_topics() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(topics_dir())
        .expect("topics dir")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

type Partition = (String, i32);

/// A mock cluster with the catalogue's topics, a fresh database and a writer configuration for both.
struct MockSetup {
    mock: MockCluster<'static, DefaultProducerContext>,
    _telemetry: eventgate_core::telemetry::Telemetry,
    config: Config,
    database: TestDatabase,
}

impl MockSetup {
    async fn new(configure: impl FnOnce(&mut Config)) -> MockSetup {
        let stack = stack().await;
        let mock = MockCluster::new(1).expect("mock cluster");
        let database = stack.fresh_database().await;
        let mut config = Config::default();
        config.catalogue.topics_dir = topics_dir();
        config.kafka.brokers = mock.bootstrap_servers();
        config.kafka.topic_prefix = format!("{}.", stack.unique_name("mock"));
        // The mock cluster does not implement CreateTopics: the test creates them.
        config.kafka.create_topics = false;
        config.kafka.partitions = PARTITIONS;
        config.writer.database_url = Secret::new(database.writer_role_url.clone());
        config.writer.run_migrations = false;
        config.writer.group_id = stack.unique_name("mock-group");
        config.writer.batch_timeout_ms = 50;
        config.writer.retry_max_ms = 500;
        config.writer.session_timeout_ms = SESSION_TIMEOUT_MS;
        configure(&mut config);
        // The writer's log, shown when a test fails.
        let telemetry = eventgate_core::telemetry::init(&config.telemetry, "rebalance-test");
        for topic in catalogue_topics() {
            mock.create_topic(&config.kafka.kafka_topic(&topic), PARTITIONS, 1)
                .expect("topic created");
        }
        MockSetup {
            mock,
            _telemetry: telemetry,
            config,
            database,
        }
    }

    fn partitions(&self) -> Vec<Partition> {
        catalogue_topics()
            .iter()
            .flat_map(|topic| {
                let kafka_topic = self.config.kafka.kafka_topic(topic);
                (0..PARTITIONS).map(move |partition| (kafka_topic.clone(), partition))
            })
            .collect()
    }

    async fn start_writer(&self) -> RunningWriter {
        let writer = Writer::build(&self.config).await.expect("writer starts");
        let metrics = writer.metrics.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(writer.run(stop.clone()));
        RunningWriter {
            metrics,
            stop,
            task,
        }
    }

    /// Produces `per_partition` event envelopes into every partition of every topic; returns their ids.
    async fn produce(&self, per_partition: usize) -> Vec<String> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.mock.bootstrap_servers())
            .create()
            .expect("producer");
        let mut ids = Vec::new();
        for (n, (kafka_topic, partition)) in self.partitions().into_iter().enumerate() {
            let topic = kafka_topic
                .strip_prefix(&self.config.kafka.topic_prefix)
                .expect("prefixed")
                .to_owned();
            for i in 0..per_partition {
                let event = Event {
                    id: uuid::Uuid::now_v7(),
                    topic: topic.clone(),
                    timestamp: time::OffsetDateTime::now_utc(),
                    producer: "rebalance-test".to_owned(),
                    payload: json!({"event_name": format!("e-{n}-{i}"), "customer_id": i}),
                };
                let key = event.id.to_string();
                let payload = event.to_json_bytes();
                producer
                    .send(
                        FutureRecord::to(&kafka_topic)
                            .partition(partition)
                            .key(&key)
                            .payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(error, _)| error)
                    .expect("the mock takes the message");
                ids.push(key);
            }
        }
        ids
    }

    /// The group's committed offset of each partition (`None`: nothing committed).
    fn committed(&self) -> BTreeMap<Partition, Option<i64>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.mock.bootstrap_servers())
            .set("group.id", &self.config.writer.group_id)
            .create()
            .expect("consumer");
        let mut list = TopicPartitionList::new();
        for (topic, partition) in self.partitions() {
            list.add_partition(&topic, partition);
        }
        consumer
            .committed_offsets(list, Duration::from_secs(10))
            .expect("committed offsets")
            .elements()
            .iter()
            .map(|element| {
                let offset = match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                };
                ((element.topic().to_owned(), element.partition()), offset)
            })
            .collect()
    }

    async fn count(&self, sql: &str) -> i64 {
        self.database.count(sql).await.expect("count")
    }

    /// Every id stored exactly once, nothing else in `events`, no dead letter.
    async fn assert_stored_once(&self, ids: &[String]) {
        eventgate_test_support::assert_exactly_once(&self.database, ids, WAIT, String::new).await;
        assert_eq!(self.count("SELECT count(*) FROM dead_letters").await, 0);
    }

    /// Waits until the group committed `offset` for every partition.
    async fn wait_for_commits(&self, offset: i64) {
        let committed = wait_until("every partition committed", WAIT, || async {
            self.committed()
                .values()
                .all(|committed| *committed == Some(offset))
        })
        .await;
        if let Err(error) = committed {
            panic!("{error:#}: {:?}", self.committed());
        }
    }
}

struct RunningWriter {
    metrics: Arc<WriterMetrics>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningWriter {
    fn owned(&self) -> i64 {
        self.metrics.assigned_partitions.get()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("writer task")
            .expect("writer stops cleanly");
    }
}

/// `LOCK TABLE events IN SHARE MODE` in an open transaction: the writer's INSERT waits, the test can
/// still read.
struct EventsLock {
    client: tokio_postgres::Client,
}

impl EventsLock {
    async fn take(database: &TestDatabase) -> EventsLock {
        let (client, connection) =
            tokio_postgres::connect(&database.admin_url, tokio_postgres::NoTls)
                .await
                .expect("admin connection");
        tokio::spawn(connection);
        client
            .batch_execute("BEGIN; LOCK TABLE events IN SHARE MODE")
            .await
            .expect("lock");
        EventsLock { client }
    }

    async fn release(self) {
        self.client.batch_execute("ROLLBACK").await.expect("unlock");
    }
}

/// Waits until a writer's INSERT into `events` waits on a lock in this test's database.
async fn wait_for_insert_on_lock(setup: &MockSetup) {
    wait_until("the writer's INSERT to wait on the lock", WAIT, || async {
        setup
            .database
            .count(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO events%'",
            )
            .await
            .unwrap_or(0)
            >= 1
    })
    .await
    .expect("a write held by the lock");
}

/// A second member of the group, a plain cooperative-sticky consumer polled on a thread of its own: it
/// takes its share of the partitions (reading them, committing nothing) until dropped, when it leaves.
struct OtherMember {
    assignment: Arc<Mutex<Vec<Partition>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtherMember {
    fn join(setup: &MockSetup) -> OtherMember {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", setup.mock.bootstrap_servers())
            .set("group.id", &setup.config.writer.group_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
            .set("heartbeat.interval.ms", "1000")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        let topics: Vec<String> = catalogue_topics()
            .iter()
            .map(|topic| setup.config.kafka.kafka_topic(topic))
            .collect();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs).expect("subscribed");
        let assignment = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (assignment, stop) = (assignment.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = consumer.poll(Duration::from_millis(100));
                    if let Ok(owned) = consumer.assignment() {
                        *assignment.lock().expect("assignment") = owned
                            .elements()
                            .iter()
                            .map(|e| (e.topic().to_owned(), e.partition()))
                            .collect();
                    }
                }
                // Dropping the consumer closes it: it leaves the group.
            })
        };
        OtherMember {
            assignment,
            stop,
            thread: Some(thread),
        }
    }

    fn assignment(&self) -> Vec<Partition> {
        self.assignment.lock().expect("assignment").clone()
    }

    fn leave(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("member thread");
        }
    }
}

impl Drop for OtherMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_revoked_while_its_batch_is_written_is_not_committed_by_its_old_owner() {
    let setup = MockSetup::new(|_| {}).await;
    let all = setup.partitions().len() as i64;
    let writer = setup.start_writer().await;
    wait_until("the writer to own every partition", WAIT, || async {
        writer.owned() == all
    })
    .await
    .expect("the group formed");

    // A batch of every partition is read and held in the middle of its write.
    let lock = EventsLock::take(&setup.database).await;
    let ids = setup.produce(5).await;
    wait_for_insert_on_lock(&setup).await;

    // Another member joins: the cooperative rebalance moves some partitions to it while the batch is
    // being written, and leaves the writer the rest.
    let other = OtherMember::join(&setup);
    wait_until("the partitions to be shared", WAIT, || async {
        let moved = other.assignment().len() as i64;
        moved > 0 && writer.owned() == all - moved
    })
    .await
    .expect("a rebalance");
    let moved = other.assignment();

    // The write ends. The writer commits the partitions it kept, and none of those it lost: their rows
    // may be stored, but the offsets are the new owner's business.
    lock.release().await;
    wait_until("the kept partitions to be committed", WAIT, || async {
        setup
            .committed()
            .iter()
            .all(|(partition, offset)| moved.contains(partition) || *offset == Some(5))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", setup.committed()));
    // Later commits of the batches in hand would come now; there must be none for the moved ones.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let committed = setup.committed();
    for partition in &moved {
        assert_eq!(
            committed[partition], None,
            "{partition:?} was revoked: its old owner must not commit it ({committed:?})"
        );
    }
    assert_eq!(writer.metrics.commit_failures.get(), 0);

    // The other member leaves without committing; the writer gets the partitions back, reads them again
    // from the start and stores each event once.
    other.leave();
    wait_until("the writer to own every partition again", WAIT, || async {
        writer.owned() == all
    })
    .await
    .expect("partitions back");
    setup.assert_stored_once(&ids).await;
    setup.wait_for_commits(5).await;
    assert_eq!(writer.metrics.rows_inserted.get(), ids.len() as u64);
    assert_eq!(writer.metrics.commit_failures.get(), 0);
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stalled_past_the_poll_interval_keep_the_member_and_a_lock_timeout_is_retried() {
    let setup = MockSetup::new(|config| {
        // Small batches, so that two writes in flight and a full batch in hand happen with few events;
        // a poll interval a third of the stall; a lock timeout shorter than the stall.
        config.writer.batch_size = 5;
        config.writer.max_poll_interval_ms = SESSION_TIMEOUT_MS;
        config.writer.lock_timeout_ms = 2_000;
    })
    .await;
    let all = setup.partitions().len() as i64;
    let writer = setup.start_writer().await;
    wait_until("the writer to own every partition", WAIT, || async {
        writer.owned() == all
    })
    .await
    .expect("the group formed");

    let lock = EventsLock::take(&setup.database).await;
    let ids = setup.produce(8).await;
    wait_for_insert_on_lock(&setup).await;
    // Three times the poll interval, watching the member: it must keep every partition throughout.
    let stall = Duration::from_millis(3 * SESSION_TIMEOUT_MS);
    let until = tokio::time::Instant::now() + stall;
    while tokio::time::Instant::now() < until {
        assert_eq!(writer.owned(), all, "the member lost its partitions");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        writer.metrics.consumer_errors.get(),
        0,
        "no consumer error (such as the poll interval exceeded)"
    );
    let retries = writer.metrics.write_retries.get();
    assert!(
        retries >= 2,
        "the writes failed on the lock timeout and were retried: {retries}"
    );
    assert_eq!(setup.count("SELECT count(*) FROM events").await, 0);
    lock.release().await;

    setup.assert_stored_once(&ids).await;
    setup.wait_for_commits(8).await;
    assert_eq!(writer.owned(), all);
    assert_eq!(writer.metrics.consumer_errors.get(), 0);
    assert_eq!(writer.metrics.commit_failures.get(), 0);
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_ejected_while_its_batch_is_written_commits_none_of_it_and_stores_it_once() {
    let setup = MockSetup::new(|_| {}).await;
    let all = setup.partitions().len() as i64;
    let writer = setup.start_writer().await;
    wait_until("the writer to own every partition", WAIT, || async {
        writer.owned() == all
    })
    .await
    .expect("the group formed");

    let lock = EventsLock::take(&setup.database).await;
    let ids = setup.produce(5).await;
    wait_for_insert_on_lock(&setup).await;

    // The coordinator answers the next heartbeat as it does for a member it fenced (its generation is
    // over): the writer's assignment is lost, and it rejoins.
    setup.mock.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION],
    );
    wait_until("the assignment to be lost", WAIT, || async {
        writer.owned() == 0
    })
    .await
    .expect("ejected");
    // The batch read before the ejection is written now, while the writer owns nothing: committing its
    // offsets would be a stale commit (refused by the coordinator, or worse, accepted for partitions
    // that moved on).
    lock.release().await;
    wait_until("the writer to own every partition again", WAIT, || async {
        writer.owned() == all
    })
    .await
    .expect("rejoined");
    setup.assert_stored_once(&ids).await;
    setup.wait_for_commits(5).await;
    assert_eq!(
        writer.metrics.commit_failures.get(),
        0,
        "no commit attempted for partitions not owned"
    );
    // The batch was read again after the rejoin; the second write skipped the stored ids.
    assert_eq!(writer.metrics.rows_inserted.get(), ids.len() as u64);
    writer.stop().await;
}
