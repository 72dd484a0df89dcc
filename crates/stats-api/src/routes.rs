//! HTTP handlers: extract → authenticate → authorise → plan (core query language) → fetch → respond.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use eventgate_core::access::Restrictions;
use eventgate_core::auth::Principal;
use eventgate_core::catalogue::Topic;
use eventgate_core::error::{ApiError, ErrorKind};
use eventgate_core::health::HealthReport;
use eventgate_core::http::{authorization, metrics_response, read_body};
use eventgate_core::limits;
use eventgate_core::query::{self, QueryRequest};

use crate::{store, AppState};

const SERVICE: &str = "stats-api";
/// A readiness probe answers within this even when the database hangs.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/stats/{topic}", web::post().to(post_query))
        .route("/stats/{topic}", web::get().to(get_query))
        .route("/stats/{topic}/fields", web::get().to(fields))
        .route("/stats", web::get().to(crate::explorer::topics))
        .route(
            "/stats/{topic}/aggregate",
            web::post().to(crate::aggregate::post_aggregate),
        )
        .route(
            "/stats/{topic}/export",
            web::get().to(crate::export::export),
        )
        .route("/", web::get().to(crate::explorer::page))
        .route("/explorer/{file}", web::get().to(crate::explorer::asset))
        .route(
            "/stats/{topic}/dead-letters",
            web::get().to(crate::dead_letters::list),
        )
        .route("/health", web::get().to(health))
        .route("/health/live", web::get().to(health))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

/// Token (401) → the user's query rate (429) → topic exists (404) → may read (403), the order of
/// writes. Returns the reader's restrictions too; only callers that show no events (the field list) may
/// ignore them.
fn authorize_read<'a>(
    request: &HttpRequest,
    state: &'a AppState,
    name: &str,
) -> Result<(Principal, &'a Topic, Restrictions), ApiError> {
    let principal = state.verifier.authenticate(authorization(request))?;
    state.rate_limits.check_query(&principal.user)?;
    let topic = state.catalogue.get(name).ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            format!("topic {name:?} does not exist"),
        )
        .with_field("topic")
    })?;
    eventgate_core::http::record_request_subject(&principal.user, &topic.name);
    let restrictions = state.access.authorize_read(&principal, &topic.name)?;
    Ok((principal, topic, restrictions))
}

/// [`authorize_read`] for routes that reveal no event, only the topic's shape.
pub(crate) fn readable_topic<'a>(
    request: &HttpRequest,
    state: &'a AppState,
    name: &str,
) -> Result<&'a Topic, ApiError> {
    authorize_read(request, state, name).map(|(_, topic, _)| topic)
}

/// [`authorize_read`] plus the reader's mandatory filters (empty when unrestricted): queries, aggregates
/// and exports AND them to whatever the reader asks, so no answer reveals an event the reader may not see.
pub(crate) fn readable_topic_restricted<'a>(
    request: &HttpRequest,
    state: &'a AppState,
    name: &str,
) -> Result<(&'a Topic, Vec<query::Filter>), ApiError> {
    let (principal, topic, restrictions) = authorize_read(request, state, name)?;
    let filters = restrictions.read_filters(&topic.fields, &principal.user, &topic.name)?;
    Ok((topic, filters))
}

/// [`authorize_read`] for a topic's dead letters: raw messages no field restriction can filter, so only
/// an unrestricted reader of the topic may see them (see `AccessRules::can_read_dead_letters`).
pub(crate) fn readable_dead_letters<'a>(
    request: &HttpRequest,
    state: &'a AppState,
    name: &str,
) -> Result<&'a Topic, ApiError> {
    let (principal, topic, restrictions) = authorize_read(request, state, name)?;
    if !restrictions.is_unrestricted() {
        return Err(ApiError::new(
            ErrorKind::Permission,
            format!(
                "user {:?} may read topic {:?} only in part, and dead letters cannot be filtered",
                principal.user, topic.name
            ),
        )
        .with_field("topic"));
    }
    Ok(topic)
}

