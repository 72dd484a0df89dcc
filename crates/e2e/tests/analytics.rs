//! Aggregates, exports and the topic list over HTTP, through the whole pipeline: the same auth order as
//! queries (401 → 404 → 403), every mistake at once as a 400, answers that agree with the events a query
//! returns, a reader's field restrictions applied to aggregates and exports as to queries, and CSV/NDJSON
//! files usable as they come (`curl -o`).

use std::collections::BTreeMap;
use std::time::Duration;

use eventgate_e2e::System;
use eventgate_test_support::token;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "public.cps.za.runs";

fn run(n: i64) -> Value {
    let app = ["unify", "ingest", "report"][(n % 3) as usize];
    json!({
        "event_id": uuid::Uuid::now_v7().to_string(), "run_id": n,
        "tenant_id": if n % 4 == 0 { "avms" } else { "other" },
        "source_app": app,
        "source_app_version": "1.0", "environment": "dev",
        // One run every 7 hours from 2025-01-04T14:13:20Z.
        "timestamp_start": 1_736_000_000_000_i64 + n * 25_200_000, "timestamp_end": 1_736_000_000_000_i64 + n * 25_200_000 + 60_000,
        "jobs": [{"catalog_id": "db.table", "status": "succeeded", "timestamp_start": 0, "timestamp_end": 1}],
        "additional_info": {"region": if n % 2 == 0 { "eu" } else { "us" }}
    })
}

