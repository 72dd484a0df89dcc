//! A broker that crashes keeps what it acknowledged, as Kafka does: on the postgres storage of tansu
//! (what `make run` uses; the other tests keep the faster memory storage, which a restart empties), events
//! answered 202 before the broker is killed with SIGKILL are stored after it is started again, exactly
//! once, and the same ingest-api gets back to 202 by itself.

use std::time::Duration;

use eventgate_e2e::System;
use eventgate_test_support::{
    accepted_ids, assert_exactly_once, private_stack_with, token, wait_until, wait_until_stored,
    BrokerStorage,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(1_500);

fn audit(n: usize) -> Value {
    json!({"event_name": format!("event-{n}"), "description": "broker restart test", "customer_id": n})
}

/// POSTs events `from..from + count` in batches of 20; every batch must be answered 202. Returns the ids.
async fn post_all(system: &System, from: usize, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for start in (from..from + count).step_by(20) {
        let batch: Vec<Value> = (start..(start + 20).min(from + count)).map(audit).collect();
        let (status, answer) = system.post("audit.logs", "dev", &json!(batch)).await;
        assert_eq!(status, 202, "{answer}");
        ids.extend(accepted_ids(&answer));
    }
    ids
}

/// One event with a client-side bound: an answer (202 or 503) within the publish timeout plus slack.
async fn post_one(system: &System, n: usize) -> (u16, Value) {
    let response = system
        .http
        .post(format!("{}/topics/audit.logs", system.ingest_url))
        .bearer_auth(token("dev"))
        .json(&audit(n))
        .timeout(PUBLISH_TIMEOUT + Duration::from_secs(5))
        .send()
        .await
        .expect("an answer, not a hang");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_accepted_before_a_broker_kill_are_stored_after_its_restart() {
    let stack = private_stack_with(BrokerStorage::Postgres).await;
    let mut system = System::start_with(&stack, 1, |config| {
        config.ingest.publish_timeout_ms = PUBLISH_TIMEOUT.as_millis() as u64;
    })
    .await;

    // Stored before the crash: the writer has committed their offsets.
    let mut accepted = post_all(&system, 0, 40).await;
    wait_until_stored(&system.database, &accepted, WAIT)
        .await
        .expect("the first events stored");

    // Accepted, but only in the broker when it dies: no writer is running.
    for writer in system.writers.drain(..) {
        writer.stop().await.expect("the writer stops cleanly");
    }
    let in_broker_only = post_all(&system, 40, 200).await;
    assert_eq!(
        system.count_events().await,
        40,
        "no writer ran, yet events were stored"
    );
    accepted.extend(in_broker_only);

    tokio::task::block_in_place(|| {
        stack.kill_broker();
        stack.start_broker();
    });

    // The same ingest-api publishes again by itself (its producer reconnects; the topics are there).
    let after = std::sync::Mutex::new(Vec::new());
    wait_until("a 202 after the broker restarted", WAIT, || async {
        let (status, answer) = post_one(&system, 1_000).await;
        if status == 202 {
            after.lock().expect("lock").extend(accepted_ids(&answer));
        }
        status == 202
    })
    .await
    .expect("the ingest-api recovers by itself");
    accepted.extend(after.into_inner().expect("lock"));
    accepted.extend(post_all(&system, 1_001, 40).await);

    // A writer started after the crash resumes from the committed offsets and stores the rest: every
    // event answered 202, before or after the crash, exactly once.
    system.add_writer().await;
    assert_exactly_once(&system.database, &accepted, WAIT, || {
        stack.broker_log_tail(40)
    })
    .await;
}
