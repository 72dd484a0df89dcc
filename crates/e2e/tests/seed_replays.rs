//! The requests of the systems eventgate replaces, replayed verbatim through the whole pipeline
//! (ingest-api → Kafka → db-writer → Postgres → stats-api): what their users send must keep working.
//!
//! - EventGate: its `POST /stats/{topic_name}` body and the shape of its answer.
//! - the-eye (kylepw/the-eye, README "Usage"): its example event, with a naive `timestamp`, accepted by
//!   the shipped `web.events` and stored normalised; its documented query strings.
//!
//! (Other helpers may append replays of other systems here.)

use std::time::Duration;

use eventgate_e2e::System;
use eventgate_test_support::token;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// A `GET` of `url` as `dev`: status and JSON answer.
async fn get_url(system: &System, url: &str) -> (u16, Value) {
    let response = system
        .http
        .get(url)
        .bearer_auth(token("dev"))
        .send()
        .await
        .expect("stats-api answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

fn run(n: i64, app: &str, failed_job: bool) -> Value {
    let start = 1_735_689_600_000_i64 + n * 86_400_000; // 2025-01-01 + n days
    json!({
        "event_id": uuid::Uuid::now_v7().to_string(), "run_id": 12345 + n, "tenant_id": "avms",
        "source_app": app, "source_app_version": "1.0", "environment": "prod",
        "timestamp_start": start, "timestamp_end": start + 60_000,
        "jobs": [
            {"catalog_id": "db.a", "status": "succeeded", "timestamp_start": start, "timestamp_end": start + 1},
            {"catalog_id": "db.b", "status": if failed_job { "failed" } else { "skipped" },
             "timestamp_start": start + 10, "timestamp_end": start + 20}
        ]
    })
}

/// EventGate's stats request, verbatim as its users send it, and the answer's shape: `success`,
/// `statusCode`, `data` (events), `pagination` with `cursor`, `has_more` and `limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventgate_stats_request_and_answer_shape_hold() {
    let system = System::start(1).await;
    let batch: Vec<Value> = (0..40)
        .map(|n| run(n % 20, if n < 20 { "unify" } else { "other" }, n % 5 == 0))
        .collect();
    let (status, answer) = system
        .post("public.cps.za.runs", "dev", &json!(batch))
        .await;
    assert_eq!(status, 202, "{answer}");
    system.wait_for_rows(40, WAIT).await;

    let seed = r#"{
        "filter": {"source_app": "unify", "timestamp_start_between": ["2025-01-01", "2025-01-31"], "run_id": 12345},
        "sort": ["-timestamp_start", "source_app"],
        "cursor": null,
        "limit": 50
    }"#;
    let response = system
        .http
        .post(format!("{}/stats/public.cps.za.runs", system.stats_url))
        .bearer_auth(token("dev"))
        .header("Content-Type", "application/json")
        .body(seed)
        .send()
        .await
        .expect("stats-api answers");
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(answer["success"], json!(true), "{answer}");
    assert_eq!(answer["statusCode"], json!(200), "{answer}");
    let data = answer["data"].as_array().expect("data is a list");
    assert_eq!(data.len(), 1, "run 12345 of unify: {answer}");
    let event = &data[0];
    for member in ["id", "topic", "timestamp", "producer", "payload"] {
        assert!(event.get(member).is_some(), "{member} in {event}");
    }
    assert_eq!(event["payload"]["run_id"], json!(12345));
    assert_eq!(event["payload"]["source_app"], json!("unify"));
    let pagination = &answer["pagination"];
    assert_eq!(pagination["has_more"], json!(false), "{answer}");
    assert_eq!(pagination["limit"], json!(50), "{answer}");
    assert!(
        pagination
            .get("cursor")
            .is_some_and(|c| c.is_null() || c.is_string()),
        "{answer}"
    );

    // The question on that topic: runs with a failed job, by a filter inside the `jobs` array, in the
    // POST body and the GET form alike.
    let (status, failed) = system
        .query(
            "public.cps.za.runs",
            "dev",
            &json!({"filter": {"jobs[].status": "failed", "source_app": "unify"}, "limit": 100}),
        )
        .await;
    assert_eq!(status, 200, "{failed}");
    let runs: Vec<i64> = failed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["payload"]["run_id"].as_i64().expect("run_id"))
        .collect();
    let mut sorted = runs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [12345, 12350, 12355, 12360], "{failed}");
    let (status, get_failed) = get_url(
        &system,
        &format!(
            "{}/stats/public.cps.za.runs?jobs%5B%5D.status=failed&source_app=unify&limit=100",
            system.stats_url
        ),
    )
    .await;
    assert_eq!(status, 200, "{get_failed}");
    assert_eq!(get_failed["data"], failed["data"]);
    // Sorting by a field inside an array is a 400 that says why.
    let (status, refused) = system
        .query(
            "public.cps.za.runs",
            "dev",
            &json!({"sort": ["jobs[].timestamp_start"]}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["errors"][0]["field"], json!("sort[0]"), "{refused}");
}

