//! Topics that change without a restart (issue #17), on the service binaries run as processes so that
//! each can be sent SIGHUP as operators send it (`pkill -HUP eventgate`): a topic file and its access
//! rule added while the system runs work end to end after a SIGHUP to every service — accepted by the
//! ingest-api, written by the writer, queryable in the stats-api — while another topic's stream runs
//! through the reloads with nothing lost or duplicated; a directory that does not load changes nothing
//! and is counted; and no SIGHUP ever ends a service (its default action would).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use eventgate_e2e::processes::{start_ingest_api, start_stats_api, start_writer, Service};
use eventgate_e2e::{repo_root, test_config};
use eventgate_test_support::{
    accepted_ids, assert_exactly_once, get_json, metric, stack, token, wait_until, TestDatabase,
};

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
    let reached = wait_until(
        &format!("{name} = {want} on {}", service.name),
        WAIT,
        || async { metric(http, service.port, name).await == Some(want) },
    )
    .await;
    if let Err(error) = reached {
        panic!(
            "{error:#}: it is {:?}\n{}",
            metric(http, service.port, name).await,
            service.process.log()
        );
    }
}

/// SIGHUP to every service, as `pkill -HUP` sends it; then waits until each has counted `want` reloads
/// with `outcome` (`ok` or `failed`).
async fn sighup_all_and_wait(
    http: &reqwest::Client,
    services: &[&Service],
    outcome: &str,
    want: f64,
) {
    for service in services {
        sighup(service);
    }
    let metric = format!("eventgate_topic_reloads_total{{outcome=\"{outcome}\"}}");
    for service in services {
        wait_for_metric(http, service, &metric, want).await;
    }
}

