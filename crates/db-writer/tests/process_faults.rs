//! Writers as processes, killed for real: the `eventgate-db-writer` binary under SIGKILL (mid-batch, and
//! between its Postgres commit and its Kafka commit), in a group that gains, loses (its leader included)
//! and regains members while the topics fill under load, and crash-looping. The ingest-api and the
//! stats-api run in-process (`eventgate_e2e::System`); every event answered 202 must be in Postgres
//! exactly once. (SIGTERM: `tests/shutdown.rs`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use eventgate_e2e::System;
use eventgate_test_support::{
    accepted_ids, assert_exactly_once, free_port, metric, private_stack, stack, wait_until,
    ReceivedMail, ServiceProcess, SmtpSink,
};

const WAIT: Duration = Duration::from_secs(90);
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// A writer process, killed when dropped so that a failing test leaves nothing behind.
struct WriterProcess {
    process: ServiceProcess,
    port: u16,
}

impl WriterProcess {
    /// The binary as operators run it: configured by `EVENTGATE_*` variables only.
    fn spawn(system: &System, name: &str, extra: &[(&str, String)]) -> WriterProcess {
        let config = &system.config;
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("eventgate-writers-{}", system.database.name));
        std::fs::create_dir_all(&dir).expect("log dir");
        let mut env: Vec<(&str, String)> = vec![
            (
                "EVENTGATE_CATALOGUE__TOPICS_DIR",
                config.catalogue.topics_dir.display().to_string(),
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
            (
                "EVENTGATE_WRITER__DATABASE_URL",
                config.writer.database_url.expose().to_owned(),
            ),
            ("EVENTGATE_WRITER__RUN_MIGRATIONS", "false".into()),
            ("EVENTGATE_WRITER__GROUP_ID", config.writer.group_id.clone()),
            ("EVENTGATE_WRITER__LISTEN", format!("127.0.0.1:{port}")),
            ("EVENTGATE_WRITER__BATCH_TIMEOUT_MS", "50".into()),
            ("EVENTGATE_WRITER__RETRY_MAX_MS", "500".into()),
            // A killed member's partitions move on after 6 s (the broker's minimum), not 45.
            (
                "EVENTGATE_WRITER__SESSION_TIMEOUT_MS",
                SESSION_TIMEOUT.as_millis().to_string(),
            ),
            ("EVENTGATE_TELEMETRY__LOG_FORMAT", "json".into()),
        ];
        env.extend(extra.iter().cloned());
        let process = ServiceProcess::spawn(
            env!("CARGO_BIN_EXE_eventgate-db-writer"),
            &format!("writer {name}"),
            &env,
            &dir.join(format!("{name}.log")),
        );
        WriterProcess { process, port }
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// SIGKILL: no batch written, nothing committed, no goodbye to the group.
    fn kill(self) {
        self.process.kill();
    }

    /// SIGSTOP or SIGCONT: a writer that hangs (stops polling and heartbeating) and comes back.
    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {}", self.pid());
    }

    /// SIGTERM, and the exit status once it is gone.
    async fn terminate(self) -> std::process::ExitStatus {
        self.process.terminate(WAIT).await
    }

    /// Partitions this writer owns, from its metrics; 0 while it is not up yet.
    async fn owned_partitions(&self, http: &reqwest::Client) -> i64 {
        metric(http, self.port, "eventgate_writer_assigned_partitions")
            .await
            .map_or(0, |owned| owned as i64)
    }
}

/// Partitions of all the catalogue's topics: what a settled group owns between its members.
fn partitions(system: &System) -> i64 {
    let topics = std::fs::read_dir(&system.config.catalogue.topics_dir)
        .expect("topics dir")
        .count() as i64;
    topics * i64::from(system.config.kafka.partitions)
}

fn audit(n: usize) -> Value {
    json!({"event_name": format!("event-{n}"), "description": "writer fault test", "customer_id": n})
}

/// POSTs a batch of `size` events; they must all be accepted. Returns their ids.
async fn post_batch(system: &System, first: usize, size: usize) -> Vec<String> {
    let batch: Vec<Value> = (first..first + size).map(audit).collect();
    let (status, answer) = system.post("audit.logs", "dev", &json!(batch)).await;
    assert_eq!(status, 202, "{answer}");
    accepted_ids(&answer)
}

