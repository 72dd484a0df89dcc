//! The ingest side of the byte budget (issue #14), against the real services: an event larger than
//! `ingest.max_event_bytes` as queued, or holding more JSON values than `ingest.max_event_nodes`, is
//! refused with 413 naming the limit and never published; in a batch only that event is refused (207)
//! and the others are stored exactly once, also when the producer sends the batch again; a publish
//! failure of one event is answered per event and does not replace the producer; and the ingest-api
//! does not start with an event limit above a topic's message limit.

use std::time::Duration;

use eventgate_core::config::{Config, KafkaClientProperties};
use eventgate_e2e::{test_config, System};
use eventgate_test_support::{accepted_ids, assert_exactly_once};
use eventgate_test_support::{stack, wait_until};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "public.cps.za.runs";
/// The default `ingest.max_event_bytes`.
const LIMIT: usize = 256 * 1024;

/// A run whose `additional_info.note` is `note_len` bytes long.
fn run(id: Uuid, run_id: i64, note_len: usize) -> Value {
    json!({
        "event_id": id.to_string(), "run_id": run_id, "tenant_id": "avms",
        "source_app": "unify", "source_app_version": "1.0", "environment": "dev",
        "timestamp_start": 1736937000000_i64, "timestamp_end": 1736937060000_i64,
        "jobs": [{"catalog_id": "db.table", "status": "succeeded",
                  "timestamp_start": 1736937000000_i64, "timestamp_end": 1736937060000_i64}],
        "additional_info": {"note": "x".repeat(note_len)}
    })
}

/// A run whose Kafka record (key + envelope) is `size` bytes, give or take the timestamp's digits: the
/// envelope adds `{"id":…,"topic":…,"timestamp":…,"producer":"dev","payload":…}` to the payload.
fn run_of_record_size(id: Uuid, size: usize) -> Value {
    let bare = serde_json::to_vec(&run(id, 7, 0)).expect("json").len();
    let envelope = r#"{"id":"","topic":"","timestamp":"","producer":"dev","payload":}"#.len()
        + 36
        + TOPIC.len()
        + "2025-01-15T10:30:00.123456Z".len();
    let key = "7".len();
    run(id, 7, size - bare - envelope - key)
}

async fn post_raw(system: &System, body: &Value) -> (u16, Option<String>, Value) {
    let response = system
        .http
        .post(format!("{}/topics/{TOPIC}", system.ingest_url))
        .bearer_auth(eventgate_test_support::token("dev"))
        .json(body)
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (status, retry_after, response.json().await.expect("JSON"))
}

/// Waits until the writers committed every message the broker holds for `topic`: nothing is left that
/// could still add a row.
async fn wait_until_consumed(system: &System, topic: &str) {
    let config = &system.config;
    let consumer: BaseConsumer = eventgate_core::kafka::client_config(&config.kafka)
        .set("group.id", &config.writer.group_id)
        .create()
        .expect("consumer");
    let kafka_topic = config.kafka.kafka_topic(topic);
    let published = system.published_messages(topic);
    wait_until("the writers committed every message", WAIT, || async {
        let mut partitions = TopicPartitionList::new();
        for partition in 0..config.kafka.partitions {
            partitions.add_partition(&kafka_topic, partition);
        }
        let committed: i64 = consumer
            .committed_offsets(partitions, Duration::from_secs(5))
            .map(|list| {
                list.elements()
                    .iter()
                    .filter_map(|element| element.offset().to_raw())
                    .filter(|offset| *offset > 0)
                    .sum()
            })
            .unwrap_or(0);
        committed >= published
    })
    .await
    .expect("consumed");
}

async fn metric(system: &System, name: &str) -> f64 {
    let text = system
        .http
        .get(format!("{}/metrics", system.ingest_url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_size_limit_is_413_and_its_batch_stores_the_others_once() {
    let system = System::start(1).await;

    // Just under the limit as queued: accepted. Just over: 413 naming the limit, nothing published.
    let (status, _, answer) =
        post_raw(&system, &run_of_record_size(Uuid::now_v7(), LIMIT - 64)).await;
    assert_eq!(status, 202, "{answer}");
    let over = run_of_record_size(Uuid::now_v7(), LIMIT + 64);
    let (status, _, answer) = post_raw(&system, &over).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["errors"][0]["type"], "too_large", "{answer}");
    assert_eq!(answer["errors"][0]["field"], "body", "{answer}");
    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("at most {LIMIT}")), "{message}");
    assert_eq!(
        system.published_messages(TOPIC),
        1,
        "the oversized event was not published"
    );

    // A batch mixing it with valid events: 207, the valid ones published, the big one refused.
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let batch = json!([run(first, 1, 10), over, run(second, 2, 10)]);
    let (status, retry_after, answer) = post_raw(&system, &batch).await;
    assert_eq!(status, 207, "{answer}");
    assert_eq!(retry_after, None, "nothing to retry: {answer}");
    assert_eq!(answer["success"], false);
    assert_eq!(
        accepted_ids(&answer),
        vec![first.to_string(), second.to_string()]
    );
    let results = &answer["results"];
    assert_eq!(results[0]["statusCode"], 202, "{answer}");
    assert_eq!(results[1]["statusCode"], 413, "{answer}");
    assert_eq!(results[1]["errors"][0]["type"], "too_large", "{answer}");
    assert_eq!(results[1]["errors"][0]["field"], "[1]", "{answer}");
    assert_eq!(results[2]["statusCode"], 202, "{answer}");

    // The producer sends the batch again, then the valid events alone: stored once all the same.
    let (status, _, again) = post_raw(&system, &batch).await;
    assert_eq!(status, 207, "{again}");
    assert_eq!(accepted_ids(&again), accepted_ids(&answer));
    let (status, _, alone) =
        post_raw(&system, &json!([run(first, 1, 10), run(second, 2, 10)])).await;
    assert_eq!(status, 202, "{alone}");
    assert_eq!(system.published_messages(TOPIC), 7);
    wait_until_consumed(&system, TOPIC).await;
    let rows = system
        .database
        .count(&format!(
            "SELECT count(*) FROM events WHERE payload->>'event_id' IN ('{first}', '{second}')"
        ))
        .await
        .expect("count");
    assert_eq!(rows, 2, "each valid event stored exactly once");
    assert_eq!(
        system.count_events().await,
        3,
        "and nothing else but the first one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_too_many_json_values_is_413_naming_the_limit() {
    let system = System::start(0).await;
    let mut bomb = run(Uuid::now_v7(), 1, 0);
    // 20,000 values in 40 KB: far under the byte limit, over the 10,000 values an event may hold.
    bomb["additional_info"]["a"] = json!(vec![0; 20_000]);
    let (status, _, answer) = post_raw(&system, &bomb).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["errors"][0]["type"], "too_large", "{answer}");
    assert_eq!(answer["errors"][0]["field"], "body", "{answer}");
    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("at most 10000") && message.contains("ingest.max_event_nodes"),
        "{message}"
    );
    let (status, _, answer) = post_raw(&system, &json!([run(Uuid::now_v7(), 2, 1), bomb])).await;
    assert_eq!(status, 207, "{answer}");
    assert_eq!(answer["results"][1]["statusCode"], 413, "{answer}");
    assert_eq!(
        answer["results"][1]["errors"][0]["field"], "[1]",
        "{answer}"
    );
    assert_eq!(system.published_messages(TOPIC), 1);
}