/// the-eye's example event, verbatim (its README, "Send event").
const THE_EYE_EVENT: &str = r#"{
        "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
        "category": "click",
        "name": "pageview",
        "data": {
            "host": "www.consumeraffairs.com",
            "path": "/"
        },
        "timestamp": "2021-01-01 09:15:29.243860"
    }"#;

/// the-eye's event is accepted by `web.events` (naive time read in UTC, stored as RFC 3339), and its
/// documented query strings answer: `session_id`, `category`, and `timestamp_before` /
/// `timestamp_after` (django-filter's inclusive range: `_lte` / `_gte`). Here `timestamp` is when
/// eventgate received the event; the event's own time is `payload.timestamp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eyes_event_and_queries_work() {
    let system = System::start(1).await;
    let response = system
        .http
        .post(format!("{}/topics/web.events", system.ingest_url))
        .bearer_auth(token("dev"))
        .header("Content-Type", "application/json")
        .body(THE_EYE_EVENT)
        .send()
        .await
        .expect("ingest-api answers");
    let status = response.status().as_u16();
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(status, 202, "{answer}");
    system.wait_for_rows(1, WAIT).await;

    let stats = format!("{}/stats/web.events", system.stats_url);
    let payloads = |answer: &Value| -> Vec<Value> {
        answer["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|e| e["payload"].clone())
            .collect()
    };
    // the-eye's query strings, verbatim.
    let (status, by_session) = get_url(
        &system,
        &format!("{stats}?session_id=e2085be5-9137-4e4e-80b5-f1ffddc25423"),
    )
    .await;
    assert_eq!(status, 200, "{by_session}");
    let found = payloads(&by_session);
    assert_eq!(found.len(), 1, "{by_session}");
    assert_eq!(
        found[0]["timestamp"],
        json!("2021-01-01T09:15:29.243860Z"),
        "stored normalised"
    );
    assert_eq!(found[0]["data"]["host"], json!("www.consumeraffairs.com"));
    let (status, other_category) =
        get_url(&system, &format!("{stats}?category=form%20interaction")).await;
    assert_eq!(status, 200, "{other_category}");
    assert!(payloads(&other_category).is_empty(), "{other_category}");
    let (status, before) = get_url(&system, &format!("{stats}?timestamp_before=2021-05-20")).await;
    assert_eq!(status, 200, "{before}");
    assert!(payloads(&before).is_empty(), "received today: {before}");
    let (status, after) = get_url(&system, &format!("{stats}?timestamp_after=2021-06-01")).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(payloads(&after).len(), 1, "{after}");
    // The event's own time, inclusive at both ends as in the-eye.
    for (query, hits) in [
        (
            "payload.timestamp_after=2021-01-01&payload.timestamp_before=2021-01-02",
            1,
        ),
        ("payload.timestamp_after=2021-01-01T09:15:29.243860Z", 1),
        ("payload.timestamp_before=2021-01-01T09:15:29.243860Z", 1),
        ("payload.timestamp_after=2021-01-01T09:15:29.243861Z", 0),
        ("payload.timestamp_before=2021-01-01", 0),
    ] {
        let (status, answer) = get_url(&system, &format!("{stats}?{query}")).await;
        assert_eq!(status, 200, "{query}: {answer}");
        assert_eq!(payloads(&answer).len(), hits, "{query}: {answer}");
    }
}
