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

/// A run as EventGate's integration test sends it (`_post_seed_events` in its
/// `tests/integration/test_stats_endpoint.py`), `jobs` as `(catalog_id, status, message)`.
fn eventgate_run(tenant: &str, start: i64, jobs: &[(&str, &str, Option<&str>)]) -> Value {
    let jobs: Vec<Value> = jobs
        .iter()
        .enumerate()
        .map(|(i, (catalog_id, status, message))| {
            let offset = i64::try_from(i).expect("few jobs") * 1_000;
            let mut job = json!({"catalog_id": catalog_id, "status": status,
                                 "timestamp_start": start + offset, "timestamp_end": start + offset + 500});
            if let Some(message) = message {
                job["message"] = json!(message);
            }
            job
        })
        .collect();
    json!({
        "event_id": uuid::Uuid::now_v7().to_string(), "job_ref": "spark-stats-001", "tenant_id": tenant,
        "source_app": "integration-test-stats", "source_app_version": "2.0.0", "environment": "test",
        "timestamp_start": start, "timestamp_end": start + 60_000, "jobs": jobs
    })
}

/// EventGate's own stats request (AbsaOSS/EventGate `api.yaml`, `POST /stats/{topic_name}`: its example
/// window, epoch milliseconds of the run's start, both ends inclusive) and the next page as its
/// integration test asks for it (`{"limit": 2, "cursor": …}`): one row per job, newest run first and a
/// run's jobs last first (its `internal_id DESC`), EventGate's columns and computed members, its
/// `pagination`; a reader's restriction still filters the runs; an integer cursor, another window with a
/// cursor and a topic without runs are 400s in EventGate's error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventgate_own_stats_body_answers_one_row_per_job() {
    const ACCESS: &str = r#"{
      "public.cps.za.runs": {"write": ["dev"], "read": ["dev", {"user": "portal", "fields": {"tenant_id": ["avms"]}}]},
      "audit.logs": {"write": ["dev"], "read": ["dev"]},
      "web.events": {"write": ["dev"], "read": ["dev"]}
    }"#;
    let system = System::start_with(eventgate_test_support::stack().await, 1, |config| {
        std::fs::write(&config.catalogue.access_file, ACCESS).expect("access file");
    })
    .await;
    let day = 86_400_000_i64;
    let jan_1_2024 = 1_704_067_200_000_i64;
    let runs = [
        eventgate_run(
            "avms",
            jan_1_2024 + 4 * day,
            &[
                ("db.a0", "succeeded", None),
                ("db.a1", "failed", Some("No data received from source")),
            ],
        ),
        eventgate_run(
            "OTHER",
            jan_1_2024 + 9 * day,
            &[
                ("db.b0", "succeeded", None),
                ("db.b1", "succeeded", None),
                ("db.b2", "killed", None),
            ],
        ),
        eventgate_run(
            "avms",
            jan_1_2024 + 19 * day,
            &[
                ("db.c0", "failed", Some("no records to send")),
                ("db.c1", "succeeded", None),
            ],
        ),
        // After the window.
        eventgate_run(
            "avms",
            jan_1_2024 + 500 * day,
            &[("db.d0", "succeeded", None)],
        ),
    ];
    // One request each: received one after the other, so the newest is the last.
    for run in &runs {
        let (status, answer) = system.post("public.cps.za.runs", "dev", run).await;
        assert_eq!(status, 202, "{answer}");
    }
    system.wait_for_rows(4, WAIT).await;

    let stats = |user: &'static str, topic: &'static str, body: String| {
        let request = system
            .http
            .post(format!("{}/stats/{topic}", system.stats_url))
            .bearer_auth(token(user))
            .header("Content-Type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.expect("stats-api answers");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    let catalog_ids = |answer: &Value| -> Vec<String> {
        answer["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|row| row["catalog_id"].as_str().expect("catalog_id").to_owned())
            .collect()
    };

    // The seed's body, verbatim (api.yaml's example window), with a page of 4 rows.
    let seed = r#"{"timestamp_start": 1704067200000, "timestamp_end": 1706745600000, "cursor": null, "limit": 4}"#;
    let (status, first) = stats("dev", "public.cps.za.runs", seed.to_owned()).await;
    assert_eq!(status, 200, "{first}");
    let members: Vec<&String> = first.as_object().expect("object").keys().collect();
    assert_eq!(members.len(), 4, "{first}");
    assert_eq!(
        (&first["success"], &first["statusCode"]),
        (&json!(true), &json!(200))
    );
    assert_eq!(
        catalog_ids(&first),
        ["db.c1", "db.c0", "db.b2", "db.b1"],
        "{first}"
    );
    let pagination = first["pagination"].as_object().expect("pagination");
    let mut keys: Vec<&str> = pagination.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["cursor", "has_more", "limit"], "{first}");
    assert_eq!(pagination["has_more"], json!(true));
    assert_eq!(pagination["limit"], json!(4));
    let cursor = pagination["cursor"]
        .as_str()
        .expect("a string cursor")
        .to_owned();

    // The answer is the served document's `EventGatePage` (its `$ref`s resolved in the document).
    let document: Value = system
        .http
        .get(format!("{}/openapi.json", system.stats_url))
        .send()
        .await
        .expect("stats-api answers")
        .json()
        .await
        .expect("the OpenAPI document");
    let schema =
        json!({"$ref": "#/components/schemas/EventGatePage", "components": document["components"]});
    let eventgate_page = jsonschema::validator_for(&schema).expect("a schema");
    let conforms = |answer: &Value| {
        let errors: Vec<String> = eventgate_page
            .iter_errors(answer)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}: {answer}");
    };
    conforms(&first);

    // A row: EventGate's columns and computed members exactly, then ours (`id`, `job_index`).
    let run_c = &runs[2];
    let c_start = jan_1_2024 + 19 * day;
    assert_eq!(
        first["data"][1],
        json!({
            "event_id": run_c["event_id"], "job_ref": "spark-stats-001", "tenant_id": "avms",
            "source_app": "integration-test-stats", "source_app_version": "2.0.0", "environment": "test",
            "run_timestamp_start": c_start, "run_timestamp_end": c_start + 60_000,
            "internal_id": null, "country": null, "catalog_id": "db.c0", "status": "failed",
            "timestamp_start": c_start, "timestamp_end": c_start + 500,
            "message": "no records to send", "additional_info": null,
            "run_date": "20-01-2024", "run_status": "no data produced", "formatted_tenant": "avms",
            "elapsed_time": 500, "start_time": "2024-01-20 00:00:00", "end_time": "2024-01-20 00:00:00",
            "id": run_c["event_id"], "job_index": 0
        })
    );
    assert_eq!(first["data"][2]["formatted_tenant"], json!("other"));

    // The next page as EventGate's test asks for it: limit and cursor only (the window is the cursor's).
    let (status, second) = stats(
        "dev",
        "public.cps.za.runs",
        json!({"limit": 4, "cursor": cursor}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        catalog_ids(&second),
        ["db.b0", "db.a1", "db.a0"],
        "{second}"
    );
    assert_eq!(second["data"][1]["run_status"], json!("no data received"));
    conforms(&second);
    // Not a page of events: the two shapes are told apart by the document too.
    let query_page =
        json!({"$ref": "#/components/schemas/QueryPage", "components": document["components"]});
    let query_page = jsonschema::validator_for(&query_page).expect("a schema");
    assert!(!query_page.is_valid(&first), "{first}");
    assert_eq!(
        second["pagination"],
        json!({"cursor": null, "has_more": false, "limit": 4})
    );

    // Pages of 1 row: every job once, in the same order, runs cut anywhere.
    let mut walked = Vec::new();
    let mut body = json!({"timestamp_start": 1_704_067_200_000_i64, "timestamp_end": 1_706_745_600_000_i64, "limit": 1});
    loop {
        let (status, page) = stats("dev", "public.cps.za.runs", body.to_string()).await;
        assert_eq!(status, 200, "{page}");
        walked.extend(catalog_ids(&page));
        match page["pagination"]["cursor"].as_str() {
            Some(next) => body["cursor"] = json!(next),
            None => break,
        }
        assert!(walked.len() <= 7, "{walked:?}");
    }
    assert_eq!(
        walked,
        ["db.c1", "db.c0", "db.b2", "db.b1", "db.b0", "db.a1", "db.a0"]
    );

    // A reader restricted to tenant avms: only its runs' jobs.
    let (status, portal) = stats("portal", "public.cps.za.runs", seed.to_owned()).await;
    assert_eq!(status, 200, "{portal}");
    assert_eq!(
        catalog_ids(&portal),
        ["db.c1", "db.c0", "db.a1", "db.a0"],
        "{portal}"
    );

    // EventGate's default window, the last 7 days: these runs started in 2024 and 2025.
    let (status, recent) = stats(
        "dev",
        "public.cps.za.runs",
        r#"{"timestamp_start": null, "timestamp_end": null}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 200, "{recent}");
    assert_eq!(recent["data"], json!([]), "{recent}");

    // Refusals, in EventGate's error shape (with the field named).
    for (topic, body, field) in [
        (
            "public.cps.za.runs",
            json!({"timestamp_start": 1, "cursor": 12}),
            "cursor",
        ),
        (
            "public.cps.za.runs",
            json!({"timestamp_start": 1_704_067_200_001_i64, "cursor": cursor}),
            "cursor",
        ),
        (
            "public.cps.za.runs",
            json!({"timestamp_end": "yesterday"}),
            "timestamp_end",
        ),
        (
            "public.cps.za.runs",
            json!({"timestamp_end": 1, "limit": 0}),
            "limit",
        ),
        (
            "audit.logs",
            json!({"timestamp_start": 1, "timestamp_end": 2}),
            "topic",
        ),
    ] {
        let (status, refused) = stats("dev", topic, body.to_string()).await;
        assert_eq!(status, 400, "{body}: {refused}");
        assert_eq!(refused["success"], json!(false), "{refused}");
        assert_eq!(refused["statusCode"], json!(400), "{refused}");
        assert_eq!(
            refused["errors"][0]["type"],
            json!("validation"),
            "{refused}"
        );
        assert_eq!(
            refused["errors"][0]["field"],
            json!(field),
            "{body}: {refused}"
        );
        assert!(refused["errors"][0]["message"].is_string(), "{refused}");
    }
}
