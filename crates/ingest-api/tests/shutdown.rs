//! SIGTERM to the real `eventgate-ingest-api` binary while producers stream events: readiness turns 503
//! at once while the listener keeps serving for the drain, in-flight requests are answered, the process
//! exits 0, and every event answered 202 is in Kafka.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use eventgate_test_support::{
    free_port, get_json, stack, test_keys, token, wait_until, ServiceProcess,
};

const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 2;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Reads `kafka_topic` from the beginning until every id of `expected` was seen; returns those never
/// seen within `WAIT`. (By id rather than by a count up to the high watermarks: a count cannot say
/// which events are missing.)
async fn missing_from_kafka(
    brokers: &str,
    kafka_topic: &str,
    expected: &HashSet<String>,
) -> HashSet<String> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("shutdown-check-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(kafka_topic, partition, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut missing = expected.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !missing.is_empty() {
        let Ok(received) = tokio::time::timeout_at(deadline, consumer.recv()).await else {
            break;
        };
        let message = received.expect("message");
        let envelope: Value =
            serde_json::from_slice(message.payload().expect("payload")).expect("envelope");
        missing.remove(envelope["id"].as_str().expect("id"));
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_stream_loses_no_accepted_event() {
    let stack = stack().await;
    let dir = std::env::temp_dir().join(format!("eventgate-ingest-stop-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("access.json"),
        r#"{"audit.logs": {"write": ["dev"], "read": ["dev"]}}"#,
    )
    .expect("access file");
    let prefix = format!("{}.", stack.unique_name("stop"));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = [
        (
            "EVENTGATE_CATALOGUE__TOPICS_DIR",
            repo_root().join("config/topics").display().to_string(),
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
        ("EVENTGATE_KAFKA__PARTITIONS", PARTITIONS.to_string()),
        ("EVENTGATE_INGEST__LISTEN", format!("127.0.0.1:{port}")),
        ("EVENTGATE_RATELIMIT__WRITES_PER_SECOND", "0".into()),
        ("EVENTGATE_TELEMETRY__LOG_FORMAT", "json".into()),
        // Long enough a drain to watch readiness say 503 while requests are still served.
        ("EVENTGATE_SHUTDOWN__DRAIN_MS", "1500".into()),
        ("EVENTGATE_SHUTDOWN__TIMEOUT_MS", "15000".into()),
    ];
    let mut ingest = ServiceProcess::spawn(
        env!("CARGO_BIN_EXE_eventgate-ingest-api"),
        "ingest-api",
        &env,
        &dir.join("ingest.log"),
    );
    let http = reqwest::Client::new();
    let ready = format!("{base}/health/ready");
    wait_until("the ingest-api to be ready", WAIT, || async {
        matches!(get_json(&http, &ready).await, Some((200, _)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", ingest.log()));

    // Four producers stream single events with their own ids until the server is gone.
    let accepted = Arc::new(Mutex::new(HashSet::<String>::new()));
    let accepted_after_signal = Arc::new(AtomicUsize::new(0));
    let other_answers = Arc::new(Mutex::new(Vec::<(u16, String)>::new()));
    let signalled = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url) = (http.clone(), format!("{base}/topics/audit.logs"));
            let (accepted, after, others, signalled) = (
                accepted.clone(),
                accepted_after_signal.clone(),
                other_answers.clone(),
                signalled.clone(),
            );
            tokio::spawn(async move {
                let bearer = token("dev");
                loop {
                    let sent_after_signal = signalled.load(Ordering::SeqCst);
                    let response = http
                        .post(&url)
                        .bearer_auth(&bearer)
                        .json(
                            &json!({"event_name": "stream", "description": "sigterm test",
                                      "customer_id": 1}),
                        )
                        .send()
                        .await;
                    match response {
                        Ok(response) if response.status() == 202 => {
                            let answer: Value = response.json().await.expect("202 body");
                            let id = answer["ids"][0].as_str().expect("the event's id");
                            accepted.lock().unwrap().insert(id.to_owned());
                            if sent_after_signal {
                                after.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body = response.text().await.unwrap_or_default();
                            others.lock().unwrap().push((status, body));
                        }
                        // Refused or closed: the server is gone (or closing this connection).
                        Err(_) if signalled.load(Ordering::SeqCst) => {
                            if reqwest::get(&url).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => panic!("a request failed before any signal: {error}"),
                    }
                }
            })
        })
        .collect();
    wait_until("a stream under way", WAIT, || async {
        accepted.lock().unwrap().len() >= 40
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}: other answers {:?}",
            other_answers.lock().unwrap().first()
        )
    });

    signalled.store(true, Ordering::SeqCst);
    ingest.sigterm();
    // Readiness says 503 `stopping` while the drain keeps serving (the process is alive and answers).
    wait_until("readiness to answer 503", WAIT, || async {
        matches!(get_json(&http, &ready).await, Some((503, body)) if body["status"] == "stopping")
    })
    .await
    .unwrap();
    let live = get_json(&http, &format!("{base}/health/live")).await;
    assert!(matches!(live, Some((200, _))), "{live:?}");

    let status = ingest.wait_exit(WAIT).await;
    let log_text = ingest.log();
    assert!(status.success(), "{status:?}\n{log_text}");
    assert!(log_text.contains("shutdown started"), "{log_text}");
    assert!(log_text.contains("ingest-api stopped"), "{log_text}");
    for producer in producers {
        producer.await.expect("producer task");
    }

    // Requests during the drain were served; every 202 is in Kafka, and nothing else is.
    assert!(
        accepted_after_signal.load(Ordering::SeqCst) > 0,
        "no request was served after SIGTERM"
    );
    let others = other_answers.lock().unwrap().clone();
    assert!(others.is_empty(), "answers other than 202: {others:?}");
    let accepted = accepted.lock().unwrap().clone();
    let missing = missing_from_kafka(
        &stack.kafka_brokers,
        &format!("{prefix}audit.logs"),
        &accepted,
    )
    .await;
    assert!(
        missing.is_empty(),
        "answered 202 but not in Kafka: {missing:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
