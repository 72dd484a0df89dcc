//! The local broker behaves as Kafka does where eventgate's no-loss guarantees depend on it: regression
//! tests, at the Kafka protocol level (rdkafka against the broker of the test stack), for the tansu bugs
//! patched by scripts/tansu-patches (docs/tansu-bugs.md):
//! - a fetch from an offset inside a record batch returns that batch (the client skips the records before
//!   the offset), not the next one;
//! - ListOffsets(latest), i.e. the high watermark a client asks for, is the offset after the last record,
//!   not the base offset of the last batch plus one;
//! - a group member that stops heartbeating without leaving (SIGKILL) is evicted after its session
//!   timeout, and its partitions go to the members that are left, the leader's too.
//!
//! And, with tansu's postgres storage (what `make run` uses): a broker killed with SIGKILL and started
//! again has every record it acknowledged and every committed offset, as a Kafka broker does. The other
//! tests run on the memory storage of the test stack, or on the postgres storage with
//! `EVENTGATE_TEST_BROKER_STORAGE=postgres` (docs/tansu-bugs.md).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventgate_test_support::{private_stack_with, stack, BrokerStorage, Stack};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Records per producer round; each round is sent at once with `linger.ms` > 0, so it is one batch.
const ROUND: i64 = 50;
/// The session timeout of the group members in the eviction tests.
const SESSION_TIMEOUT_MS: u64 = 6_000;
/// Environment of the child process that plays the member killed in the eviction tests.
const MEMBER_ENV: &str = "EVENTGATE_BROKER_TEST_MEMBER";

fn producer(stack: &Stack) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_brokers)
        .set("linger.ms", "100")
        .set("batch.num.messages", "10000")
        .set("compression.type", "none")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// Sends `count` records to `topic`/`partition` at once (so that they share a batch) and returns their
/// offsets, in the order sent.
async fn produce_round(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    first: i64,
    count: i64,
) -> Vec<i64> {
    let payloads: Vec<String> = (first..first + count)
        .map(|i| format!("record-{i}"))
        .collect();
    let deliveries: Vec<_> = payloads
        .iter()
        .map(|payload| {
            producer
                .send_result(
                    FutureRecord::<(), _>::to(topic)
                        .partition(partition)
                        .payload(payload),
                )
                .map_err(|(e, _)| e)
                .expect("enqueue a record")
        })
        .collect();
    let mut offsets = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let delivery = delivery
            .await
            .expect("delivery future")
            .unwrap_or_else(|(e, _)| panic!("record not delivered: {e}"));
        offsets.push(delivery.offset);
    }
    offsets
}

/// Produces two rounds of [`ROUND`] records (two batches) to a new one-partition topic; returns its name.
async fn topic_with_two_batches(stack: &Stack) -> String {
    let topic = stack.unique_name("broker-batches-");
    stack.create_kafka_topic(&topic, 1).await;
    let producer = producer(stack);
    let mut offsets = produce_round(&producer, &topic, 0, 0, ROUND).await;
    offsets.extend(produce_round(&producer, &topic, 0, ROUND, ROUND).await);
    assert_eq!(
        offsets,
        (0..2 * ROUND).collect::<Vec<_>>(),
        "the records were not stored at offsets 0..{}",
        2 * ROUND
    );
    topic
}

fn consumer_config(stack: &Stack, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &stack.kafka_brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100");
    config
}

/// What a consumer assigned at `offset` of partition 0 receives first, until `until` or a timeout.
async fn offsets_from(stack: &Stack, topic: &str, offset: i64, until: i64) -> Vec<i64> {
    let consumer: StreamConsumer = consumer_config(stack, &stack.unique_name("broker-assign-"))
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .expect("partition offset");
    consumer.assign(&tpl).expect("assign");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.last().is_none_or(|last| *last < until - 1) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(Ok(message)) => {
                assert_eq!(
                    message.payload(),
                    Some(format!("record-{}", message.offset()).as_bytes()),
                    "payload of offset {}",
                    message.offset()
                );
                seen.push(message.offset());
            }
            Ok(Err(e)) => panic!("consume: {e}"),
            Err(_) => {}
        }
    }
    seen
}