async fn post(http: &reqwest::Client, ingest: &Service, topic: &str, body: &Value) -> (u16, Value) {
    let response = http
        .post(ingest.url(&format!("/topics/{topic}")))
        .bearer_auth(token("dev"))
        .json(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the ingest-api answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The logs of `services`, one after the other, for a failure's message.
fn all_logs(services: &[&Service]) -> String {
    services
        .iter()
        .map(|s| s.process.log())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The three services as processes on a database of their own, reading a copy of the repository's
/// topics directory (which the test then changes) and an access file that lets `dev` use audit.logs.
struct System {
    database: TestDatabase,
    dir: PathBuf,
    topics: PathBuf,
    access: PathBuf,
    /// How many topics the copy holds.
    initial: f64,
    http: reqwest::Client,
    ingest: Service,
    writer: Service,
    stats: Service,
}

impl System {
    /// Started, each service ready and serving the copied topics.
    async fn start(name: &str) -> System {
        let stack = stack().await;
        let database = stack.fresh_database().await;
        let mut config = test_config(stack, &database);
        let dir = std::env::temp_dir().join(format!("eventgate-{name}-{}", database.name));
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
        let access = dir.join("access.json");
        std::fs::write(
            &access,
            r#"{"audit.logs": {"write": ["dev"], "read": ["dev"]}}"#,
        )
        .expect("access file");
        config.catalogue.access_file = access.clone();
        let http = reqwest::Client::new();
        let ingest = start_ingest_api(&http, &dir, &config).await;
        let writer = start_writer(&http, &dir, &config, "writer").await;
        let stats = start_stats_api(&http, &dir, &config).await;
        wait_for_metric(
            &http,
            &writer,
            "eventgate_writer_topics_subscribed",
            initial,
        )
        .await;
        wait_for_metric(&http, &ingest, "eventgate_topics", initial).await;
        System {
            database,
            dir,
            topics,
            access,
            initial,
            http,
            ingest,
            writer,
            stats,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_added_with_sighup_works_end_to_end_without_a_restart() {
    let System {
        database,
        dir,
        topics,
        access,
        initial,
        http,
        ingest,
        writer,
        stats,
    } = System::start("reload").await;
    let services = [&ingest, &writer, &stats];
    let logs = || all_logs(&services);

    // Another topic's stream runs through every reload below.
    let streaming = Arc::new(AtomicBool::new(true));
    let stream = {
        let (http, url, streaming) = (
            http.clone(),
            ingest.url("/topics/audit.logs"),
            streaming.clone(),
        );
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut n = 0u64;
            while streaming.load(Ordering::Relaxed) {
                n += 1;
                let body = json!([
                    {"event_name": "login", "description": format!("stream {n}a")},
                    {"event_name": "logout", "description": format!("stream {n}b")},
                ]);
                let response = http
                    .post(&url)
                    .bearer_auth(token("dev"))
                    .json(&body)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .expect("the ingest-api answers");
                assert_eq!(
                    response.status(),
                    202,
                    "the stream is refused during a reload"
                );
                let answer: Value = response.json().await.expect("a JSON answer");
                accepted.extend(accepted_ids(&answer));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            accepted
        })
    };

    // A directory that does not load: nothing changes anywhere, each service counts the failure.
    std::fs::write(topics.join("broken.json"), "{\"type\": ").expect("a broken topic");
    sighup_all_and_wait(&http, &services, "failed", 1.0).await;
    for service in services {
        let (status, body) = get_json(&http, &service.url("/health/ready"))
            .await
            .expect("the readiness probe answers");
        assert_eq!(
            status, 200,
            "a failed reload does not make {} unready: {body}",
            service.name
        );
        let warning = body["warnings"][0].as_str().unwrap_or_default();
        assert!(
            warning.contains("topics not reloaded") && warning.contains("broken.json"),
            "{}: {body}",
            service.name
        );
    }
    std::fs::remove_file(topics.join("broken.json")).expect("remove the broken topic");
    let (status, answer) = post(&http, &ingest, NEW_TOPIC, &json!({"order_id": 1})).await;
    assert_eq!(status, 404, "not a topic yet: {answer}");

    // The new topic and its access rule; SIGHUP to every service, as `pkill -HUP` sends it.
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
    std::fs::write(
        &access,
        format!(
            r#"{{"audit.logs": {{"write": ["dev"], "read": ["dev"]}},
                "{NEW_TOPIC}": {{"write": ["dev"], "read": ["dev"]}}}}"#
        ),
    )
    .expect("access file");
    sighup_all_and_wait(&http, &services, "ok", 1.0).await;
    wait_for_metric(
        &http,
        &writer,
        "eventgate_writer_topics_subscribed",
        initial + 1.0,
    )
    .await;
    wait_for_metric(&http, &stats, "eventgate_topics", initial + 1.0).await;

    // Its events: accepted (the schema applies), stored, and queryable.
    let (status, answer) = post(&http, &ingest, NEW_TOPIC, &json!({"amount_cents": 5})).await;
    assert_eq!(status, 400, "the new schema applies: {answer}");
    let orders: Vec<Value> = (0..5)
        .map(|n| json!({"order_id": n, "amount_cents": 100 * n}))
        .collect();
    let (status, answer) = post(&http, &ingest, NEW_TOPIC, &Value::Array(orders)).await;
    assert_eq!(status, 202, "{answer}\n{}", logs());
    let order_ids = accepted_ids(&answer);
    assert_eq!(order_ids.len(), 5);
    let queried = wait_until("the new topic's events in the stats-api", WAIT, || async {
        let response = http
            .get(stats.url(&format!("/stats/{NEW_TOPIC}?limit=10")))
            .bearer_auth(token("dev"))
            .send()
            .await;
        match response {
            Ok(response) if response.status() == 200 => response
                .json::<Value>()
                .await
                .is_ok_and(|body| body["data"].as_array().is_some_and(|rows| rows.len() == 5)),
            _ => false,
        }
    })
    .await;
    if let Err(error) = queried {
        panic!("{error:#}\n{}", logs());
    }

    // The stream stops; every event of both topics is stored exactly once.
    streaming.store(false, Ordering::Relaxed);
    let mut accepted = stream.await.expect("the stream ran");
    assert!(accepted.len() >= 4, "the stream ran through the reloads");
    accepted.extend(order_ids);
    assert_exactly_once(&database, &accepted, WAIT, logs).await;

    // Still the same processes, all ready, after two SIGHUPs each; the warning is gone.
    for service in services {
        service.wait_ready(&http, "/health/ready").await;
        let (_, body) = get_json(&http, &service.url("/health/ready"))
            .await
            .expect("the readiness probe answers");
        assert!(body.get("warnings").is_none(), "{}: {body}", service.name);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `body` to `topic` with the `Eventgate-Schema-Version` header when `version` is given.
async fn post_version(
    http: &reqwest::Client,
    ingest: &Service,
    topic: &str,
    version: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut request = http
        .post(ingest.url(&format!("/topics/{topic}")))
        .bearer_auth(token("dev"))
        .json(body)
        .timeout(Duration::from_secs(30));
    if let Some(version) = version {
        request = request.header("Eventgate-Schema-Version", version);
    }
    let response = request.send().await.expect("the ingest-api answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A stats-api answer (200) as JSON, or `None`.
async fn stats_json(http: &reqwest::Client, stats: &Service, path: &str) -> Option<Value> {
    let response = http
        .get(stats.url(path))
        .bearer_auth(token("dev"))
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_version_added_with_sighup_is_used_and_an_incompatible_one_is_refused() {
    const TOPIC: &str = "audit.logs";
    let System {
        database,
        dir,
        topics,
        http,
        ingest,
        writer,
        stats,
        ..
    } = System::start("versions").await;
    let services = [&ingest, &writer, &stats];
    let logs = || all_logs(&services);

    // The topic becomes a directory: version 1 is the shipped schema, version 2 adds an optional
    // property to the closed object (backward compatible).
    let single = topics.join(format!("{TOPIC}.json"));
    let v1: Value =
        serde_json::from_slice(&std::fs::read(&single).expect("the topic")).expect("a schema");
    let mut v2 = v1.clone();
    v2["properties"]["region"] = json!({"type": "string"});
    let versions = topics.join(TOPIC);
    std::fs::create_dir_all(&versions).expect("the topic's directory");
    std::fs::write(versions.join("1.json"), v1.to_string()).expect("1.json");
    std::fs::write(versions.join("2.json"), v2.to_string()).expect("2.json");
    std::fs::remove_file(&single).expect("the single file goes");
    sighup_all_and_wait(&http, &services, "ok", 1.0).await;

    // Version 1 (the header) is closed: region is refused there; version 2 (`$schema`) takes it.
    let (status, answer) = post_version(
        &http,
        &ingest,
        TOPIC,
        Some("1"),
        &json!({"event_name": "v1", "description": "d", "region": "eu"}),
    )
    .await;
    assert_eq!(status, 400, "version 1 applies: {answer}");
    assert_eq!(answer["errors"][0]["field"], "region", "{answer}");
    let (status, answer) = post_version(
        &http,
        &ingest,
        TOPIC,
        Some("1"),
        &json!({"event_name": "v1", "description": "by header"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}\n{}", logs());
    let v1_id = accepted_ids(&answer).remove(0);
    let (status, answer) = post_version(
        &http,
        &ingest,
        TOPIC,
        None,
        &json!({"event_name": "v2", "description": "by $schema", "region": "eu",
                "$schema": "audit.logs/2"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}\n{}", logs());
    let v2_id = accepted_ids(&answer).remove(0);
    // An unknown version: the field named, the versions listed.
    let (status, answer) = post_version(
        &http,
        &ingest,
        TOPIC,
        None,
        &json!({"event_name": "x", "description": "d", "$schema": 9}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "$schema", "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("its versions are 1, 2")),
        "{answer}"
    );

    // Stored with their versions.
    for (id, version) in [(&v1_id, 1), (&v2_id, 2)] {
        let sql = format!(
            "SELECT count(*) FROM events WHERE id = '{id}' AND schema_version = {version} \
             AND NOT payload ? '$schema'"
        );
        let stored = wait_until(
            &format!("{id} stored as version {version}"),
            WAIT,
            || async { database.count(&sql).await.ok() == Some(1) },
        )
        .await;
        if let Err(error) = stored {
            panic!("{error:#}\n{}", logs());
        }
    }
    // Answered with their versions; the fields are the union, and the new one filters.
    let answer = stats_json(&http, &stats, &format!("/stats/{TOPIC}?limit=10"))
        .await
        .expect("a query answer");
    let version_of = |id: &str| {
        answer["data"]
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["id"] == id))
            .map(|row| row["schema_version"].clone())
    };
    assert_eq!(version_of(&v1_id), Some(json!(1)), "{answer}");
    assert_eq!(version_of(&v2_id), Some(json!(2)), "{answer}");
    let lookup = stats_json(&http, &stats, &format!("/stats/{TOPIC}/events/{v2_id}"))
        .await
        .expect("a lookup answer");
    assert_eq!(lookup["data"]["schema_version"], 2, "{lookup}");
    let fields = stats_json(&http, &stats, &format!("/stats/{TOPIC}/fields"))
        .await
        .expect("the fields");
    assert!(
        fields["fields"]
            .as_array()
            .is_some_and(|f| f.contains(&json!({"name": "region", "type": "string"}))),
        "{fields}"
    );
    let filtered = stats_json(&http, &stats, &format!("/stats/{TOPIC}?region=eu"))
        .await
        .expect("a filtered answer");
    let ids: Vec<&str> = filtered["data"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|row| row["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [v2_id.as_str()], "{filtered}");

    // Version 3 requires a new property: it breaks backward compatibility, and every service keeps
    // versions 1 and 2, counting the failure and naming the property.
    let mut v3 = v2.clone();
    v3["properties"]["tenant"] = json!({"type": "string"});
    v3["required"] = json!(["event_name", "description", "tenant"]);
    std::fs::write(versions.join("3.json"), v3.to_string()).expect("3.json");
    sighup_all_and_wait(&http, &services, "failed", 1.0).await;
    for service in services {
        let (status, body) = get_json(&http, &service.url("/health/ready"))
            .await
            .expect("the readiness probe answers");
        assert_eq!(status, 200, "{}: {body}", service.name);
        let warning = body["warnings"][0].as_str().unwrap_or_default();
        assert!(
            warning.contains("version 3") && warning.contains("tenant"),
            "{}: {body}",
            service.name
        );
    }
    let mut accepted = vec![v1_id, v2_id];
    for (header, body) in [
        (
            Some("1"),
            json!({"event_name": "v1", "description": "after the refusal"}),
        ),
        (
            None,
            json!({"event_name": "v2", "description": "after", "region": "us", "$schema": 2}),
        ),
        // The latest is still version 2.
        (
            None,
            json!({"event_name": "latest", "description": "after", "region": "us"}),
        ),
    ] {
        let (status, answer) = post_version(&http, &ingest, TOPIC, header, &body).await;
        assert_eq!(status, 202, "{body}: {answer}\n{}", logs());
        accepted.extend(accepted_ids(&answer));
    }
    assert_exactly_once(&database, &accepted, WAIT, logs).await;
    assert_eq!(
        database
            .count("SELECT count(*) FROM events WHERE schema_version = 2")
            .await
            .expect("count"),
        3
    );
    let _ = std::fs::remove_dir_all(&dir);
}
