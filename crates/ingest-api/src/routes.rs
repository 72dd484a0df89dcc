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
        .route("/topics/{topic}", web::post().to(post_events))
        // EventGate's way to obtain a token: a redirect to the configured provider.
        .configure(eventgate_core::http::configure_token);
}

/// Probes and metrics: on `ingest.admin_listen` when it is set, else beside the API.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/health/live", web::get().to(health_live))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

/// The gate (401 → 429 → 404 → 403) is the `TopicWriter` extractor.
#[utoipa::path(
    post,
    path = "/topics/{topic}",
    tag = "events",
    summary = "Send one event or a batch",
    description = "Each event is validated against the topic's JSON Schema (`GET /topics/{topic}`) and \
        published to Kafka; `202` only after the broker acknowledged every event. In a batch, a refused \
        event refuses only itself (`207`). Checks in order: token (401), the user's write rate (429), \
        the topic (404), the right to write it (403), the body (413, 408, 400). An event is validated \
        against the version of the topic's schema it names (its member `$schema`: `N`, `\"N\"` or \
        `\"<topic>/N\"`, removed from the stored event), else the one the `Eventgate-Schema-Version` \
        header names, else the latest; the version is stored with the event.",
    params(
        ("topic" = String, Path, description = "The topic's name."),
        ("Eventgate-Schema-Version" = Option<u32>, Header, description = "The version of the \
            topic's schema every event of the request was written for (an event's own `$schema` \
            overrides it); the latest when absent. A version the topic does not have is a 400 naming \
            this header and listing the versions."),
    ),
    request_body(content = crate::openapi::Events, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Every event was acknowledged by the broker.",
         body = crate::openapi::Accepted),
        (status = 207, description = "Some events were acknowledged, others were refused or not \
            acknowledged (each event's outcome in `results`; `Retry-After` when one may be retried).",
         body = crate::openapi::MultiStatus),
        (status = 400, response = eventgate_core::http::openapi::BadRequest),
        (status = 401, response = eventgate_core::http::openapi::Unauthorized),
        (status = 403, response = eventgate_core::http::openapi::Forbidden),
        (status = 404, response = eventgate_core::http::openapi::NotFound),
        (status = 408, response = eventgate_core::http::openapi::RequestTimeout),
        (status = 413, response = eventgate_core::http::openapi::PayloadTooLarge),
        (status = 429, response = eventgate_core::http::openapi::TooManyRequests),
        (status = 503, response = eventgate_core::http::openapi::Unavailable),
    ),
)]
pub(crate) async fn post_events(
    request: HttpRequest,
    writer: TopicWriter,
    gate: web::Data<Gatekeeping>,
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
    // Checked before the body is parsed: a version the topic does not have refuses the whole request.
    let requested = request
        .headers()
        .get(eventgate_core::catalogue::SCHEMA_VERSION_HEADER)
        .map(|value| ingest::header_version(topic, value.as_bytes()))
        .transpose()?;
    let mut prepared = ingest::prepare_versioned(
        &body,
        topic,
        &principal.user,
        &state.rules,
        OffsetDateTime::now_utc(),
        requested,
    )?;
    // Writes are counted in events: the gate took the first, the rest of a batch is taken here, all or
    // none (429 before anything is published).
    gate.rate_limits
        .check_write_rest(&principal.user, prepared.outcomes.len())?;
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
#[utoipa::path(
    get,
    path = "/topics",
    tag = "topics",
    summary = "The topics the token may write or read",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Their names.", body = crate::openapi::TopicList),
        (status = 401, response = eventgate_core::http::openapi::Unauthorized),
        (status = 503, response = eventgate_core::http::openapi::Unavailable),
    ),
)]
pub(crate) async fn list_topics(
    request: HttpRequest,
    gate: web::Data<Gatekeeping>,
) -> Result<HttpResponse, ApiError> {
    let principal = gate.verifier.authenticate(authorization(&request))?;
    let rules = gate.access.rules();
    let catalogue = gate.catalogue.current();
    let names: Vec<&str> = catalogue
        .names()
        .filter(|name| {
            rules.write_access(&principal, name).is_some()
                || rules.read_access(&principal, name).is_some()
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"success": true, "statusCode": 200, "topics": names})))
}

/// A topic's schema, for those who may write or read it: 401 → 404 → 403.
#[utoipa::path(
    get,
    path = "/topics/{topic}",
    tag = "topics",
    summary = "A topic's JSON Schema",
    description = "The schema every event sent to the topic must satisfy, for a token that may write \
        or read the topic.",
    params(("topic" = String, Path, description = "The topic's name.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The topic and its schema.", body = crate::openapi::TopicSchema),
        (status = 401, response = eventgate_core::http::openapi::Unauthorized),
        (status = 403, response = eventgate_core::http::openapi::Forbidden),
        (status = 404, response = eventgate_core::http::openapi::NotFound),
        (status = 503, response = eventgate_core::http::openapi::Unavailable),
    ),
)]
pub(crate) async fn get_topic(
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

/// Liveness: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "The process serves HTTP.",
               body = eventgate_core::health::HealthReport)),
)]
pub(crate) async fn health() -> HttpResponse {
    eventgate_core::http::liveness_response(SERVICE)
}

/// Liveness, under the name orchestrators use.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    responses((status = 200, description = "The process serves HTTP.",
               body = eventgate_core::health::HealthReport)),
)]
pub(crate) async fn health_live() -> HttpResponse {
    health().await
}

/// Ready when the broker answers a metadata request; 503 when it does not or a shutdown started.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "The broker answers.", body = eventgate_core::health::HealthReport),
        (status = 503, description = "The broker does not answer, or a shutdown started.",
         body = eventgate_core::health::HealthReport),
    ),
)]
pub(crate) async fn ready(
    state: web::Data<AppState>,
    gate: web::Data<Gatekeeping>,
) -> HttpResponse {
    let kafka =
        eventgate_core::http::check_dependency(READY_TIMEOUT, state.publisher.check_broker()).await;
    let report = HealthReport::ready(
        SERVICE,
        state.lifecycle.is_stopping(),
        [("kafka".to_owned(), kafka)],
    )
    .with_warnings(gate.catalogue.reload_warning());
    eventgate_core::http::health_response(&report)
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "The metrics, in Prometheus' text format.",
               content_type = "text/plain", body = String)),
)]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics_response(&state.metrics.registry)
}