/// A consumer that resumes at an offset inside a record batch (a committed offset after a rebalance, a
/// restart or a crash) receives the record at that offset first, then every later one.
#[tokio::test(flavor = "multi_thread")]
async fn fetch_from_inside_a_batch_returns_the_rest_of_the_batch() {
    let stack = stack().await;
    let topic = topic_with_two_batches(stack).await;
    let end = 2 * ROUND;
    // Inside the first batch, at the start of the second, inside the second.
    for start in [7, ROUND, ROUND + 7] {
        let seen = offsets_from(stack, &topic, start, end).await;
        assert_eq!(
            seen.first().copied(),
            Some(start),
            "a consumer assigned at offset {start} first received offset {:?} (the broker skipped the \
             rest of the batch that holds offset {start})",
            seen.first()
        );
        assert_eq!(
            seen,
            (start..end).collect::<Vec<_>>(),
            "a consumer assigned at offset {start} did not receive exactly the offsets {start}..{end}"
        );
    }
}

/// The high watermark a client asks for (ListOffsets, latest) is the offset after the last record, not
/// the base offset of the last batch plus one.
#[tokio::test(flavor = "multi_thread")]
async fn high_watermark_is_the_offset_after_the_last_record() {
    let stack = stack().await;
    let topic = topic_with_two_batches(stack).await;
    let consumer: BaseConsumer = consumer_config(stack, &stack.unique_name("broker-watermarks-"))
        .create()
        .expect("consumer");
    let (low, high) = tokio::task::spawn_blocking(move || {
        consumer
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .expect("watermarks")
    })
    .await
    .expect("watermarks task");
    assert_eq!(low, 0, "low watermark");
    assert_eq!(
        high,
        2 * ROUND,
        "high watermark of a partition holding offsets 0..{}",
        2 * ROUND
    );
}

// ---------------------------------------------------------------------------------------------- eviction

/// The group member that gets killed: this test binary again, running [`member_process`].
struct KilledMember {
    child: Child,
    assigned: Arc<Mutex<Option<BTreeSet<i32>>>>,
}

impl KilledMember {
    fn spawn(stack: &Stack, topic: &str, group: &str) -> KilledMember {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .args([
                "member_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                MEMBER_ENV,
                format!("{}|{topic}|{group}", stack.kafka_brokers),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the member process");
        let stdout = child.stdout.take().expect("child stdout");
        let assigned = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&assigned);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("member process: {line}");
                // (libtest's "test member_process ... " may precede the first one on its line)
                if let Some((_, partitions)) = line.split_once("member-assigned:") {
                    let partitions = partitions
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| p.parse().expect("partition"))
                        .collect();
                    *seen.lock().expect("lock") = Some(partitions);
                }
            }
        });
        KilledMember { child, assigned }
    }

    fn assigned(&self) -> BTreeSet<i32> {
        self.assigned
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_default()
    }

    /// SIGKILL: no LeaveGroup, the broker only notices the missing heartbeats.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the member process");
        self.child.wait().expect("reap the member process");
    }
}

impl Drop for KilledMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The member killed by the eviction tests, run as a child process (see [`KilledMember`]): it joins the
/// group, polls, and prints its assignment whenever it changes, until it is killed.
#[test]
#[ignore = "the member process of the eviction tests, run by them"]
fn member_process() {
    let Ok(spec) = std::env::var(MEMBER_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (brokers, topic, group) = (
        parts.next().expect("brokers"),
        parts.next().expect("topic"),
        parts.next().expect("group"),
    );
    let consumer: BaseConsumer = member_config(brokers, group).create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut last = None;
    loop {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            eprintln!("member process: {e}");
        }
        let assigned = partitions_of(&consumer.assignment().expect("assignment"));
        if last.as_ref() != Some(&assigned) {
            let list: Vec<String> = assigned.iter().map(i32::to_string).collect();
            let mut out = std::io::stdout().lock();
            writeln!(out, "member-assigned:{}", list.join(",")).expect("stdout");
            out.flush().expect("stdout");
            last = Some(assigned);
        }
    }
}

fn member_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "100");
    config
}