async fn aggregate(system: &System, user: &str, topic: &str, body: &Value) -> (u16, Value) {
    let response = system
        .http
        .post(format!("{}/stats/{topic}/aggregate", system.stats_url))
        .bearer_auth(token(user))
        .json(body)
        .send()
        .await
        .expect("stats-api answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

async fn export(system: &System, user: &str, query: &[(&str, &str)]) -> (u16, String, String) {
    let response = system
        .http
        .get(format!("{}/stats/{TOPIC}/export", system.stats_url))
        .bearer_auth(token(user))
        .query(query)
        .send()
        .await
        .expect("stats-api answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.expect("body"))
}

fn error_fields(answer: &Value) -> Vec<String> {
    answer["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_and_exports_agree_with_queries() {
    let mut system = System::start(1).await;
    let batch: Vec<Value> = (0..60).map(run).collect();
    let (status, answer) = system.post(TOPIC, "dev", &json!(batch)).await;
    assert_eq!(status, 202, "{answer}");
    system.wait_for_rows(60, WAIT).await;
    let events = system.query_all(TOPIC, json!({"limit": 1000})).await;
    assert_eq!(events.len(), 60);

    // --- Aggregates: groups, buckets and totals as computed from the events themselves.
    let (status, answer) = aggregate(
        &system,
        "dev",
        TOPIC,
        &json!({
            "filter": {"additional_info.region": "eu"},
            "group_by": ["source_app"],
            "metrics": ["count", "count_distinct(tenant_id)", "sum(run_id)", "max(timestamp_start)"],
            "limit": 2
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let mut by_app: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for event in &events {
        let p = &event["payload"];
        if p["additional_info"]["region"] != "eu" {
            continue;
        }
        let entry = by_app
            .entry(p["source_app"].as_str().expect("app").to_owned())
            .or_default();
        entry.0 += 1;
        entry.1 += p["run_id"].as_i64().expect("run_id");
        entry.2 = entry.2.max(p["timestamp_start"].as_i64().expect("ts"));
    }
    assert_eq!(answer["total"]["groups"], 3, "{answer}");
    assert_eq!(answer["total"]["metrics"]["count"], 30, "{answer}");
    assert_eq!(answer["has_more"], true);
    let data = answer["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    // Count descending, then the app name: 10 each, so "ingest" and "report" come first.
    let names: Vec<&str> = by_app.keys().map(String::as_str).collect();
    assert_eq!(names, ["ingest", "report", "unify"]);
    for (row, name) in data.iter().zip(["ingest", "report"]) {
        let (count, sum, max) = by_app[name];
        assert_eq!(row["group"], json!({"source_app": name}), "{row}");
        assert_eq!(row["metrics"]["count"], count, "{row}");
        assert_eq!(row["metrics"]["sum(run_id)"], sum, "{row}");
        assert_eq!(row["metrics"]["max(timestamp_start)"], max, "{row}");
        // "avms" only on every fourth run: present in some groups, never more than two tenants.
        assert!(
            row["metrics"]["count_distinct(tenant_id)"]
                .as_i64()
                .expect("n")
                <= 2
        );
    }

    // Daily buckets of an epoch-ms field, in a time zone: they add up to every event.
    let (status, answer) = aggregate(
        &system,
        "dev",
        TOPIC,
        &json!({"interval": {"unit": "day", "field": "timestamp_start", "time_zone": "america/new_york"}, "limit": 1000}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["interval"]["time_zone"], "America/New_York",
        "the database's spelling"
    );
    let buckets = answer["data"].as_array().expect("data");
    let sum: i64 = buckets
        .iter()
        .map(|b| b["metrics"]["count"].as_i64().expect("count"))
        .sum();
    assert_eq!(sum, 60);
    // New York midnight is 05:00Z in January; buckets ascend.
    assert!(
        buckets.iter().all(|b| b["bucket"]
            .as_str()
            .expect("bucket")
            .ends_with("T05:00:00Z")),
        "{answer}"
    );
    let starts: Vec<&str> = buckets
        .iter()
        .map(|b| b["bucket"].as_str().expect("bucket"))
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");

    // Auth first, in the order of queries; then every mistake at once.
    let response = system
        .http
        .post(format!("{}/stats/{TOPIC}/aggregate", system.stats_url))
        .json(&json!({}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 401);
    let (status, _) = aggregate(&system, "dev", "no.such.topic", &json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = aggregate(&system, "writer", TOPIC, &json!({})).await;
    assert_eq!(status, 403);
    let (status, answer) = aggregate(
        &system,
        "dev",
        TOPIC,
        &json!({"filter": {"run_idd": 1}, "group_by": ["jobs"], "interval": {"unit": "fortnight"},
                "metrics": ["avg(source_app)"], "limit": 100000}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        error_fields(&answer),
        [
            "run_idd",
            "group_by[0]",
            "interval.unit",
            "metrics[0]",
            "limit"
        ]
    );
    let (status, answer) = aggregate(
        &system,
        "dev",
        TOPIC,
        &json!({"interval": {"unit": "day", "time_zone": "Mars/Olympus_Mons"}}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(error_fields(&answer), ["interval.time_zone"]);

    // --- Exports: every matching event, in the query's order, as NDJSON and as CSV.
    let query_ids = |filter: &dyn Fn(&Value) -> bool| -> Vec<String> {
        events
            .iter()
            .filter(|e| filter(e))
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (status, content_type, body) = export(
        &system,
        "dev",
        &[("format", "ndjson"), ("source_app", "unify")],
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson"),
        "{body}"
    );
    let exported: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON event per line"))
        .collect();
    let ids: Vec<String> = exported
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids, query_ids(&|e| e["payload"]["source_app"] == "unify"));
    assert_eq!(
        exported[0],
        events
            .iter()
            .find(|e| e["id"] == exported[0]["id"])
            .cloned()
            .expect("same event")
    );

    let (status, content_type, body) = export(
        &system,
        "dev",
        &[
            ("format", "csv"),
            ("fields", "id,run_id,additional_info.region,jobs"),
            ("sort", "run_id"),
            ("run_id_lt", "3"),
        ],
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/csv; charset=utf-8"),
        "{body}"
    );
    let lines: Vec<&str> = body.split("\r\n").collect();
    assert_eq!(lines[0], "id,run_id,additional_info.region,jobs");
    let first = events
        .iter()
        .find(|e| e["payload"]["run_id"] == 0)
        .expect("run 0");
    // A JSON cell is the stored JSON text, quoted as CSV: its keys come in the database's order, so
    // the cell is compared as JSON.
    let prefix = format!("{},0,eu,", first["id"].as_str().expect("id"));
    let cell = lines[1]
        .strip_prefix(prefix.as_str())
        .and_then(|rest| rest.strip_prefix('"'))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{prefix}\"<json>\" expected: {}", lines[1]))
        .replace("\"\"", "\"");
    assert_eq!(
        serde_json::from_str::<Value>(&cell).expect("the jobs cell is JSON"),
        json!([{"catalog_id": "db.table", "status": "succeeded", "timestamp_end": 1, "timestamp_start": 0}])
    );
    assert_eq!(
        lines.len(),
        5,
        "header, three rows, and the empty rest after the last CRLF: {body}"
    );
    assert!(lines[4].is_empty());

    let (status, _, body) = export(
        &system,
        "dev",
        &[("format", "csv"), ("cursor", "x"), ("run_idd", "1")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Exports take a cursor (to resume after a cap): a forged one and an unknown field are both named.
    let answer: Value = serde_json::from_str(&body).expect("JSON error");
    let mut fields = error_fields(&answer);
    fields.sort();
    assert_eq!(fields, ["cursor", "run_idd"]);
    let (status, _, _) = export(&system, "writer", &[]).await;
    assert_eq!(status, 403);

    // --- The topic list: what the token may read.
    let topics = |user: &'static str| {
        let system = &system;
        async move {
            let response = system
                .http
                .get(format!("{}/stats", system.stats_url))
                .bearer_auth(token(user))
                .send()
                .await
                .expect("answer");
            assert_eq!(response.status(), 200);
            let answer: Value = response.json().await.expect("JSON");
            answer["topics"]
                .as_array()
                .expect("topics")
                .iter()
                .map(|t| t["name"].as_str().expect("name").to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        topics("dev").await,
        ["audit.logs", "public.cps.za.runs", "web.events"]
    );
    assert_eq!(topics("reader").await, ["audit.logs", "public.cps.za.runs"]);
    assert!(topics("writer").await.is_empty());

    // --- A reader restricted to one tenant sees only that tenant, in aggregates and exports alike.
    let access = system.database.name.clone();
    let dir = std::env::temp_dir().join(format!("eventgate-analytics-{access}"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("access.json"),
        r#"{"public.cps.za.runs": {"write": ["dev"], "read": ["dev", {"user": "portal", "fields": {"tenant_id": ["avms"]}}]}}"#,
    )
    .expect("access file");
    system
        .restart_stats_api(|config| config.catalogue.access_file = dir.join("access.json"))
        .await;
    let (status, answer) = aggregate(
        &system,
        "portal",
        TOPIC,
        &json!({"group_by": ["tenant_id"]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["data"],
        json!([{"group": {"tenant_id": "avms"}, "metrics": {"count": 15}}])
    );
    assert_eq!(answer["total"]["metrics"]["count"], 15);
    let (status, _, body) = export(
        &system,
        "portal",
        &[("format", "csv"), ("fields", "tenant_id")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("tenant_id\r\n{}", "avms\r\n".repeat(15)));
    let _ = std::fs::remove_dir_all(&dir);
}
