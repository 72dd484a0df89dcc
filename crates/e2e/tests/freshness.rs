//! Freshness through the whole pipeline: the writer records each topic's watermark in its batches'
//! transactions, and every stats answer reports it. With the writer stopped, events accepted meanwhile
//! wait in Kafka: the answers' `age_ms` grows and `newest_event_at` stays at the last stored event;
//! once a writer runs again they are stored and the freshness recovers.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use eventgate_e2e::System;
use eventgate_test_support::token;

const TOPIC: &str = "audit.logs";

async fn freshness(system: &System) -> (Value, String) {
    let response = system
        .http
        .get(format!("{}/stats/{TOPIC}?limit=1", system.stats_url))
        .bearer_auth(token("dev"))
        .send()
        .await
        .expect("stats-api answers");
    assert_eq!(response.status(), 200);
    let header = response.headers()["eventgate-freshness"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = response.json().await.expect("json");
    (body["freshness"].clone(), header)
}

fn event(n: u64) -> Value {
    json!({"event_name": "login", "description": format!("event {n}"), "customer_id": n})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_age_grows_while_the_writer_is_stopped_and_recovers_after() {
    let mut system = System::start(1).await;
    let (status, _) = system.post(TOPIC, "dev", &event(1)).await;
    assert_eq!(status, 202);
    system.wait_for_rows(1, Duration::from_secs(60)).await;
    // The cached watermark is at most a second old.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (before, header) = freshness(&system).await;
    let stored_newest = before["newest_event_at"].clone();
    assert!(stored_newest.is_string(), "{before}");
    assert!(header.contains("age-ms="), "{header}");
    let lag = before["lag_ms"].as_i64().expect("lag");
    assert!(lag < 30_000, "the writer stored it promptly: {before}");

    // The writer stops; events are still accepted (into Kafka) but not stored.
    system
        .writers
        .pop()
        .expect("a writer")
        .stop()
        .await
        .expect("the writer stops");
    for n in 2..5 {
        let (status, _) = system.post(TOPIC, "dev", &event(n)).await;
        assert_eq!(status, 202);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (stalled, _) = freshness(&system).await;
    assert_eq!(
        stalled["newest_event_at"], stored_newest,
        "nothing newer is stored: {stalled}"
    );
    let stalled_age = stalled["age_ms"].as_i64().expect("age");
    assert!(stalled_age >= 3_000, "the age grows: {stalled}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (later, header) = freshness(&system).await;
    assert!(
        later["age_ms"].as_i64().expect("age") >= stalled_age + 1_500,
        "and keeps growing: {later} after {stalled}"
    );
    assert!(
        header.contains(&format!(
            "newest-event-at={}",
            serde_json::to_string(&stored_newest).expect("json")
        )),
        "{header}"
    );

    // A writer again: the waiting events are stored, the watermark moves to them.
    system.add_writer().await;
    system.wait_for_rows(4, Duration::from_secs(90)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let caught_up = loop {
        let (recovered, _) = freshness(&system).await;
        if recovered["newest_event_at"] != stored_newest {
            break recovered;
        }
        assert!(Instant::now() < deadline, "the watermark moved");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        caught_up["newest_event_at"].as_str() > stored_newest.as_str(),
        "{caught_up}"
    );
    assert!(
        caught_up["lag_ms"].as_i64().expect("lag") >= 3_000,
        "the batch was stored late, and says so: {caught_up}"
    );
    // And new events are stored promptly again: the age falls back.
    let (status, _) = system.post(TOPIC, "dev", &event(5)).await;
    assert_eq!(status, 202);
    system.wait_for_rows(5, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (fresh, _) = freshness(&system).await;
        if fresh["newest_event_at"] != caught_up["newest_event_at"] {
            assert!(fresh["age_ms"].as_i64().expect("age") < 3_000, "{fresh}");
            assert!(fresh["lag_ms"].as_i64().expect("lag") < 3_000, "{fresh}");
            break;
        }
        assert!(Instant::now() < deadline, "the watermark moved again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