fn partitions_of(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// The surviving member: a consumer polled by a task of its own, recording what it receives.
struct Survivor {
    consumer: Arc<StreamConsumer>,
    received: Arc<Mutex<BTreeMap<i32, Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Survivor {
    fn start(stack: &Stack, topic: &str, group: &str) -> Survivor {
        let consumer: StreamConsumer = member_config(&stack.kafka_brokers, group)
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let consumer = Arc::new(consumer);
        let received = Arc::new(Mutex::new(BTreeMap::<i32, Vec<String>>::new()));
        let task = tokio::spawn({
            let consumer = Arc::clone(&consumer);
            let received = Arc::clone(&received);
            async move {
                loop {
                    match consumer.recv().await {
                        Ok(message) => {
                            let payload = String::from_utf8_lossy(message.payload().unwrap_or(b""))
                                .into_owned();
                            received
                                .lock()
                                .expect("lock")
                                .entry(message.partition())
                                .or_default()
                                .push(payload);
                        }
                        Err(e) => eprintln!("survivor: {e}"),
                    }
                }
            }
        });
        Survivor {
            consumer,
            received,
            task,
        }
    }

    fn assigned(&self) -> BTreeSet<i32> {
        partitions_of(&self.consumer.assignment().expect("assignment"))
    }

    fn received(&self, partition: i32, payload: &str) -> bool {
        self.received
            .lock()
            .expect("lock")
            .get(&partition)
            .is_some_and(|payloads| payloads.iter().any(|p| p == payload))
    }
}

impl Drop for Survivor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Two members share a topic of several partitions; one is SIGKILLed (no LeaveGroup). After its session
/// timeout the survivor must be assigned every partition and receive what is produced to each.
async fn killed_member_is_evicted(kill_the_leader: bool) {
    const PARTITIONS: i32 = 4;
    let stack = stack().await;
    let topic = stack.unique_name("broker-evict-");
    let group = stack.unique_name("broker-evict-group-");
    stack.create_kafka_topic(&topic, PARTITIONS).await;
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();

    // The first member to join leads the group (chooses the assignment).
    let (mut member, survivor) = if kill_the_leader {
        let member = KilledMember::spawn(stack, &topic, &group);
        wait_for(
            "the first member's assignment",
            Duration::from_secs(60),
            || member.assigned() == all,
        )
        .await;
        let survivor = Survivor::start(stack, &topic, &group);
        (member, survivor)
    } else {
        let survivor = Survivor::start(stack, &topic, &group);
        wait_for(
            "the first member's assignment",
            Duration::from_secs(60),
            || survivor.assigned() == all,
        )
        .await;
        let member = KilledMember::spawn(stack, &topic, &group);
        (member, survivor)
    };
    wait_for(
        "the partitions to be shared by both members",
        Duration::from_secs(60),
        || {
            let (a, b) = (survivor.assigned(), member.assigned());
            !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.union(&b).count() == all.len()
        },
    )
    .await;
    let before = survivor.assigned();

    member.kill();
    let after = Instant::now();
    let bound = Duration::from_millis(SESSION_TIMEOUT_MS) + Duration::from_secs(40);
    let started = Instant::now();
    while survivor.assigned() != all {
        assert!(
            started.elapsed() < bound,
            "{:?} after the {} member was SIGKILLed (session timeout {SESSION_TIMEOUT_MS} ms), the \
             survivor is assigned partitions {:?} of {all:?} (before the kill: {before:?}): the killed \
             member was not evicted, its partitions were not reassigned",
            started.elapsed(),
            if kill_the_leader { "leading" } else { "other" },
            survivor.assigned()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "survivor assigned every partition {:?} after the kill",
        after.elapsed()
    );

    // The survivor consumes every partition, the killed member's included.
    let producer = producer(stack);
    for partition in 0..PARTITIONS {
        let payload = format!("after-kill-{partition}");
        producer
            .send(
                FutureRecord::<(), _>::to(&topic)
                    .partition(partition)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to partition {partition}: {e}"));
    }
    wait_for(
        "the survivor to receive a record of every partition",
        Duration::from_secs(30),
        || (0..PARTITIONS).all(|p| survivor.received(p, &format!("after-kill-{p}"))),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_member_is_evicted_and_its_partitions_reassigned() {
    killed_member_is_evicted(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_group_leader_is_evicted_and_its_partitions_reassigned() {
    killed_member_is_evicted(true).await;
}

// ---------------------------------------------------------------------------------------------- restart

/// With the postgres storage, a broker killed with SIGKILL (no shutdown of any kind) and started again
/// keeps its topics, records and the group's committed offset: the watermarks are those of before, the
/// group resumes at its offset, inside a batch, and reads exactly the records after it; new records get
/// the offsets after the old ones.
#[tokio::test(flavor = "multi_thread")]
async fn records_and_committed_offsets_survive_a_broker_kill_with_postgres_storage() {
    let stack = private_stack_with(BrokerStorage::Postgres).await;
    let topic = topic_with_two_batches(&stack).await;
    let group = stack.unique_name("broker-restart-group-");
    // Inside the second batch: what a writer commits after storing part of what it fetched.
    let committed = ROUND + 7;

    let consumer: StreamConsumer = consumer_config(&stack, &group).create().expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.last().is_none_or(|last| *last < committed - 1) {
        assert!(
            Instant::now() < deadline,
            "the group received only {seen:?} before the restart"
        );
        if let Ok(message) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            seen.push(message.expect("consume").offset());
        }
    }
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, Offset::Offset(committed))
        .expect("partition offset");
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("commit before the restart");
    drop(consumer);

    tokio::task::block_in_place(|| {
        stack.kill_broker();
        stack.start_broker();
    });

    // The committed offset, as a restarted writer asks for it.
    let consumer: StreamConsumer = consumer_config(&stack, &group).create().expect("consumer");
    let mut partition = TopicPartitionList::new();
    partition.add_partition(&topic, 0);
    let stored = consumer
        .committed_offsets(partition, Duration::from_secs(10))
        .expect("committed offsets after the restart");
    assert_eq!(
        stored.find_partition(&topic, 0).map(|p| p.offset()),
        Some(Offset::Offset(committed)),
        "the group's committed offset after the broker was killed and started again"
    );

    // The partition's bounds, as a client asks for them (ListOffsets, read_committed: on PostgreSQL 15
    // the query of the unpatched engine fails, scripts/tansu-patches/tansu-storage/0004-*).
    let watermarks: BaseConsumer =
        consumer_config(&stack, &stack.unique_name("broker-restart-watermarks-"))
            .create()
            .expect("consumer");
    let partition_topic = topic.clone();
    let bounds = tokio::task::spawn_blocking(move || {
        watermarks
            .fetch_watermarks(&partition_topic, 0, Duration::from_secs(10))
            .expect("watermarks after the restart")
    })
    .await
    .expect("watermarks task");
    assert_eq!(
        bounds,
        (0, 2 * ROUND),
        "low and high watermark after the restart"
    );

    // The records after it, exactly.
    consumer.subscribe(&[&topic]).expect("subscribe");
    let end = 2 * ROUND;
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while after.last().is_none_or(|last| *last < end - 1) && Instant::now() < deadline {
        if let Ok(message) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            let message = message.expect("consume after the restart");
            assert_eq!(
                message.payload(),
                Some(format!("record-{}", message.offset()).as_bytes()),
                "payload of offset {} after the restart",
                message.offset()
            );
            after.push(message.offset());
        }
    }
    assert_eq!(
        after,
        (committed..end).collect::<Vec<_>>(),
        "after the restart the group did not resume at its committed offset {committed} and read \
         exactly the records up to {end}"
    );

    // New records go after the old ones (the partition's end survived too).
    let new = produce_round(&producer(&stack), &topic, 0, end, ROUND).await;
    assert_eq!(
        new,
        (end..end + ROUND).collect::<Vec<_>>(),
        "offsets of the records produced after the restart"
    );
}

// ---------------------------------------------------------------------------------------------- probe

/// Not a check: the produce and fetch rates of the broker of the test stack, printed, to compare the
/// storages by hand (docs/tansu-bugs.md, "Storage"):
/// `EVENTGATE_TEST_BROKER_STORAGE=postgres cargo nextest run -p eventgate-test-support --test broker
/// --run-ignored only --no-capture throughput_probe` (and again with `memory`).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, run by hand"]
async fn throughput_probe() {
    const PARTITIONS: i32 = 3;
    const RECORDS: usize = 60_000;
    let stack = stack().await;
    let topic = stack.unique_name("broker-probe-");
    stack.create_kafka_topic(&topic, PARTITIONS).await;
    let payload = "x".repeat(300);

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_brokers)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("producer");
    let started = Instant::now();
    let deliveries: Vec<_> = (0..RECORDS)
        .map(|i| {
            producer
                .send_result(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(i32::try_from(i % PARTITIONS as usize).expect("partition"))
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .expect("enqueue")
        })
        .collect();
    for delivery in deliveries {
        delivery
            .await
            .expect("delivery future")
            .unwrap_or_else(|(e, _)| panic!("not delivered: {e}"));
    }
    let produce = started.elapsed();

    let consumer: StreamConsumer = consumer_config(stack, &stack.unique_name("broker-probe-"))
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(600);
    // From the first record on: joining the group is not fetching.
    let mut first = None;
    let mut received = 0;
    while received < RECORDS {
        assert!(Instant::now() < deadline, "{received} of {RECORDS} fetched");
        if let Ok(message) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
            message.expect("consume");
            first.get_or_insert_with(Instant::now);
            received += 1;
        }
    }
    let fetch = first.map(|first| first.elapsed()).unwrap_or_default();
    eprintln!(
        "throughput probe: {RECORDS} records of {} bytes over {PARTITIONS} partitions: produce {:.1} s \
         ({:.0}/s), fetch {:.1} s ({:.0}/s)",
        payload.len(),
        produce.as_secs_f64(),
        RECORDS as f64 / produce.as_secs_f64(),
        fetch.as_secs_f64(),
        RECORDS as f64 / fetch.as_secs_f64()
    );
}
