//! Nothing lost, nothing duplicated, and the maintainer hears about it: faults injected into the real
//! servers while the pipeline runs. Postgres and the broker are stopped on a private stack of the test's
//! own; poison messages go straight into the Kafka topic. Failure emails go to a real SMTP listener.
//!
//! (Killing writers with SIGKILL/SIGTERM needs the writer binary: `crates/db-writer/tests/process_faults.rs`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::{Config, SmtpTls};
use eventgate_e2e::System;
use eventgate_test_support::{
    accepted_ids, assert_exactly_once, private_stack, stack, token, wait_until, wait_until_stored,
    ReceivedMail, SmtpSink,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);
const MAINTAINERS: [&str; 2] = ["ops@example.test", "oncall@example.test"];

/// Failure emails to `sink`, with short thresholds so that the tests stay fast.
fn email_to(sink: &SmtpSink, config: &mut Config) {
    config.smtp.host = "127.0.0.1".into();
    config.smtp.port = sink.port;
    config.smtp.tls = SmtpTls::None;
    config.smtp.from = "eventgate <alerts@eventgate.test>".into();
    config.smtp.retry_initial_ms = 100;
    config.alerts.maintainers = MAINTAINERS.iter().map(|m| (*m).to_owned()).collect();
    config.alerts.probe_interval_ms = 200;
    config.alerts.database_after_ms = 1_000;
    config.alerts.broker_after_ms = 1_000;
    config.alerts.group_wait_ms = 1_000;
    config.alerts.window_ms = 60_000;
}

fn audit(n: usize) -> Value {
    json!({"event_name": format!("event-{n}"), "description": "fault test", "customer_id": n})
}

/// The body as one line of words: the email body is wrapped at 72 columns.
fn words(mail: &ReceivedMail) -> String {
    mail.body().split_whitespace().collect::<Vec<_>>().join(" ")
}

fn assert_sent_to_maintainers(mail: &ReceivedMail) {
    assert_eq!(mail.from, "alerts@eventgate.test");
    assert_eq!(mail.to, MAINTAINERS);
    assert_eq!(
        mail.header("To").as_deref(),
        Some("ops@example.test, oncall@example.test")
    );
}

