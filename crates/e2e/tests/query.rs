//! The query language over HTTP: the GET form means the same as the POST body, hostile input is a 400 and
//! nothing else, and a query that hits the statement timeout is a 503 with Retry-After.

use std::time::Duration;

use eventgate_e2e::System;
use eventgate_test_support::token;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn run(n: i64, app: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::now_v7().to_string(), "run_id": n, "tenant_id": "avms", "source_app": app,
        "source_app_version": "1.0", "environment": "dev",
        "timestamp_start": 1_736_000_000_000_i64 + n * 86_400_000, "timestamp_end": 1_736_000_000_000_i64 + n * 86_400_000 + 60_000,
        "jobs": [{"catalog_id": "db.table", "status": "succeeded", "timestamp_start": 0, "timestamp_end": 1}],
        "additional_info": {"region": if n % 2 == 0 { "eu" } else { "us" }}
    })
}

async fn get(system: &System, topic: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let response = system
        .http
        .get(format!("{}/stats/{topic}", system.stats_url))
        .bearer_auth(token("dev"))
        .query(query)
        .send()
        .await
        .expect("stats-api answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

fn ids(answer: &Value) -> Vec<String> {
    answer["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_form_equals_post_body_and_the_seed_request_works() {
    let system = System::start(1).await;
    let batch: Vec<Value> = (0..40)
        .map(|n| run(n, if n % 3 == 0 { "unify" } else { "other" }))
        .collect();
    let (status, answer) = system
        .post("public.cps.za.runs", "dev", &json!(batch))
        .await;
    assert_eq!(status, 202, "{answer}");
    system.wait_for_rows(40, WAIT).await;

    // The seed request: epoch-ms field filtered with ISO dates, sorted by it descending.
    let body = json!({"filter": {"source_app": "unify", "timestamp_start_between": ["2025-01-05", "2025-01-25"],
                                 "additional_info.region": "eu"},
                      "sort": ["-timestamp_start", "source_app"], "limit": 2});
    let (status, post) = system.query("public.cps.za.runs", "dev", &body).await;
    assert_eq!(status, 200, "{post}");
    let (status, get_answer) = get(
        &system,
        "public.cps.za.runs",
        &[
            ("source_app", "unify"),
            ("timestamp_start_between", "2025-01-05,2025-01-25"),
            ("additional_info.region", "eu"),
            ("sort", "-timestamp_start,source_app"),
            ("limit", "2"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{get_answer}");
    assert_eq!(ids(&post), ids(&get_answer));
    assert_eq!(
        post["pagination"]["has_more"],
        get_answer["pagination"]["has_more"]
    );

    // Walk every page and compare with what the data says: unify (n % 3 == 0), eu (n even), inside the range.
    let all = system.query_all("public.cps.za.runs", body.clone()).await;
    let lower = time_ms("2025-01-05T00:00:00Z");
    let upper = time_ms("2025-01-25T00:00:00Z");
    let mut expected: Vec<i64> = (0..40)
        .filter(|n| n % 3 == 0 && n % 2 == 0)
        .filter(|n| (lower..=upper).contains(&(1_736_000_000_000 + n * 86_400_000)))
        .collect();
    expected.reverse();
    let got: Vec<i64> = all
        .iter()
        .map(|e| e["payload"]["run_id"].as_i64().expect("run_id"))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);

    // The cursor works in the GET form too, and a cursor of another query is refused.
    let cursor = post["pagination"]["cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let (status, next) = get(
        &system,
        "public.cps.za.runs",
        &[
            ("source_app", "unify"),
            ("timestamp_start_between", "2025-01-05,2025-01-25"),
            ("additional_info.region", "eu"),
            ("sort", "-timestamp_start,source_app"),
            ("limit", "2"),
            ("cursor", &cursor),
        ],
    )
    .await;
    assert_eq!(status, 200, "{next}");
    let (status, foreign) = get(
        &system,
        "public.cps.za.runs",
        &[("source_app", "other"), ("cursor", &cursor)],
    )
    .await;
    assert_eq!(status, 400, "{foreign}");
    assert_eq!(foreign["errors"][0]["field"], "cursor");
}

fn time_ms(iso: &str) -> i64 {
    let t = time::OffsetDateTime::parse(iso, &time::format_description::well_known::Rfc3339)
        .expect("time");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_are_400s_and_change_nothing() {
    let system = System::start(1).await;
    let (status, _) = system
        .post(
            "audit.logs",
            "dev",
            &json!({"event_name": "x", "description": "y"}),
        )
        .await;
    assert_eq!(status, 202);
    system.wait_for_rows(1, WAIT).await;

    let long_list: Vec<i64> = (0..5000).collect();
    let hostile = [
        json!({"filter": {"event_name; DROP TABLE events; --": "x"}}),
        json!({"filter": {"payload.event_name') OR 1=1 --": "x"}}),
        json!({"filter": {"a.b.c.d.e.f.g.h.i.j.k": 1}}),
        json!({"filter": {"customer_id_in": long_list}}),
        json!({"filter": {"customer_id": "1 OR 1=1"}}),
        json!({"filter": {"created_at_gt": "yesterday"}}),
        json!({"sort": ["event_name; DELETE FROM events"]}),
        json!({"sort": ["-"]}),
        json!({"cursor": "eyJxIjoiJyBPUiAxPTEgLS0ifQ"}),
        json!({"limit": -1}),
        json!({"limit": "50; DROP TABLE events"}),
        json!({"filter": "not an object"}),
        json!({"unexpected": true}),
    ];
    for body in hostile {
        let (status, answer) = system.query("audit.logs", "dev", &body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["success"], false);
        assert!(
            answer["errors"][0]["field"].is_string(),
            "{body} → {answer}"
        );
    }
    // A SQL-looking value is matched as a plain value: no rows, no error.
    let (status, answer) = system
        .query(
            "audit.logs",
            "dev",
            &json!({"filter": {"event_name": "x' OR '1'='1"}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"], json!([]));
    // Several mistakes are reported at once.
    let (status, answer) = system
        .query(
            "audit.logs",
            "dev",
            &json!({"filter": {"nope": 1, "customer_id": "x"}, "limit": 0}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["errors"].as_array().expect("errors").len() >= 3,
        "{answer}"
    );
    assert_eq!(system.count_events().await, 1, "the table is unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_statement_timeout_is_a_503() {
    let mut system = System::start(0).await;
    // A history large enough that a case-insensitive substring scan takes far longer than 1 ms.
    system
        .database
        .execute(
            "INSERT INTO events (id, topic, received_at, producer, payload)
             SELECT gen_random_uuid(), 'audit.logs', now(), 'p',
                    jsonb_build_object('event_name', md5(i::text), 'description', repeat(md5(i::text), 20))
             FROM generate_series(1, 200000) AS i",
        )
        .await
        .expect("history");
    system
        .restart_stats_api(|config| config.stats.statement_timeout_ms = 1)
        .await;
    let (status, answer) = system
        .query(
            "audit.logs",
            "dev",
            &json!({"filter": {"description_contains": "zzzz"}, "limit": 1000}),
        )
        .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["errors"][0]["type"], "database");
}
