//! The walking skeleton, end to end, against the real Postgres and the real broker:
//! POST → Kafka → db-writer → Postgres → stats-api.

use std::collections::HashSet;
use std::time::Duration;

use eventgate_e2e::System;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn audit(n: usize) -> Value {
    json!({"event_name": format!("login-{n}"), "description": "user signed in", "customer_id": n})
}

fn ids(answer: &Value) -> Vec<String> {
    answer["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_event_and_batch_travel_to_the_stats_api() {
    let system = System::start(1).await;

    let (status, answer) = system.post("audit.logs", "dev", &audit(1)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["success"], true);
    assert_eq!(answer["statusCode"], 202);
    let single = ids(&answer);
    assert_eq!(single.len(), 1);

    let batch: Vec<Value> = (2..=4).map(audit).collect();
    let (status, answer) = system.post("audit.logs", "dev", &json!(batch)).await;
    assert_eq!(status, 202, "{answer}");
    let batch_ids = ids(&answer);
    assert_eq!(batch_ids.len(), 3);

    // audit.logs closes its properties (additionalProperties: false) without declaring `event_id`: the
    // id field is the gateway's, so the producer's own id is still taken, and the row carries it.
    let own_id = uuid::Uuid::now_v7().to_string();
    let mut with_id = audit(5);
    with_id["event_id"] = json!(own_id);
    let (status, answer) = system.post("audit.logs", "dev", &with_id).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(ids(&answer), std::slice::from_ref(&own_id));
    // Any other undeclared property is still refused.
    let mut extra = audit(6);
    extra["event_id"] = json!(uuid::Uuid::now_v7().to_string());
    extra["unexpected"] = json!(1);
    let (status, answer) = system.post("audit.logs", "dev", &extra).await;
    assert_eq!(status, 400, "{answer}");
    let text = answer.to_string();
    assert!(
        text.contains("'unexpected'") && !text.contains("'event_id'"),
        "{answer}"
    );

    system.wait_for_rows(5, WAIT).await;
    let stored = system
        .database
        .count(&format!(
            "SELECT count(*) FROM events WHERE id = '{own_id}'"
        ))
        .await
        .expect("count");
    assert_eq!(stored, 1);

    let (status, answer) = system
        .query(
            "audit.logs",
            "dev",
            &json!({"filter": {"event_name": "login-1"}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let data = answer["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{answer}");
    assert_eq!(data[0]["id"], single[0].as_str());
    assert_eq!(data[0]["topic"], "audit.logs");
    assert_eq!(data[0]["producer"], "dev");
    assert_eq!(data[0]["payload"], audit(1));
    assert_eq!(answer["pagination"]["has_more"], false);

    // Default order is newest first: the batch came after the single event.
    let all = system.query_all("audit.logs", json!({"limit": 10})).await;
    let returned: Vec<&str> = all.iter().map(|e| e["id"].as_str().expect("id")).collect();
    assert_eq!(returned.len(), 5);
    assert_eq!(returned[4], single[0], "oldest last");
    let expected: HashSet<&str> = single
        .iter()
        .chain(&batch_ids)
        .chain(std::iter::once(&own_id))
        .map(String::as_str)
        .collect();
    assert_eq!(returned.iter().copied().collect::<HashSet<_>>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_delivered_twice_is_stored_once() {
    let system = System::start(1).await;
    let event_id = uuid::Uuid::now_v7().to_string();
    let event = json!({
        "event_id": event_id, "run_id": 12345, "tenant_id": "avms", "source_app": "unify",
        "source_app_version": "1.0", "environment": "dev",
        "timestamp_start": 1736937000000_i64, "timestamp_end": 1736937060000_i64,
        "jobs": [{"catalog_id": "db.table", "status": "succeeded",
                  "timestamp_start": 1736937000000_i64, "timestamp_end": 1736937060000_i64}]
    });
    for _ in 0..2 {
        let (status, answer) = system.post("public.cps.za.runs", "dev", &event).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(ids(&answer), std::slice::from_ref(&event_id));
    }
    // A sentinel with the same key (run_id → same partition) posted after both copies: once it is
    // stored, both copies have been consumed before it.
    let mut sentinel = event.clone();
    sentinel["event_id"] = json!(uuid::Uuid::now_v7().to_string());
    sentinel["source_app"] = json!("sentinel");
    let (status, answer) = system.post("public.cps.za.runs", "dev", &sentinel).await;
    assert_eq!(status, 202, "{answer}");
    system
        .wait_for(
            "the sentinel",
            WAIT,
            "SELECT count(*) FROM events WHERE payload->>'source_app' = 'sentinel'",
        )
        .await;
    assert_eq!(
        system.published_messages("public.cps.za.runs"),
        3,
        "both copies reached Kafka"
    );
    let copies = system
        .database
        .count(&format!(
            "SELECT count(*) FROM events WHERE id = '{event_id}'"
        ))
        .await
        .expect("count");
    assert_eq!(copies, 1);
    assert_eq!(system.count_events().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_in_one_group_share_the_work_exactly_once() {
    let system = System::start(2).await;
    system.wait_for_balanced_group(WAIT).await;
    // Events for every topic: the sticky assignor may give one writer all partitions of one topic, so
    // only traffic on every partition shows that each member writes what it owns.
    let per_topic = 200;
    for chunk in 0..10 {
        let audit_batch: Vec<Value> = (0..per_topic / 10)
            .map(|i| audit(chunk * 100 + i))
            .collect();
        let web_batch: Vec<Value> = (0..per_topic / 10)
            .map(|i| {
                json!({"session_id": format!("s-{chunk}-{i}"), "category": "page", "name": "view",
                       "timestamp": "2025-01-15T10:00:00Z"})
            })
            .collect();
        let runs_batch: Vec<Value> = (0..per_topic / 10)
            .map(|i| run_event((chunk * 100 + i) as i64))
            .collect();
        for (topic, batch) in [
            ("audit.logs", audit_batch),
            ("web.events", web_batch),
            ("public.cps.za.runs", runs_batch),
        ] {
            let (status, answer) = system.post(topic, "dev", &json!(batch)).await;
            assert_eq!(status, 202, "{topic}: {answer}");
        }
    }
    let total = 3 * per_topic;
    system.wait_for_rows(total as i64, WAIT).await;
    let distinct = system
        .database
        .count("SELECT count(DISTINCT id) FROM events")
        .await
        .expect("count");
    assert_eq!(distinct, total as i64);
    assert_eq!(system.count_events().await, total as i64);
    let per_writer: Vec<u64> = system
        .writers
        .iter()
        .map(|w| w.metrics.rows_inserted.get())
        .collect();
    assert_eq!(
        per_writer.iter().sum::<u64>(),
        total as u64,
        "{per_writer:?}"
    );
    assert!(
        per_writer.iter().all(|&n| n > 0),
        "both writers must have written: {per_writer:?}"
    );
}

fn run_event(run_id: i64) -> Value {
    json!({
        "event_id": uuid::Uuid::now_v7().to_string(), "run_id": run_id, "tenant_id": "avms",
        "source_app": "unify", "source_app_version": "1.0", "environment": "dev",
        "timestamp_start": 1736937000000_i64, "timestamp_end": 1736937060000_i64,
        "jobs": [{"catalog_id": "db.table", "status": "succeeded",
                  "timestamp_start": 1736937000000_i64, "timestamp_end": 1736937060000_i64}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_returns_every_event_exactly_once() {
    let system = System::start(1).await;
    let total = 57;
    for chunk in 0..3 {
        let batch: Vec<Value> = (0..19).map(|i| audit(chunk * 19 + i)).collect();
        let (status, answer) = system.post("audit.logs", "dev", &json!(batch)).await;
        assert_eq!(status, 202, "{answer}");
    }
    system.wait_for_rows(total, WAIT).await;
    let all = system.query_all("audit.logs", json!({"limit": 10})).await;
    assert_eq!(all.len(), total as usize);
    let unique: HashSet<&str> = all.iter().map(|e| e["id"].as_str().expect("id")).collect();
    assert_eq!(unique.len(), total as usize, "no event twice");
    let times: Vec<&str> = all
        .iter()
        .map(|e| e["timestamp"].as_str().expect("timestamp"))
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first across pages");
}
