//! Idempotency is scoped to who sent an event, end to end (HTTP → Kafka → writer → Postgres → stats-api):
//! an `event_id` is unique per (topic, producer). Another producer's event with the same id, on the same
//! topic or another, is stored and shown with that id; the same producer's retry is stored once; the same
//! producer re-sending the id with another payload keeps the first and is parked as a
//! `conflicting_duplicate` dead letter, counted by `eventgate_writer_conflicting_duplicates_total`.

use std::time::Duration;

use eventgate_e2e::{repo_root, System};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const X: &str = "public.cps.za.runs";
/// A second topic with the same schema, which both producers may write.
const Y: &str = "other.runs";

fn run(event_id: &str, source_app: &str) -> Value {
    json!({
        "event_id": event_id, "run_id": 4242, "tenant_id": "avms", "source_app": source_app,
        "source_app_version": "1.0", "environment": "dev",
        "timestamp_start": 1736937000000_i64, "timestamp_end": 1736937060000_i64,
        "jobs": [{"catalog_id": "db.table", "status": "succeeded",
                  "timestamp_start": 1736937000000_i64, "timestamp_end": 1736937060000_i64}]
    })
}

/// Topics X and Y, written by alice and bob, read by dev.
fn two_topics(config: &mut eventgate_core::config::Config, dir: &std::path::Path) {
    let topics = dir.join("topics");
    std::fs::create_dir_all(&topics).expect("topics dir");
    let schema = std::fs::read_to_string(repo_root().join(format!("config/topics/{X}.json")))
        .expect("the runs schema");
    std::fs::write(topics.join(format!("{X}.json")), &schema).expect("X");
    std::fs::write(topics.join(format!("{Y}.json")), &schema).expect("Y");
    let rule = json!({"write": ["alice", "bob"], "read": ["dev"]});
    let access = json!({ X: rule, Y: rule });
    std::fs::write(dir.join("access.json"), access.to_string()).expect("access file");
    config.catalogue.topics_dir = topics;
    config.catalogue.access_file = dir.join("access.json");
}

async fn post(system: &System, topic: &str, user: &str, body: &Value) {
    let (status, answer) = system.post(topic, user, body).await;
    assert_eq!(status, 202, "{topic} as {user}: {answer}");
    assert_eq!(answer["ids"], json!([body["event_id"]]), "{answer}");
}

async fn by_id(system: &System, topic: &str, id: &str) -> Vec<Value> {
    let (status, answer) = system
        .query(
            topic,
            "dev",
            &json!({"filter": {"id": id}, "sort": ["producer"]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["data"].as_array().expect("data").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_id_is_unique_per_topic_and_producer() {
    let dir = std::env::temp_dir().join(format!("eventgate-idempotency-{}", uuid::Uuid::new_v4()));
    let system = System::start_with(eventgate_test_support::stack().await, 1, |config| {
        two_topics(config, &dir)
    })
    .await;
    let id = uuid::Uuid::now_v7().to_string();

    // Alice stores id V on X first; Bob's events with V, on X and on Y, are not suppressed by it.
    post(&system, X, "alice", &run(&id, "alice's")).await;
    post(&system, X, "bob", &run(&id, "bob's")).await;
    post(&system, Y, "bob", &run(&id, "bob's")).await;
    // Alice's retry (the same event again) and then V with another payload.
    post(&system, X, "alice", &run(&id, "alice's")).await;
    post(&system, X, "alice", &run(&id, "alice's, changed")).await;

    system
        .wait_for(
            "the conflicting duplicate parked",
            WAIT,
            "SELECT count(*) FROM dead_letters WHERE reason = 'conflicting_duplicate'",
        )
        .await;
    // The same key (run_id), so the same partition: once this is stored, all of the above were read.
    let sentinel = uuid::Uuid::now_v7().to_string();
    post(&system, X, "alice", &run(&sentinel, "sentinel")).await;
    system
        .wait_for(
            "the sentinel",
            WAIT,
            &format!("SELECT count(*) FROM events WHERE id = '{sentinel}'"),
        )
        .await;

    let stored = |sql: &'static str| {
        let sql = sql.replace("$ID", &id);
        let database = system.database.clone();
        async move { database.count(&sql).await.expect("count") }
    };
    assert_eq!(
        stored("SELECT count(*) FROM events WHERE id = '$ID'").await,
        3
    );
    assert_eq!(
        stored(
            "SELECT count(*) FROM events WHERE id = '$ID' AND producer = 'alice' \
             AND payload->>'source_app' = 'alice''s'"
        )
        .await,
        1,
        "Alice's event once, with its first payload"
    );

    // Analysts see each event under the id its producer sent.
    let on_x = by_id(&system, X, &id).await;
    let seen: Vec<(&str, &str, &str)> = on_x
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or_default(),
                e["producer"].as_str().unwrap_or_default(),
                e["payload"]["source_app"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (id.as_str(), "alice", "alice's"),
            (id.as_str(), "bob", "bob's")
        ]
    );
    let on_y = by_id(&system, Y, &id).await;
    assert_eq!(on_y.len(), 1, "{on_y:?}");
    assert_eq!(on_y[0]["producer"], "bob");

    // The changed re-send is a dead letter of X, with its reason, listed for the topic's readers.
    let (status, answer) = system.dead_letters(X, "dev", &[]).await;
    assert_eq!(status, 200, "{answer}");
    let listed = answer["data"].as_array().expect("data");
    assert_eq!(listed.len(), 1, "{answer}");
    assert_eq!(listed[0]["reason"], "conflicting_duplicate", "{answer}");
    let error = listed[0]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("conflicting_duplicate"), "{error}");
    assert!(error.contains(&id), "{error}");
    assert_eq!(
        stored(
            "SELECT count(*) FROM dead_letters WHERE reason = 'conflicting_duplicate' \
             AND convert_from(raw, 'UTF8')::jsonb #>> '{payload,source_app}' = 'alice''s, changed'"
        )
        .await,
        1,
        "parked with the message as it was queued"
    );

    let metrics = &system.writers[0].metrics;
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics.conflicting_duplicates.get() < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.conflicting_duplicates.get(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
