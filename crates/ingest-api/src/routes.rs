//! HTTP handlers: extract → authenticate → authorise → prepare (core rules) → publish → respond.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use time::OffsetDateTime;

use eventgate_core::error::ApiError;
use eventgate_core::gate::Gatekeeping;
use eventgate_core::health::HealthReport;
use eventgate_core::http::{
    authorization, metrics_response, read_body, record_request_events, TopicWriter,
};
use eventgate_core::ingest;
use eventgate_core::limits;

use crate::AppState;

const SERVICE: &str = "ingest-api";
/// A readiness probe answers within this even when the broker hangs.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/topics", web::get().to(list_topics))
        .route("/topics/{topic}", web::get().to(get_topic))
        .route("/topics/{topic}", web::post().to(post_events));
}

/// Probes and metrics: on `ingest.admin_listen` when it is set, else beside the API.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/health/live", web::get().to(health))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

/// The gate (401 → 429 → 404 → 403) is the `TopicWriter` extractor.
async fn post_events(
    writer: TopicWriter,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let TopicWriter(eventgate_core::gate::Passed {
        principal,
        topic,
        restrictions,
    }) = writer;
    let topic = &*topic;
    let body_timeout = std::time::Duration::from_millis(state.limits.body_timeout_ms);
    let body = tokio::time::timeout(body_timeout, read_body(payload, state.max_body_bytes))
        .await
        .map_err(|_| limits::body_timeout(body_timeout))??;
    limits::check_json_depth(&body, state.limits.max_json_depth, true)?;
    let mut prepared = ingest::prepare(
        &body,
        topic,
        &principal.user,
        &state.rules,
        OffsetDateTime::now_utc(),
    )?;
    // Field restrictions (403) are checked on the events that would be published, before anything is.
    restrictions.check_write(&prepared, &principal.user)?;
    let records = prepared.records(topic, state.rules.max_event_bytes);
    state
        .metrics
        .rejected_events(&topic.name, &prepared.outcomes);
    let deliveries = if records.is_empty() {
        Vec::new()
    } else {
        state.publisher.publish(topic, &records).await
    };
    state.metrics.delivered(&topic.name, &deliveries);
    let acknowledged = deliveries
        .iter()
        .filter(|d| matches!(d, ingest::Delivery::Acknowledged))
        .count();
    // Logged with the request's one line (`request served`), not a line of its own: at tens of
    // thousands of requests a second, every log line costs (docs/PERFORMANCE.md).
    record_request_events(acknowledged);
    let answer = ingest::answer(&prepared, &deliveries)?;
    let mut response = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(answer.status)
            .unwrap_or(actix_web::http::StatusCode::MULTI_STATUS),
    );
    if let Some(seconds) = answer.retry_after_secs {
        response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
    }
    Ok(response.json(answer.body))
}

/// The topics the caller may write or read: topic names and schemas are not for anonymous eyes.
async fn list_topics(
    request: HttpRequest,
    gate: web::Data<Gatekeeping>,
) -> Result<HttpResponse, ApiError> {
    let principal = gate.verifier.authenticate(authorization(&request))?;
    let rules = gate.access.rules();
    let names: Vec<&str> = gate
        .catalogue
        .names()
        .filter(|name| {
            rules.write_access(&principal, name).is_some()
                || rules.read_access(&principal, name).is_some()
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"success": true, "statusCode": 200, "topics": names})))
}

/// A topic's schema, for those who may write or read it: 401 → 404 → 403.
async fn get_topic(
    request: HttpRequest,
    gate: web::Data<Gatekeeping>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = gate.verifier.authenticate(authorization(&request))?;
    let topic = gate.topic(&path)?;
    let rules = gate.access.rules();
    if rules.write_access(&principal, &topic.name).is_none() {
        rules.authorize_read(&principal, &topic.name)?;
    }
    Ok(HttpResponse::Ok().json(
        json!({"success": true, "statusCode": 200, "topic": topic.name, "schema": topic.schema}),
    ))
}

async fn health() -> HttpResponse {
    eventgate_core::http::liveness_response(SERVICE)
}

/// Ready when the broker answers a metadata request; 503 when it does not or a shutdown started.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let kafka =
        eventgate_core::http::check_dependency(READY_TIMEOUT, state.publisher.check_broker()).await;
    let report = HealthReport::ready(
        SERVICE,
        state.lifecycle.is_stopping(),
        [("kafka".to_owned(), kafka)],
    );
    eventgate_core::http::health_response(&report)
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics_response(&state.metrics.registry)
}