/// POSTs small batches of audit events until `stop` is set; returns the ids of every event answered
/// 202 (any other answer is retried by the next round, as a producer would).
fn stream_events(
    system: Arc<System>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let batch: Vec<Value> = (0..5).map(|i| audit(n + i)).collect();
            n += 5;
            let (status, answer) = system.post("audit.logs", "dev", &json!(batch)).await;
            if status == 202 {
                accepted.extend(accepted_ids(&answer));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        accepted
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_while_events_stream_in_loses_nothing_and_the_maintainer_hears_of_it() {
    let stack = private_stack().await;
    let sink = SmtpSink::start();
    let system = Arc::new(
        System::start_with(&stack, 1, |config| {
            email_to(&sink, config);
            // Back quickly once Postgres is up again.
            config.writer.retry_max_ms = 500;
        })
        .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let streaming = stream_events(system.clone(), stop.clone());
    system.wait_for_rows(20, WAIT).await;

    let before_outage = system.count_events().await;
    tokio::task::block_in_place(|| stack.stop_postgres());
    // The outage outlives the threshold: the maintainer is told, while producers still get 202s (the
    // ingest-api does not need Postgres; the events wait in Kafka).
    let mails = sink
        .wait_for(1, WAIT)
        .await
        .expect("an email about the database");
    let alert = &mails[0];
    assert_sent_to_maintainers(alert);
    let subject = alert.subject().unwrap_or_default();
    assert!(
        subject.starts_with("[eventgate] ALERT: database unreachable for "),
        "{subject}"
    );
    let body = words(alert);
    assert!(body.contains("Kind: database_unreachable"), "{body}");
    assert!(body.contains("Last error:"), "{body}");
    assert!(body.contains("no accepted event is lost"), "{body}");
    tokio::task::block_in_place(|| stack.start_postgres());

    // Keep streaming across the recovery, then stop.
    system.wait_for_rows(before_outage + 20, WAIT).await;
    stop.store(true, Ordering::SeqCst);
    let accepted = streaming.await.expect("streaming task");
    assert!(accepted.len() >= 40, "{} events accepted", accepted.len());
    assert_exactly_once(&system.database, &accepted, WAIT, String::new).await;

    let mails = sink.wait_for(2, WAIT).await.expect("the recovered email");
    let recovered = &mails[1];
    assert_sent_to_maintainers(recovered);
    let subject = recovered.subject().unwrap_or_default();
    assert!(
        subject.starts_with("[eventgate] RECOVERED: database reachable again after "),
        "{subject}"
    );
}

/// POSTs one event with a client-side bound: an answer within the publish timeout plus slack for a
/// loaded machine, or the test fails (a hang is the one thing the ingest-api must never do).
async fn post_bounded(system: &System, publish_timeout: Duration, n: usize) -> (u16, Value) {
    let response = system
        .http
        .post(format!("{}/topics/audit.logs", system.ingest_url))
        .bearer_auth(token("dev"))
        .json(&audit(n))
        .timeout(publish_timeout + Duration::from_secs(5))
        .send()
        .await
        .expect("an answer, not a hang");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").cloned();
    let answer: Value = response.json().await.expect("JSON");
    if status == 503 {
        assert!(retry_after.is_some(), "503 without Retry-After");
        assert_eq!(answer["success"], false, "{answer}");
        assert_eq!(answer["errors"][0]["type"], "queue", "{answer}");
    }
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_unreachable_answers_503_fast_then_202_again_and_loses_nothing() {
    let stack = private_stack().await;
    let sink = SmtpSink::start();
    let publish_timeout = Duration::from_millis(1_500);
    let system = Arc::new(
        System::start_with(&stack, 1, |config| {
            email_to(&sink, config);
            config.ingest.publish_timeout_ms = publish_timeout.as_millis() as u64;
        })
        .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let streaming = stream_events(system.clone(), stop.clone());
    system.wait_for_rows(20, WAIT).await;

    // Frozen, not killed: the broker keeps its state, as a real one behind a partition does.
    tokio::task::block_in_place(|| stack.pause_broker());
    let (status, answer) = post_bounded(&system, publish_timeout, 100_000).await;
    assert_eq!(status, 503, "{answer}");
    let mails = sink
        .wait_for(1, WAIT)
        .await
        .expect("an email about the broker");
    assert_sent_to_maintainers(&mails[0]);
    let subject = mails[0].subject().unwrap_or_default();
    assert!(
        subject.starts_with("[eventgate] ALERT: Kafka broker unreachable for "),
        "{subject}"
    );
    assert!(
        words(&mails[0]).contains("Kind: broker_unreachable"),
        "{}",
        mails[0].data
    );
    tokio::task::block_in_place(|| stack.resume_broker());

    // The same ingest-api and writer carry on by themselves.
    wait_until("a 202 after the broker came back", WAIT, || async {
        post_bounded(&system, publish_timeout, 100_001).await.0 == 202
    })
    .await
    .expect("the ingest-api recovers by itself");
    let before = system.count_events().await;
    system.wait_for_rows(before + 20, WAIT).await;
    stop.store(true, Ordering::SeqCst);
    let accepted = streaming.await.expect("streaming task");
    // Events answered 503 may be stored too (the broker may have taken them after the client's
    // timeout): only the 202s are promised, so only they are counted.
    wait_until_stored(&system.database, &accepted, WAIT)
        .await
        .expect("no accepted event lost");

    let mails = sink.wait_for(2, WAIT).await.expect("the recovered email");
    let subject = mails[1].subject().unwrap_or_default();
    assert!(
        subject.starts_with("[eventgate] RECOVERED: Kafka broker reachable again after "),
        "{subject}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_empty_answers_503_fast_then_202_again() {
    let stack = private_stack().await;
    let publish_timeout = Duration::from_millis(1_500);
    let mut system = System::start_with(&stack, 1, |config| {
        config.ingest.publish_timeout_ms = publish_timeout.as_millis() as u64;
    })
    .await;
    let (status, answer) = post_bounded(&system, publish_timeout, 1).await;
    assert_eq!(status, 202, "{answer}");
    system.wait_for_rows(1, WAIT).await;

    tokio::task::block_in_place(|| stack.stop_broker());
    let (status, answer) = post_bounded(&system, publish_timeout, 2).await;
    assert_eq!(status, 503, "{answer}");

    // The test broker keeps everything in memory: restarted, it has no topics, offsets or producer ids,
    // which a Kafka cluster never loses. Its topics are recreated as the services do at start-up. A
    // consumer that fetches a forgotten topic gets an answer librdkafka 2.12 crashes on, so the writer
    // stops (cleanly, with the broker down) and a new one starts afterwards; the ingest-api keeps
    // running and must get back to 202 by itself.
    for writer in system.writers.drain(..) {
        tokio::time::timeout(WAIT, writer.stop())
            .await
            .expect("a writer stops even with the broker down")
            .expect("clean stop");
    }
    tokio::task::block_in_place(|| stack.start_broker());
    let catalogue = Catalogue::load_dir(&system.config.catalogue.topics_dir).expect("topics");
    eventgate_core::kafka::ensure_topics(&system.config.kafka, &catalogue)
        .await
        .expect("topics recreated");
    let accepted = std::sync::Mutex::new(Vec::new());
    wait_until("a 202 after the broker restarted", WAIT, || async {
        let (status, answer) = post_bounded(&system, publish_timeout, 3).await;
        *accepted.lock().expect("lock") = accepted_ids(&answer);
        status == 202
    })
    .await
    .expect("the ingest-api recovers by itself");
    let id = accepted
        .lock()
        .expect("lock")
        .first()
        .expect("an id")
        .clone();
    system.add_writer().await;
    system
        .wait_for(
            "the event accepted after the restart",
            WAIT,
            &format!("SELECT count(*) FROM events WHERE id = '{id}'"),
        )
        .await;
}

fn run_event(run_id: i64, source_app: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::now_v7().to_string(), "run_id": run_id, "tenant_id": "avms",
        "source_app": source_app, "source_app_version": "1.0", "environment": "dev",
        "timestamp_start": 1736937000000_i64, "timestamp_end": 1736937060000_i64,
        "jobs": [{"catalog_id": "db.table", "status": "succeeded",
                  "timestamp_start": 1736937000000_i64, "timestamp_end": 1736937060000_i64}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_parked_listed_and_emailed_once_per_window() {
    let sink = SmtpSink::start();
    let topic = "public.cps.za.runs";
    // No writer yet: the whole partition, poison in the middle, is in Kafka before anything reads it.
    let mut system = System::start_with(stack().await, 0, |config| {
        email_to(&sink, config);
        config.alerts.group_wait_ms = 1_000;
        config.alerts.window_ms = 3_000;
    })
    .await;
    // One run id → one message key → one partition, for the good events and the poison alike.
    let run_id = 4242;
    let key = run_id.to_string();
    let mut good = Vec::new();
    for name in ["before-1", "before-2"] {
        let (status, answer) = system.post(topic, "dev", &run_event(run_id, name)).await;
        assert_eq!(status, 202, "{answer}");
        good.extend(accepted_ids(&answer));
    }
    let mut poison_offsets = Vec::new();
    for n in 0..3 {
        let (partition, offset) = system
            .produce_raw(
                topic,
                &key,
                format!("not an event envelope #{n}").as_bytes(),
            )
            .await;
        poison_offsets.push((partition, offset));
    }
    // A valid envelope of an event valid for the schema, but Postgres' jsonb refuses a NUL character in
    // a string: the database refuses the row, not the decoder. The ingest-api answers 400 to such an
    // event (tests/errors.rs), so it is produced straight to the topic, as an older ingest-api or another
    // producing tool could.
    let refused = eventgate_core::envelope::Event {
        id: uuid::Uuid::now_v7(),
        topic: topic.to_owned(),
        timestamp: time::OffsetDateTime::now_utc(),
        producer: "dev".to_owned(),
        payload: run_event(run_id, "nul\u{0}byte"),
    };
    system
        .produce_raw(topic, &key, &refused.to_json_bytes())
        .await;
    let refused_id = refused.id.to_string();
    for name in ["after-1", "after-2"] {
        let (status, answer) = system.post(topic, "dev", &run_event(run_id, name)).await;
        assert_eq!(status, 202, "{answer}");
        good.extend(accepted_ids(&answer));
    }

    system.add_writer().await;
    // The last good event is behind every poison message on the same partition: once it is stored,
    // the partition got past all of them.
    let last = good.last().expect("ids").clone();
    system
        .wait_for(
            "the event after the poison",
            WAIT,
            &format!("SELECT count(*) FROM events WHERE id = '{last}'"),
        )
        .await;
    assert_eq!(system.count_events().await, 4);
    assert_eq!(
        system
            .database
            .count(&format!(
                "SELECT count(*) FROM events WHERE id = '{refused_id}'"
            ))
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        system
            .database
            .count("SELECT count(*) FROM dead_letters")
            .await
            .expect("count"),
        4
    );

    // Analysts list them, newest first, a page at a time.
    let (status, first) = system.dead_letters(topic, "dev", &[("limit", "3")]).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["data"].as_array().map(Vec::len), Some(3), "{first}");
    assert_eq!(first["pagination"]["has_more"], true, "{first}");
    let cursor = first["pagination"]["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let (status, second) = system
        .dead_letters(topic, "dev", &[("limit", "3"), ("cursor", &cursor)])
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["data"].as_array().map(Vec::len), Some(1), "{second}");
    assert_eq!(second["pagination"]["has_more"], false, "{second}");
    assert!(second["pagination"]["cursor"].is_null(), "{second}");
    let listed: Vec<&Value> = first["data"]
        .as_array()
        .into_iter()
        .chain(second["data"].as_array())
        .flatten()
        .collect();
    let mut ids_seen: Vec<i64> = listed.iter().filter_map(|d| d["id"].as_i64()).collect();
    let newest_first = ids_seen.windows(2).all(|w| w[0] > w[1]);
    assert!(newest_first, "{ids_seen:?}");
    ids_seen.dedup();
    assert_eq!(ids_seen.len(), 4);
    let partition = poison_offsets[0].0;
    for dead in &listed {
        assert_eq!(dead["topic"], topic, "{dead}");
        assert_eq!(dead["partition"], partition, "same partition: {dead}");
    }
    for (n, (_, offset)) in poison_offsets.iter().enumerate() {
        let dead = listed
            .iter()
            .find(|d| d["offset"] == *offset)
            .unwrap_or_else(|| panic!("poison at offset {offset} listed"));
        assert_eq!(dead["raw"], format!("not an event envelope #{n}"), "{dead}");
        let error = dead["error"].as_str().unwrap_or_default();
        assert!(error.contains("not a valid event envelope"), "{error}");
    }
    let refused = listed
        .iter()
        .find(|d| {
            d["raw"]
                .as_str()
                .is_some_and(|raw| raw.contains(&refused_id))
        })
        .expect("the refused event is listed with its envelope");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("database refused the event"),
        "{refused}"
    );

    // Same checks as queries: 401, 404, then 403 for a user who may only write.
    let unauthenticated = system
        .http
        .get(format!("{}/stats/{topic}/dead-letters", system.stats_url))
        .send()
        .await
        .expect("answer");
    assert_eq!(unauthenticated.status().as_u16(), 401);
    assert_eq!(
        system.dead_letters("no.such.topic", "dev", &[]).await.0,
        404
    );
    let (status, answer) = system.dead_letters(topic, "writer", &[]).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["errors"][0]["type"], "permission", "{answer}");
    let (status, answer) = system.dead_letters(topic, "dev", &[("limit", "0")]).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "limit", "{answer}");

    // One email for the four of them, to every maintainer.
    let mails = sink.wait_for(1, WAIT).await.expect("the dead-letter email");
    let alert = &mails[0];
    assert_sent_to_maintainers(alert);
    assert_eq!(
        alert.subject().as_deref(),
        Some("[eventgate] ALERT: 4 messages parked in dead_letters")
    );
    let body = words(alert);
    assert!(body.contains("Count: 4 new dead letters"), "{body}");
    assert!(body.contains("Examples (the first 4 of 4):"), "{body}");
    for (_, offset) in &poison_offsets {
        assert!(
            body.contains(&format!(
                "partition {partition} offset {offset}: message is not a valid event envelope"
            )),
            "{body}"
        );
    }
    assert!(body.contains("database refused the event"), "{body}");
    assert!(body.contains("GET /stats/{topic}/dead-letters"), "{body}");
    // The sentinel: one window after that email the rules send either a digest of dead letters that
    // came since, or "recovered" when none did. Recovered proves no second alert was due.
    let mails = sink.wait_for(2, WAIT).await.expect("the recovered email");
    assert_eq!(
        mails[1].subject().as_deref(),
        Some("[eventgate] RECOVERED: no new dead letters (4 in all)")
    );
    assert_eq!(sink.messages().len(), 2);
    for writer in system.writers.drain(..) {
        writer.stop().await.expect("writer stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_and_publishes_nothing() {
    let system = System::start_with(stack().await, 0, |config| {
        config.ingest.max_body_bytes = 1024;
    })
    .await;
    let big = json!({"event_name": "big", "description": "x".repeat(2000)});
    let (status, answer) = system.post("audit.logs", "dev", &big).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["errors"][0]["type"], "too_large", "{answer}");
    let (status, answer) = system.post("audit.logs", "dev", &audit(1)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        system.published_messages("audit.logs"),
        1,
        "only the small one"
    );
}