/// The broker's refusal of one event, simulated by a producer whose `message.max.bytes` is below the
/// event limit (a setting `Config::validate` refuses, bypassed here): that event is answered 413 in a
/// 207, the others are published, and the producer is not replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_refused_at_publish_is_answered_per_event_and_keeps_the_producer() {
    let system = System::start_with(stack().await, 1, |config| {
        config.kafka.client = KafkaClientProperties::new([("message.max.bytes", "20000")]);
        config.ingest.publish_timeout_ms = 1000;
    })
    .await;
    // A producer is replaced at most once per publish timeout: past it, a failure that replaced the
    // producer would show in the metric.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (first, big, second) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let batch = json!([run(first, 1, 10), run(big, 2, 30_000), run(second, 3, 10)]);
    let (status, retry_after, answer) = post_raw(&system, &batch).await;
    assert_eq!(status, 207, "{answer}");
    assert_eq!(
        retry_after, None,
        "a refusal is not worth a retry: {answer}"
    );
    assert_eq!(
        accepted_ids(&answer),
        vec![first.to_string(), second.to_string()]
    );
    let refused = &answer["results"][1];
    assert_eq!(refused["statusCode"], 413, "{answer}");
    assert_eq!(refused["id"], big.to_string(), "{answer}");
    assert_eq!(refused["errors"][0]["type"], "too_large", "{answer}");
    assert_eq!(refused["errors"][0]["field"], "[1]", "{answer}");
    // Alone, the same event is a plain 413.
    let (status, _, answer) = post_raw(&system, &batch[1]).await;
    assert_eq!(status, 413, "{answer}");
    // The producer was not replaced, and goes on publishing.
    assert_eq!(
        metric(&system, "eventgate_kafka_producer_replaced_total").await,
        0.0
    );
    let (status, _, answer) = post_raw(&system, &run(Uuid::now_v7(), 4, 10)).await;
    assert_eq!(status, 202, "{answer}");
    let mut stored = accepted_ids(&answer);
    stored.extend([first.to_string(), second.to_string()]);
    assert_exactly_once(&system.database, &stored, WAIT, String::new).await;
}

/// Creates the Kafka topics of `config` (as the services would) with `max.message.bytes` set.
async fn create_topics_with_limit(config: &Config, max_message_bytes: &str) {
    let admin: AdminClient<DefaultClientContext> =
        eventgate_core::kafka::client_config(&config.kafka)
            .create()
            .expect("admin");
    let names: Vec<String> = ["audit.logs", "public.cps.za.runs", "web.events"]
        .iter()
        .map(|topic| config.kafka.kafka_topic(topic))
        .collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(name, 1, TopicReplication::Fixed(1))
                .set("max.message.bytes", max_message_bytes)
        })
        .collect();
    for result in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("create topics")
    {
        result.expect("topic created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_api_does_not_start_with_an_event_limit_above_a_topics_limit() {
    let stack = stack().await;
    let database = stack.fresh_database().await;
    let mut config = test_config(stack, &database);
    create_topics_with_limit(&config, "200000").await;

    let refused = eventgate_ingest_api::Application::build(config.clone())
        .await
        .err()
        .expect("an event limit of 256 KiB does not fit topics of 200,000 bytes");
    let error = format!("{refused:#}");
    // tansu answers DescribeConfigs with the configs a topic was created with: the first topic names it.
    let named = format!(
        "Kafka topic `{}` takes messages of at most 200000 bytes (the topic's max.message.bytes)",
        config.kafka.kafka_topic("audit.logs")
    );
    for part in ["ingest.max_event_bytes", named.as_str(), "262144"] {
        assert!(error.contains(part), "{part}: {error}");
    }

    // A limit that fits, overhead included, starts.
    config.ingest.max_event_bytes = 200_000 - eventgate_core::ingest::RECORD_OVERHEAD_BYTES;
    eventgate_ingest_api::Application::build(config)
        .await
        .expect("an event limit that fits starts");
}
