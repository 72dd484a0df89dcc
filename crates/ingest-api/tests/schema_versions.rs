//! Schema versions on the real `eventgate-ingest-api` binary (#17): an event naming version 1 (its
//! `$schema` or the `Eventgate-Schema-Version` header) is validated against version 1 — a property only
//! version 2 requires may be missing — one naming version 2 against version 2, and the version travels
//! in the envelope queued in Kafka; an unknown version is a 400 naming the field and the versions.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use eventgate_test_support::{
    free_port, get_json, stack, test_keys, token, wait_until, ServiceProcess,
};

const WAIT: Duration = Duration::from_secs(60);

/// Reads `kafka_topic` (one partition) from the beginning until every id of `ids` was seen: each id's
/// envelope.
async fn envelopes(brokers: &str, kafka_topic: &str, ids: &[String]) -> HashMap<String, Value> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("versions-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(kafka_topic, 0, Offset::Beginning)
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let mut found = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ids.iter().all(|id| found.contains_key(id)) {
        let Ok(received) = tokio::time::timeout_at(deadline, consumer.recv()).await else {
            break;
        };
        let message = received.expect("message");
        let envelope: Value =
            serde_json::from_slice(message.payload().expect("payload")).expect("envelope");
        let id = envelope["id"].as_str().expect("id").to_owned();
        found.insert(id, envelope);
    }
    found
}

fn write(dir: &Path, name: &str, value: &Value) {
    if let Some(parent) = dir.join(name).parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(dir.join(name), value.to_string()).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_validated_against_the_version_it_names_and_queued_with_it() {
    let stack = stack().await;
    let dir = std::env::temp_dir().join(format!("eventgate-versions-{}", uuid::Uuid::new_v4()));
    let topics = dir.join("topics");
    // Version 2 requires customer_id (allowed under `none`): an event of version 1 may lack it.
    write(
        &topics,
        "logs/1.json",
        &json!({"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}}, "additionalProperties": false}),
    );
    write(
        &topics,
        "logs/2.json",
        &json!({"type": "object", "required": ["name", "customer_id"],
                "x-eventgate": {"compatibility": "none"},
                "properties": {"name": {"type": "string"}, "customer_id": {"type": "integer"}},
                "additionalProperties": false}),
    );
    write(
        &dir,
        "access.json",
        &json!({"logs": {"write": ["dev"], "read": ["dev"]}}),
    );
    let prefix = format!("{}.", stack.unique_name("versions"));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = [
        (
            "EVENTGATE_CATALOGUE__TOPICS_DIR",
            topics.display().to_string(),
        ),
        (
            "EVENTGATE_CATALOGUE__ACCESS_FILE",
            dir.join("access.json").display().to_string(),
        ),
        (
            "EVENTGATE_AUTH__PUBLIC_KEYS",
            format!("[\"{}\"]", test_keys().public_key_path.display()),
        ),
        ("EVENTGATE_KAFKA__BROKERS", stack.kafka_brokers.clone()),
        ("EVENTGATE_KAFKA__TOPIC_PREFIX", prefix.clone()),
        ("EVENTGATE_KAFKA__PARTITIONS", "1".into()),
        ("EVENTGATE_INGEST__LISTEN", format!("127.0.0.1:{port}")),
        ("EVENTGATE_RATELIMIT__WRITES_PER_SECOND", "0".into()),
    ];
    let ingest = ServiceProcess::spawn(
        env!("CARGO_BIN_EXE_eventgate-ingest-api"),
        "ingest-api",
        &env,
        &dir.join("ingest.log"),
    );
    let http = reqwest::Client::new();
    wait_until("the ingest-api to be ready", WAIT, || async {
        matches!(
            get_json(&http, &format!("{base}/health/ready")).await,
            Some((200, _))
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", ingest.log()));

    let bearer = token("dev");
    let url = format!("{base}/topics/logs");
    let post = |body: Value, header: Option<&'static str>| {
        let mut request = http.post(&url).bearer_auth(&bearer).json(&body);
        if let Some(version) = header {
            request = request.header("Eventgate-Schema-Version", version);
        }
        async move {
            let response = request.send().await.expect("answered");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON answer"))
        }
    };
    let id_of = |answer: &Value| answer["ids"][0].as_str().expect("an id").to_owned();

    // No version named: the latest (2), which requires customer_id.
    let (status, answer) = post(json!({"name": "latest"}), None).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "customer_id", "{answer}");
    let (status, answer) = post(json!({"name": "latest", "customer_id": 1}), None).await;
    assert_eq!(status, 202, "{answer}");
    let latest = id_of(&answer);

    // Version 1 named by `$schema`: customer_id may be missing (and version 1 is closed: no `$schema`
    // reaches the schema).
    let (status, answer) = post(json!({"name": "v1", "$schema": 1}), None).await;
    assert_eq!(status, 202, "{answer}");
    let v1_member = id_of(&answer);
    // Version 1 named by the header.
    let (status, answer) = post(json!({"name": "v1 by header"}), Some("1")).await;
    assert_eq!(status, 202, "{answer}");
    let v1_header = id_of(&answer);
    // The event's own `$schema` overrides the header: version 2 requires customer_id.
    let (status, answer) = post(json!({"name": "v2", "$schema": "logs/2"}), Some("1")).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "customer_id", "{answer}");
    let (status, answer) = post(
        json!({"name": "v2", "customer_id": 2, "$schema": "2"}),
        Some("1"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let v2_member = id_of(&answer);

    // Unknown versions: the field named, the versions listed.
    let (status, answer) = post(
        json!([{"name": "a", "$schema": 1}, {"name": "b", "$schema": 5}]),
        None,
    )
    .await;
    assert_eq!(status, 207, "{answer}");
    let refused = &answer["results"][1]["errors"][0];
    assert_eq!(refused["field"], "[1].$schema", "{answer}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("its versions are 1, 2")),
        "{answer}"
    );
    let (status, answer) = post(json!({"name": "a", "customer_id": 1}), Some("3")).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["errors"][0]["field"], "Eventgate-Schema-Version",
        "{answer}"
    );
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("its versions are 1, 2")),
        "{answer}"
    );

    // Each envelope carries its version; `$schema` is not in any payload.
    let ids = [latest, v1_member, v1_header, v2_member];
    let queued = envelopes(&stack.kafka_brokers, &format!("{prefix}logs"), &ids).await;
    let versions: Vec<Option<u64>> = ids
        .iter()
        .map(|id| queued.get(id).and_then(|e| e["schema_version"].as_u64()))
        .collect();
    assert_eq!(versions, [Some(2), Some(1), Some(1), Some(2)], "{queued:?}");
    for envelope in queued.values() {
        assert!(envelope["payload"].get("$schema").is_none(), "{envelope}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
