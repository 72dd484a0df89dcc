//! Writes that cannot go through for a while, on the real stack (Postgres, the tansu broker, the
//! ingest-api and in-process writers, `eventgate_e2e::System`): every event answered 202 is stored once,
//! nothing valid is parked, and the writers stay in their group.
//!
//! - Postgres down for longer than the writers' `max.poll.interval.ms`, with two writers: they pause their
//!   partitions and keep polling, so neither is ejected.
//! - A lock held on `events` past the writer's `lock_timeout`: the write fails with 55P03, a timeout, and
//!   is retried until the lock is gone; its events are stored, none in `dead_letters`.
//!
//! (The rebalance cases without a broker's quirks: `tests/rebalance.rs`, on librdkafka's mock cluster.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use eventgate_e2e::System;
use eventgate_test_support::{accepted_ids, assert_exactly_once, private_stack, stack};

const WAIT: Duration = Duration::from_secs(90);

fn audit(n: usize) -> Value {
    json!({"event_name": format!("event-{n}"), "description": "stall test", "customer_id": n})
}

fn web_event(n: usize) -> Value {
    json!({"session_id": format!("s-{n}"), "category": "stall", "name": "view", "timestamp": "2025-01-15T10:00:00Z"})
}

/// POSTs small batches of events to two topics until `stop` is set; returns the ids of every event
/// answered 202. Two topics have more partitions than one writer of two owns (each owns half of the
/// catalogue's): both writers get events.
fn stream_events(
    system: Arc<System>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let audits: Vec<Value> = (0..5).map(|i| audit(n + i)).collect();
            let webs: Vec<Value> = (0..5).map(|i| web_event(n + i)).collect();
            n += 5;
            for (topic, batch) in [("audit.logs", audits), ("web.events", webs)] {
                let (status, answer) = system.post(topic, "dev", &json!(batch)).await;
                if status == 202 {
                    accepted.extend(accepted_ids(&answer));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        accepted
    })
}

async fn dead_letters(system: &System) -> i64 {
    system
        .database
        .count("SELECT count(*) FROM dead_letters")
        .await
        .expect("count dead letters")
}

/// Partitions each writer owns now.
fn owned(system: &System) -> Vec<i64> {
    system
        .writers
        .iter()
        .map(|writer| writer.metrics.assigned_partitions.get())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_poll_interval_ejects_no_writer_and_loses_nothing() {
    const MAX_POLL_INTERVAL_MS: u64 = 10_000;
    let stack = private_stack().await;
    let system = Arc::new(
        System::start_with(&stack, 2, |config| {
            config.writer.max_poll_interval_ms = MAX_POLL_INTERVAL_MS;
            config.writer.session_timeout_ms = 6_000;
            // Batches fill up within the outage, so both writes in flight and a full batch are held.
            config.writer.batch_size = 20;
            // Back quickly once Postgres is up again.
            config.writer.retry_max_ms = 500;
        })
        .await,
    );
    // The writers' logs, shown when the test fails.
    let _telemetry = eventgate_core::telemetry::init(&system.config.telemetry, "stalls-test");
    system.wait_for_balanced_group(WAIT).await;
    let balanced = owned(&system);

    let stop = Arc::new(AtomicBool::new(false));
    let streaming = stream_events(system.clone(), stop.clone());
    system.wait_for_rows(40, WAIT).await;

    tokio::task::block_in_place(|| stack.stop_postgres());
    // The outage lasts one and a half poll intervals while events keep coming; the group must not
    // change: a writer that stopped polling would leave it after the poll interval.
    let outage = Duration::from_millis(MAX_POLL_INTERVAL_MS * 3 / 2);
    let until = tokio::time::Instant::now() + outage;
    while tokio::time::Instant::now() < until {
        assert_eq!(owned(&system), balanced, "a writer lost its partitions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::block_in_place(|| stack.start_postgres());

    let after_outage = system.count_events().await;
    system.wait_for_rows(after_outage + 40, WAIT).await;
    stop.store(true, Ordering::SeqCst);
    let accepted = streaming.await.expect("streaming task");
    assert_exactly_once(&system.database, &accepted, WAIT, String::new).await;
    assert_eq!(dead_letters(&system).await, 0, "nothing valid is parked");
    assert_eq!(owned(&system), balanced, "the group never changed");
    for writer in &system.writers {
        assert_eq!(
            writer.metrics.consumer_errors.get(),
            0,
            "no consumer error (such as the poll interval exceeded)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_on_events_past_the_lock_timeout_is_retried_and_nothing_is_parked() {
    let system = System::start_with(stack().await, 1, |config| {
        config.writer.lock_timeout_ms = 1_000;
        config.writer.retry_max_ms = 500;
    })
    .await;
    let first: Vec<Value> = (0..5).map(audit).collect();
    let (status, answer) = system.post("audit.logs", "dev", &json!(first)).await;
    assert_eq!(status, 202, "{answer}");
    let mut accepted = accepted_ids(&answer);
    system.wait_for_rows(5, WAIT).await;

    // A DBA's lock on the table: the writer's INSERT waits for it, then gives up after its lock timeout.
    let (lock, connection) =
        tokio_postgres::connect(&system.database.admin_url, tokio_postgres::NoTls)
            .await
            .expect("admin connection");
    tokio::spawn(connection);
    lock.batch_execute("BEGIN; LOCK TABLE events IN SHARE MODE")
        .await
        .expect("lock");
    let second: Vec<Value> = (5..25).map(audit).collect();
    let (status, answer) = system.post("audit.logs", "dev", &json!(second)).await;
    assert_eq!(status, 202, "{answer}");
    accepted.extend(accepted_ids(&answer));
    system
        .wait_for(
            "the writer's INSERT to wait on the lock",
            WAIT,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO events%'",
        )
        .await;
    // The lock outlives two lock timeouts.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let metrics = &system.writers[0].metrics;
    assert!(
        metrics.write_retries.get() >= 2,
        "the write failed on the lock timeout and was retried: {}",
        metrics.write_retries.get()
    );
    assert_eq!(system.count_events().await, 5, "held by the lock");
    assert_eq!(
        dead_letters(&system).await,
        0,
        "a lock timeout parks nothing"
    );
    lock.batch_execute("ROLLBACK").await.expect("unlock");

    assert_exactly_once(&system.database, &accepted, WAIT, String::new).await;
    assert_eq!(dead_letters(&system).await, 0, "nothing valid is parked");
    assert_eq!(metrics.dead_letters.get(), 0);
}
