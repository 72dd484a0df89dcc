//! The writers trust no message body: an envelope produced straight into Kafka (past the ingest-api)
//! that names another topic than the Kafka topic it sits in is parked as a dead letter with the reason,
//! never stored as an event of either topic; the events around it are stored as usual.

use std::time::Duration;

use serde_json::json;

use eventgate_core::envelope::Event;
use eventgate_e2e::System;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_in_another_topics_queue_is_a_dead_letter() {
    let system = System::start(1).await;
    system
        .wait_for_balanced_group(Duration::from_secs(60))
        .await;

    // A well-formed envelope of `web.events`, put on the queue of `audit.logs`.
    let forged = Event {
        id: uuid::Uuid::now_v7(),
        topic: "web.events".to_owned(),
        timestamp: time::OffsetDateTime::now_utc(),
        producer: "mallory".to_owned(),
        payload: json!({"event_name": "forged", "description": "not through the gate"}),
    };
    let (partition, offset) = system
        .produce_raw("audit.logs", "k", &forged.to_json_bytes())
        .await;
    // A real event after it, through the ingest-api, on the same topic.
    let (status, answer) = system
        .post(
            "audit.logs",
            "dev",
            &json!({"event_name": "login", "description": "alice signed in", "customer_id": 1}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");

    system
        .wait_for(
            "the dead letter",
            Duration::from_secs(60),
            "SELECT count(*) FROM dead_letters WHERE error LIKE 'topic_mismatch%'",
        )
        .await;
    system.wait_for_rows(1, Duration::from_secs(60)).await;

    let stored = system
        .database
        .count(&format!(
            "SELECT count(*) FROM events WHERE id = '{}'",
            forged.id
        ))
        .await
        .expect("count");
    assert_eq!(stored, 0, "the forged envelope is no event of any topic");
    let parked = system
        .database
        .count(&format!(
            "SELECT count(*) FROM dead_letters WHERE topic = 'audit.logs' AND kafka_partition = {partition}
             AND kafka_offset = {offset} AND error LIKE 'topic_mismatch%web.events%'"
        ))
        .await
        .expect("count");
    assert_eq!(parked, 1, "parked where it was found, with the reason");
}