/// Every id is stored, exactly once, and the table holds nothing else.
async fn assert_stored_once(system: &System, accepted: &[String], writers: &[&WriterProcess]) {
    assert_exactly_once(&system.database, accepted, WAIT, || {
        let logs: Vec<String> = writers.iter().map(|w| w.log()).collect();
        logs.join("\n")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_batch_loses_and_duplicates_nothing() {
    let system = System::start_with(stack().await, 0, |_| {}).await;
    let first = WriterProcess::spawn(&system, "first", &[]);
    let mut accepted = post_batch(&system, 0, 5).await;
    assert_stored_once(&system, &accepted, &[&first]).await;

    // Hold the next batch in the middle of its transaction: a lock that lets the test read the table
    // but makes the writer's INSERT wait. Its messages are consumed and not committed.
    let admin = eventgate_core::db::build_pool(
        &system.database.admin_url,
        &eventgate_core::db::pool::PoolSettings::new(1),
    )
    .expect("admin pool");
    let lock = admin.get().await.expect("admin connection");
    lock.batch_execute("BEGIN; LOCK TABLE events IN SHARE MODE")
        .await
        .expect("lock");
    accepted.extend(post_batch(&system, 5, 50).await);
    system
        .wait_for(
            "the writer's INSERT to wait on the lock",
            WAIT,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO events%'",
        )
        .await;
    first.kill();
    lock.batch_execute("ROLLBACK").await.expect("unlock");

    // Events keep coming while no writer runs; a new one takes over from the last committed offsets.
    accepted.extend(post_batch(&system, 55, 50).await);
    let second = WriterProcess::spawn(&system, "second", &[]);
    accepted.extend(post_batch(&system, 105, 50).await);
    assert_stored_once(&system, &accepted, &[&second]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_added_killed_and_restarted_while_the_topics_fill_under_load() {
    let system = Arc::new(System::start_with(stack().await, 0, |_| {}).await);
    let http = reqwest::Client::new();
    let all = partitions(&system);
    // The first writer forms the group alone, so it is the group's leader (the member that computes
    // the assignments): it is the first one killed below.
    let w1 = WriterProcess::spawn(&system, "w1", &[]);
    wait_until("the first writer to form the group", WAIT, || async {
        w1.owned_partitions(&http).await == all
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", w1.log()));

    let stop = Arc::new(AtomicBool::new(false));
    let streaming = stream_under_load(system.clone(), stop.clone(), 3);
    system.wait_for_rows(1_000, WAIT).await;

    // Two members join while the topics fill: partitions move from the leader to them mid-stream, and
    // their new owners resume from committed offsets inside the producers' batches.
    let (w2, w3) = (
        WriterProcess::spawn(&system, "w2", &[]),
        WriterProcess::spawn(&system, "w3", &[]),
    );
    wait_for_sharing(&http, all, &[&w1, &w2, &w3]).await;
    let rows = system.count_events().await;
    system.wait_for_rows(rows + 2_000, WAIT).await;

    // The leader dies without a goodbye. After its session the group evicts it and a survivor leads:
    // its partitions go to the two survivors, with no member joining to trigger it.
    w1.kill();
    wait_for_sharing(&http, all, &[&w2, &w3]).await;
    let rows = system.count_events().await;
    system.wait_for_rows(rows + 2_000, WAIT).await;

    // It is restarted (a new member) and gets a share back; then a follower dies.
    let w1 = WriterProcess::spawn(&system, "w1-restarted", &[]);
    wait_for_sharing(&http, all, &[&w1, &w2, &w3]).await;
    let rows = system.count_events().await;
    system.wait_for_rows(rows + 2_000, WAIT).await;
    w3.kill();
    wait_for_sharing(&http, all, &[&w1, &w2]).await;
    let rows = system.count_events().await;
    system.wait_for_rows(rows + 2_000, WAIT).await;

    stop.store(true, Ordering::SeqCst);
    let accepted = streaming.await.expect("streaming task");
    assert_stored_once(&system, &accepted, &[&w1, &w2]).await;
    assert_eq!(
        system
            .database
            .count("SELECT count(*) FROM dead_letters")
            .await
            .expect("count"),
        0
    );
}

/// Waits until `writers` together own every partition, each some: the group settled on them alone.
async fn wait_for_sharing(http: &reqwest::Client, all: i64, writers: &[&WriterProcess]) {
    let shared = wait_until(
        &format!("{} writers sharing the partitions", writers.len()),
        WAIT,
        || async {
            let mut owned = Vec::new();
            for writer in writers {
                owned.push(writer.owned_partitions(http).await);
            }
            owned.iter().all(|&n| n > 0) && owned.iter().sum::<i64>() == all
        },
    )
    .await;
    if let Err(error) = shared {
        let logs: Vec<String> = writers.iter().map(|w| w.log()).collect();
        panic!("{error:#}\n{}", logs.join("\n"));
    }
}

fn web(n: usize) -> Value {
    json!({
        "session_id": format!("s-{n}"),
        "category": "c",
        "name": "view",
        "timestamp": "2025-01-15T10:00:00Z",
    })
}

/// Producers under load: `posters` concurrent clients POST batches of 200 to 500 events, in turn to
/// `audit.logs` and to `web.events`, until `stop` is set; returns the ids answered 202. A batch of
/// hundreds of events becomes record batches of hundreds of messages in Kafka, so the offsets the
/// writers commit, and resume from after a rebalance, fall inside record batches.
fn stream_under_load(
    system: Arc<System>,
    stop: Arc<AtomicBool>,
    posters: usize,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut clients = tokio::task::JoinSet::new();
        for poster in 0..posters {
            let (system, stop) = (system.clone(), stop.clone());
            clients.spawn(async move {
                let mut accepted = Vec::new();
                // Each poster numbers its own events; only the ids matter for the check.
                let mut n = poster * 100_000_000;
                let mut round = 0;
                while !stop.load(Ordering::SeqCst) {
                    let size = 200 + (round * 137 + poster * 59) % 301;
                    let (topic, batch): (&str, Vec<Value>) = if round % 2 == 0 {
                        ("audit.logs", (n..n + size).map(audit).collect())
                    } else {
                        ("web.events", (n..n + size).map(web).collect())
                    };
                    let (status, answer) = system.post(topic, "dev", &json!(batch)).await;
                    assert_eq!(status, 202, "{answer}");
                    accepted.extend(accepted_ids(&answer));
                    n += size;
                    round += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                accepted
            });
        }
        let mut accepted = Vec::new();
        while let Some(ids) = clients.join_next().await {
            accepted.extend(ids.expect("poster task"));
        }
        accepted
    })
}

/// Offsets the group committed on `audit.logs`, summed over its partitions (0 where none).
fn committed_audit_offsets(system: &System) -> i64 {
    let consumer: BaseConsumer = eventgate_core::kafka::client_config(&system.config.kafka)
        .set("group.id", &system.config.writer.group_id)
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..system.config.kafka.partitions {
        partitions.add_partition(&system.config.kafka.kafka_topic("audit.logs"), partition);
    }
    consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .map(|element| match element.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_between_its_two_commits_replays_onto_stored_rows() {
    // The cluster's replication settings change mid-test: a stack of the test's own.
    let stack = private_stack().await;
    let system = System::start_with(&stack, 0, |_| {}).await;
    let http = reqwest::Client::new();
    let first = WriterProcess::spawn(&system, "first", &[]);
    let mut accepted = post_batch(&system, 0, 5).await;
    assert_stored_once(&system, &accepted, &[&first]).await;
    wait_until("the first batch's offsets committed", WAIT, || async {
        tokio::task::block_in_place(|| committed_audit_offsets(&system)) == 5
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", first.log()));

    // Between the Postgres commit and the Kafka commit, with no hook in the writer: commits wait for a
    // synchronous standby that does not exist. The writer's COMMIT record is flushed (the transaction
    // completes when the wait ends, whatever became of the client) but not answered, so the writer
    // cannot go on to commit the offsets. Killed there, it dies between its two commits.
    let (admin, connection) =
        tokio_postgres::connect(&system.database.admin_url, tokio_postgres::NoTls)
            .await
            .expect("admin connection");
    tokio::spawn(connection);
    let configure = |statement: &'static str| {
        let admin = &admin;
        async move {
            // ALTER SYSTEM runs alone, outside any transaction block.
            admin.batch_execute(statement).await.expect(statement);
            admin
                .batch_execute("SELECT pg_reload_conf()")
                .await
                .expect("reload");
        }
    };
    configure("ALTER SYSTEM SET synchronous_standby_names = 'no_such_standby'").await;
    accepted.extend(post_batch(&system, 5, 50).await);
    system
        .wait_for(
            "the writer's COMMIT to wait for the standby",
            WAIT,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event = 'SyncRep' AND query = 'COMMIT'",
        )
        .await;
    first.kill();
    // Without the standby requirement the waiting backends finish their commits: the rows are stored,
    // their offsets were never committed.
    configure("ALTER SYSTEM RESET synchronous_standby_names").await;
    wait_until("the waiting commits to finish", WAIT, || async {
        system
            .database
            .count("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
            .await
            .is_ok_and(|waiting| waiting == 0)
    })
    .await
    .expect("commits done");
    // At least the batch whose COMMIT was seen waiting; all 50 if they were read in time.
    let stored = system.count_events().await;
    assert!(stored > 5, "{stored} rows");
    assert_eq!(
        tokio::task::block_in_place(|| committed_audit_offsets(&system)),
        5,
        "the stored batch's offsets were never committed"
    );

    // A new writer reads the stored batch again from the committed offsets: its insert meets the
    // stored ids and skips them (ON CONFLICT), then the new events are written.
    let second = WriterProcess::spawn(&system, "second", &[]);
    accepted.extend(post_batch(&system, 55, 50).await);
    assert_stored_once(&system, &accepted, &[&second]).await;
    // (rows inserted, messages written) by the second writer.
    let written = || async {
        let inserted = metric(&http, second.port, "eventgate_writer_rows_inserted_total").await;
        let messages = metric(&http, second.port, "eventgate_writer_batch_size_sum").await;
        (
            inserted.unwrap_or(0.0) as i64,
            messages.unwrap_or(0.0) as i64,
        )
    };
    let replayed = wait_until("the replay to be skipped as stored", WAIT, || async {
        let (inserted, messages) = written().await;
        inserted == 105 - stored && messages >= 100
    })
    .await;
    if let Err(error) = replayed {
        let (inserted, messages) = written().await;
        panic!(
            "{error:#}: {inserted} rows inserted of {messages} messages written\n{}",
            second.log()
        );
    }
    assert_eq!(
        system
            .database
            .count("SELECT count(*) FROM dead_letters")
            .await
            .expect("count"),
        0
    );
}

/// POSTs batches of 5 events to `audit.logs` and to `web.events` until `stop` is set; returns the ids
/// answered 202. Two writers share the catalogue's partitions half and half, so both own partitions of
/// these two topics and both get events.
fn stream_to_two_topics(
    system: Arc<System>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            accepted.extend(post_batch(&system, n, 5).await);
            let web: Vec<Value> = (n..n + 5).map(web).collect();
            let (status, answer) = system.post("web.events", "dev", &json!(web)).await;
            assert_eq!(status, 202, "{answer}");
            accepted.extend(accepted_ids(&answer));
            n += 5;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        accepted
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_frozen_past_its_session_loses_its_partitions_and_nothing_is_lost() {
    let system = Arc::new(System::start_with(stack().await, 0, |_| {}).await);
    let http = reqwest::Client::new();
    let all = partitions(&system);
    let (w1, w2) = (
        WriterProcess::spawn(&system, "w1", &[]),
        WriterProcess::spawn(&system, "w2", &[]),
    );
    wait_until("two writers sharing the partitions", WAIT, || async {
        let owned = [
            w1.owned_partitions(&http).await,
            w2.owned_partitions(&http).await,
        ];
        owned.iter().all(|&n| n > 0) && owned.iter().sum::<i64>() == all
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", w1.log(), w2.log()));

    let stop = Arc::new(AtomicBool::new(false));
    let streaming = stream_to_two_topics(system.clone(), stop.clone());
    system.wait_for_rows(30, WAIT).await;
    // A writer hangs with the batches in hand: no poll, no heartbeat. After its session the group
    // gives all its partitions to the other, which reads them from the last committed offsets.
    w2.signal("-STOP");
    wait_until("the other writer to own every partition", WAIT, || async {
        w1.owned_partitions(&http).await == all
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", w1.log(), w2.log()));
    let rows = system.count_events().await;
    system.wait_for_rows(rows + 30, WAIT).await;
    // It comes back: its assignment is lost, what it had in hand is the other's now; it rejoins.
    w2.signal("-CONT");
    wait_until("the two writers sharing again", WAIT, || async {
        let owned = [
            w1.owned_partitions(&http).await,
            w2.owned_partitions(&http).await,
        ];
        owned.iter().all(|&n| n > 0) && owned.iter().sum::<i64>() == all
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", w1.log(), w2.log()));
    let rows = system.count_events().await;
    system.wait_for_rows(rows + 30, WAIT).await;
    stop.store(true, Ordering::SeqCst);
    let accepted = streaming.await.expect("streaming task");
    assert_stored_once(&system, &accepted, &[&w1, &w2]).await;
    assert_eq!(
        system
            .database
            .count("SELECT count(*) FROM dead_letters")
            .await
            .expect("count"),
        0
    );
}

fn words(mail: &ReceivedMail) -> String {
    mail.body().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_emailed_once_and_its_end_too() {
    let sink = SmtpSink::start();
    let system = System::start_with(stack().await, 0, |_| {}).await;
    let alerts = [
        ("EVENTGATE_SMTP__HOST", "127.0.0.1".to_owned()),
        ("EVENTGATE_SMTP__PORT", sink.port.to_string()),
        ("EVENTGATE_SMTP__TLS", "none".to_owned()),
        ("EVENTGATE_SMTP__FROM", "alerts@eventgate.test".to_owned()),
        (
            "EVENTGATE_ALERTS__MAINTAINERS",
            "[ops@example.test]".to_owned(),
        ),
        ("EVENTGATE_ALERTS__CRASH_LOOP_CRASHES", "2".to_owned()),
        ("EVENTGATE_ALERTS__WINDOW_MS", "8000".to_owned()),
        ("EVENTGATE_ALERTS__PROBE_INTERVAL_MS", "200".to_owned()),
    ];
    let runs = |n: i64| {
        let system = &system;
        async move {
            system
                .database
                .count("SELECT count(*) FROM writer_runs")
                .await
                .unwrap_or(0)
                >= n
        }
    };
    // Two writers die without a clean stop, soon after they started.
    let mut crashed = Vec::new();
    for n in 1..=2 {
        let writer = WriterProcess::spawn(&system, &format!("crash{n}"), &alerts);
        wait_until("the writer to record its start", WAIT, || runs(n))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", writer.log()));
        crashed.push(writer.pid());
        writer.kill();
    }
    // The third one sees the loop and tells the maintainer, once.
    let third = WriterProcess::spawn(&system, "third", &alerts);
    let mails = sink
        .wait_for(1, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", third.log()));
    let alert = &mails[0];
    assert_eq!(alert.to, vec!["ops@example.test".to_owned()]);
    assert_eq!(
        alert.subject().as_deref(),
        Some("[eventgate] ALERT: writer crash loop, 2 crashes within the window")
    );
    let body = words(alert);
    for pid in &crashed {
        assert!(body.contains(&format!("pid {pid}: started")), "{body}");
    }
    assert!(body.contains("no clean stop"), "{body}");
    assert!(
        body.contains(&format!("pid {}", third.pid())),
        "reported by the third: {body}"
    );

    // The crashes age out of the window while the third keeps running: the loop is over.
    let mails = sink
        .wait_for(2, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", third.log()));
    assert_eq!(
        mails[1].subject().as_deref(),
        Some("[eventgate] RECOVERED: writers stable again")
    );
    assert_eq!(sink.messages().len(), 2, "one alert, one recovered");

    // A clean stop is recorded as such, so it never counts as a crash.
    let log = third.log();
    let status = third.terminate().await;
    assert!(status.success(), "{status:?}\n{log}");
    assert_eq!(
        system
            .database
            .count("SELECT count(*) FROM writer_runs WHERE stopped_at IS NOT NULL")
            .await
            .expect("count"),
        1
    );
}
