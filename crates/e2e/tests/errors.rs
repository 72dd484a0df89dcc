//! Every refused request answers with the product's error envelope, and changes nothing.

use std::time::Duration;

use eventgate_e2e::System;
use eventgate_test_support::{token, token_with};
use serde_json::{json, Value};

fn assert_envelope(answer: &Value, status: u16, kind: &str) {
    assert_eq!(answer["success"], false, "{answer}");
    assert_eq!(answer["statusCode"], status, "{answer}");
    assert_eq!(answer["errors"][0]["type"], kind, "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{answer}"
    );
}

async fn raw_post(system: &System, path: &str, auth: Option<String>, body: &str) -> (u16, Value) {
    let mut request = system
        .http
        .post(format!("{}{path}", system.ingest_url))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.expect("answer");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_checked_in_order_token_topic_permission_body() {
    let system = System::start(1).await;
    let good = r#"{"event_name": "x", "description": "y"}"#;
    let bearer = |user: &str| Some(format!("Bearer {}", token(user)));

    // 401: no token, garbage, expired, wrong scheme. Checked before the topic exists.
    let (status, answer) = raw_post(&system, "/topics/no.such.topic", None, good).await;
    assert_eq!(status, 401);
    assert_envelope(&answer, 401, "auth");
    let (status, _) = raw_post(
        &system,
        "/topics/audit.logs",
        Some("Bearer not-a-jwt".into()),
        good,
    )
    .await;
    assert_eq!(status, 401);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let expired = token_with(json!({"sub": "dev", "exp": now - 3600}));
    let (status, answer) = raw_post(
        &system,
        "/topics/audit.logs",
        Some(format!("Bearer {expired}")),
        good,
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{answer}"
    );
    let (status, _) = raw_post(
        &system,
        "/topics/audit.logs",
        Some(format!("Basic {}", token("dev"))),
        good,
    )
    .await;
    assert_eq!(status, 401);

    // 404: unknown topic, even for a user who may write elsewhere, and before the body is looked at.
    let (status, answer) =
        raw_post(&system, "/topics/no.such.topic", bearer("dev"), "{not json").await;
    assert_eq!(status, 404);
    assert_envelope(&answer, 404, "not_found");

    // 403: a reader may not write; checked before the body.
    let (status, answer) =
        raw_post(&system, "/topics/audit.logs", bearer("reader"), "{not json").await;
    assert_eq!(status, 403);
    assert_envelope(&answer, 403, "permission");

    // 400: malformed JSON, schema violations naming the field, a batch with nothing valid.
    let (status, answer) =
        raw_post(&system, "/topics/audit.logs", bearer("writer"), "{not json").await;
    assert_eq!(status, 400);
    assert_envelope(&answer, 400, "malformed");
    let (status, answer) = raw_post(
        &system,
        "/topics/audit.logs",
        bearer("writer"),
        r#"{"event_name": 5}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_envelope(&answer, 400, "validation");
    let fields: Vec<&str> = answer["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields.contains(&"event_name"), "{answer}");
    assert!(
        fields.contains(&"description"),
        "the missing description is named by its own path: {answer}"
    );
    let (status, answer) = raw_post(&system, "/topics/public.cps.za.runs", bearer("dev"),
        r#"{"run_id": 1, "tenant_id": "a", "source_app": "s", "source_app_version": "1", "environment": "dev",
            "event_id": "0190b0b0-0000-7000-8000-000000000000", "timestamp_start": 0, "timestamp_end": 0,
            "jobs": [{"catalog_id": "c", "status": "exploded", "timestamp_start": 0, "timestamp_end": 0}]}"#).await;
    assert_eq!(status, 400);
    assert_eq!(answer["errors"][0]["field"], "jobs[0].status", "{answer}");
    // Valid for the schema, but Postgres' jsonb cannot hold a NUL character: refused here rather than
    // accepted and parked as a dead letter by the writer.
    let (status, answer) = raw_post(
        &system,
        "/topics/audit.logs",
        bearer("writer"),
        r#"{"event_name": "login", "description": "nul\u0000byte"}"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_envelope(&answer, 400, "validation");
    assert_eq!(answer["errors"][0]["field"], "description", "{answer}");

    // 207: a batch with valid and invalid events publishes only the valid ones.
    let (status, answer) = raw_post(
        &system,
        "/topics/audit.logs",
        bearer("writer"),
        r#"[{"event_name": "ok", "description": "fine"}, {"event_name": "bad"}]"#,
    )
    .await;
    assert_eq!(status, 207, "{answer}");
    assert_eq!(answer["ids"].as_array().map(Vec::len), Some(1));
    assert_eq!(answer["results"][0]["statusCode"], 202);
    assert_eq!(answer["results"][1]["statusCode"], 400);
    assert_eq!(
        answer["results"][1]["errors"][0]["field"], "[1].description",
        "{answer}"
    );

    // Exactly one event was ever published and stored: the valid half of the batch.
    system.wait_for_rows(1, Duration::from_secs(60)).await;
    assert_eq!(system.published_messages("audit.logs"), 1);
    assert_eq!(system.count_events().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_checked_like_writes() {
    let system = System::start(0).await;
    let query = |user: Option<&str>, topic: &str, body: Value| {
        let mut request = system
            .http
            .post(format!("{}/stats/{topic}", system.stats_url))
            .json(&body);
        if let Some(user) = user {
            request = request.bearer_auth(token(user));
        }
        async move {
            let response = request.send().await.expect("answer");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("JSON"),
            )
        }
    };
    let (status, answer) = query(None, "audit.logs", json!({})).await;
    assert_envelope(&answer, 401, "auth");
    assert_eq!(status, 401);
    let (status, answer) = query(Some("dev"), "nope", json!({})).await;
    assert_eq!(status, 404);
    assert_envelope(&answer, 404, "not_found");
    let (status, answer) = query(Some("writer"), "audit.logs", json!({})).await;
    assert_eq!(status, 403);
    assert_envelope(&answer, 403, "permission");
    let (status, answer) = query(
        Some("reader"),
        "audit.logs",
        json!({"filter": {"no_such_field": 1}}),
    )
    .await;
    assert_eq!(status, 400);
    assert_envelope(&answer, 400, "validation");
    assert_eq!(answer["errors"][0]["field"], "no_such_field");
    let (status, answer) = query(Some("reader"), "audit.logs", json!({"limit": 5000})).await;
    assert_eq!(status, 400);
    assert_eq!(answer["errors"][0]["field"], "limit", "{answer}");
    let (status, answer) = query(Some("reader"), "audit.logs", json!({"cursor": "forged"})).await;
    assert_eq!(status, 400);
    assert_eq!(answer["errors"][0]["field"], "cursor", "{answer}");
    let (status, answer) = query(Some("reader"), "audit.logs", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"], json!([]));
}
