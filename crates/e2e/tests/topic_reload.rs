//! Topics that change without a restart (issue #17), on the service binaries run as processes so that
//! each can be sent SIGHUP as operators send it: a topic file added to the topics directory is written
//! by the running writer after a SIGHUP, a directory that does not load changes nothing, and no SIGHUP
//! ever ends a service (its default action would).

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use eventgate_core::config::Config;
use eventgate_core::envelope::Event;
use eventgate_e2e::processes::{start_writer, Service};
use eventgate_e2e::{repo_root, test_config};
use eventgate_test_support::{metric, stack, wait_until};

const WAIT: Duration = Duration::from_secs(60);
const NEW_TOPIC: &str = "orders.created";

fn sighup(service: &Service) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &service.process.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success(), "kill -HUP {}", service.name);
}

async fn wait_for_metric(http: &reqwest::Client, service: &Service, name: &str, want: f64) {
    let reached = wait_until(&format!("{name} = {want}"), WAIT, || async {
        metric(http, service.port, name).await == Some(want)
    })
    .await;
    if let Err(error) = reached {
        panic!(
            "{error:#}: it is {:?}\n{}",
            metric(http, service.port, name).await,
            service.process.log()
        );
    }
}

/// Produces `event` into its topic's Kafka topic as the ingest-api does (the envelope as the value).
async fn produce(config: &Config, event: &Event) {
    let producer: FutureProducer = eventgate_core::kafka::client_config(&config.kafka)
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    let payload = event.to_json_bytes();
    producer
        .send(
            FutureRecord::to(&config.kafka.kafka_topic(&event.topic))
                .key(&event.producer)
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("the broker takes the event");
}

fn event(topic: &str, n: u64) -> Event {
    Event {
        id: uuid::Uuid::now_v7(),
        topic: topic.to_owned(),
        timestamp: time::OffsetDateTime::now_utc(),
        producer: "dev".to_owned(),
        payload: json!({"order_id": n, "amount_cents": 1999}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_makes_the_writer_write_a_new_topic_and_never_ends_it() {
    let stack = stack().await;
    let database = stack.fresh_database().await;
    let mut config = test_config(stack, &database);
    let dir = std::env::temp_dir().join(format!("eventgate-reload-{}", database.name));
    let topics = dir.join("topics");
    std::fs::create_dir_all(&topics).expect("temp dir");
    let mut initial = 0.0;
    for entry in std::fs::read_dir(repo_root().join("config/topics")).expect("config/topics") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::copy(&path, topics.join(path.file_name().expect("a file name")))
                .expect("copy a topic");
            initial += 1.0;
        }
    }
    config.catalogue.topics_dir = topics.clone();
    let http = reqwest::Client::new();
    let writer = start_writer(&http, &dir, &config, "writer").await;
    wait_for_metric(&http, &writer, "eventgate_writer_topics_subscribed", initial).await;

    // A directory that does not load: nothing changes, the failure is counted, the writer lives on.
    std::fs::write(topics.join("broken.json"), "{\"type\": ").expect("a broken topic");
    sighup(&writer);
    wait_for_metric(
        &http,
        &writer,
        "eventgate_writer_topic_reloads_total{outcome=\"failed\"}",
        1.0,
    )
    .await;
    std::fs::remove_file(topics.join("broken.json")).expect("remove the broken topic");

    // A new topic: after SIGHUP the writer subscribes to it and stores its events.
    std::fs::write(
        topics.join(format!("{NEW_TOPIC}.json")),
        serde_json::to_vec_pretty(&json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": NEW_TOPIC,
            "type": "object",
            "required": ["order_id"],
            "properties": {"order_id": {"type": "integer"}, "amount_cents": {"type": "integer"}},
            "additionalProperties": false
        }))
        .expect("json"),
    )
    .expect("the new topic");
    sighup(&writer);
    wait_for_metric(
        &http,
        &writer,
        "eventgate_writer_topic_reloads_total{outcome=\"ok\"}",
        1.0,
    )
    .await;
    wait_for_metric(
        &http,
        &writer,
        "eventgate_writer_topics_subscribed",
        initial + 1.0,
    )
    .await;
    let events: Vec<Event> = (0..5).map(|n| event(NEW_TOPIC, n)).collect();
    for event in &events {
        produce(&config, event).await;
    }
    let ids: Vec<String> = events.iter().map(|e| format!("'{}'", e.id)).collect();
    let stored = wait_until("the new topic's events to be stored", WAIT, || async {
        database
            .count(&format!(
                "SELECT count(*) FROM events WHERE topic = '{NEW_TOPIC}' AND id IN ({})",
                ids.join(",")
            ))
            .await
            .is_ok_and(|n| n == 5)
    })
    .await;
    if let Err(error) = stored {
        panic!("{error:#}\n{}", writer.process.log());
    }

    // Still the same process, still ready, after two SIGHUPs.
    writer.wait_ready(&http, "/health/ready").await;
    let _ = std::fs::remove_dir_all(&dir);
}