/// A JSON request body within the query limits: size, time to send it, nesting. An empty body is `{}`.
pub(crate) async fn read_json_body(
    state: &AppState,
    payload: web::Payload,
) -> Result<serde_json::Value, ApiError> {
    let body_timeout = std::time::Duration::from_millis(state.request_limits.body_timeout_ms);
    let max_body = state.request_limits.query_max_body_bytes;
    let body = tokio::time::timeout(body_timeout, read_body(payload, max_body))
        .await
        .map_err(|_| limits::body_timeout(body_timeout))??;
    limits::check_json_depth(&body, state.request_limits.max_json_depth, false)?;
    let body = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(ErrorKind::Malformed, format!("body is not valid JSON: {e}"))
                .with_field("body")
        })?
    };
    Ok(body)
}

/// The query string as ordered key/value pairs (the GET form of queries and exports).
pub(crate) fn query_pairs(request: &HttpRequest) -> Result<Vec<(String, String)>, ApiError> {
    web::Query::<Vec<(String, String)>>::from_query(request.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| {
            ApiError::new(
                ErrorKind::Malformed,
                format!("query string is malformed: {e}"),
            )
        })
}

async fn post_query(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (topic, restrictions) = readable_topic_restricted(&request, &state, &path)?;
    let body = read_json_body(&state, payload).await?;
    let query_request = QueryRequest::from_json(&body)?;
    answer(&state, topic, &query_request, &restrictions).await
}

async fn get_query(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (topic, restrictions) = readable_topic_restricted(&request, &state, &path)?;
    let pairs = query_pairs(&request)?;
    let query_request = QueryRequest::from_query_pairs(&pairs, &topic.fields)?;
    answer(&state, topic, &query_request, &restrictions).await
}

/// Plans and runs a query, timed by topic and outcome.
async fn answer(
    state: &AppState,
    topic: &Topic,
    request: &QueryRequest,
    restrictions: &[query::Filter],
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let result = run_query(state, topic, request, restrictions).await;
    state
        .metrics
        .observe_query(&topic.name, &result, started.elapsed());
    result
}

async fn run_query(
    state: &AppState,
    topic: &Topic,
    request: &QueryRequest,
    restrictions: &[query::Filter],
) -> Result<HttpResponse, ApiError> {
    let plan = query::plan_restricted(
        &topic.name,
        request,
        &topic.fields,
        &state.limits,
        &state.cursor_key,
        restrictions,
    )?;
    let page = store::fetch_page(&state.pool, &topic.name, &plan).await?;
    let cursor = match (page.has_more, page.events.last()) {
        (true, Some(last)) => Some(plan.next_cursor(last, &state.cursor_key)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "statusCode": 200,
        "data": page.events,
        "pagination": {"cursor": cursor, "has_more": page.has_more, "limit": plan.limit},
    })))
}

/// The fields a topic can be filtered and sorted by, with their types: what an analyst (or the explorer
/// page) needs to build a query.
async fn fields(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let topic = readable_topic(&request, &state, &path)?;
    let fields: Vec<_> = topic
        .fields
        .fields()
        .map(|f| json!({"name": f.name, "type": f.ty.as_str()}))
        .collect();
    Ok(HttpResponse::Ok()
        .json(json!({"success": true, "statusCode": 200, "topic": topic.name, "fields": fields})))
}

async fn health() -> HttpResponse {
    eventgate_core::http::liveness_response(SERVICE)
}

/// Ready when the (replica) database answers `SELECT 1`; 503 when it does not or a shutdown started.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let postgres = eventgate_core::http::check_dependency(READY_TIMEOUT, async {
        use diesel_async::RunQueryDsl;
        let mut conn = state.pool.get().await.map_err(|e| e.to_string())?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let report = HealthReport::ready(
        SERVICE,
        state.lifecycle.is_stopping(),
        [("postgres".to_owned(), postgres)],
    );
    eventgate_core::http::health_response(&report)
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics_response(&state.metrics.registry)
}
