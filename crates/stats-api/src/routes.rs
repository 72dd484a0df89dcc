//! HTTP handlers: extract → authenticate → authorise → plan (core query language) → fetch → respond.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use eventgate_core::catalogue::Topic;
use eventgate_core::error::{ApiError, ErrorKind};
use eventgate_core::http::{authorization, metrics_response};
use eventgate_core::query::{self, QueryRequest};

use crate::{store, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/stats/{topic}", web::post().to(post_query))
        .route("/stats/{topic}", web::get().to(get_query))
        .route("/stats/{topic}/fields", web::get().to(fields))
        .route("/health", web::get().to(health))
        .route("/health/live", web::get().to(health))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

/// Token (401) → topic exists (404) → may read (403), the same order as writes.
fn readable_topic<'a>(
    request: &HttpRequest,
    state: &'a AppState,
    name: &str,
) -> Result<&'a Topic, ApiError> {
    let principal = state.verifier.authenticate(authorization(request))?;
    let topic = state.catalogue.get(name).ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            format!("topic {name:?} does not exist"),
        )
        .with_field("topic")
    })?;
    if !state.access.can_read(&principal.user, &topic.name) {
        return Err(ApiError::new(
            ErrorKind::Permission,
            format!(
                "user {:?} may not read topic {:?}",
                principal.user, topic.name
            ),
        )
        .with_field("topic"));
    }
    Ok(topic)
}

async fn post_query(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let topic = readable_topic(&request, &state, &path)?;
    let body: serde_json::Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(ErrorKind::Malformed, format!("body is not valid JSON: {e}"))
                .with_field("body")
        })?
    };
    let query_request = QueryRequest::from_json(&body)?;
    answer(&state, topic, &query_request).await
}

async fn get_query(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let topic = readable_topic(&request, &state, &path)?;
    let pairs: Vec<(String, String)> =
        web::Query::<Vec<(String, String)>>::from_query(request.query_string())
            .map_err(|e| {
                ApiError::new(
                    ErrorKind::Malformed,
                    format!("query string is malformed: {e}"),
                )
            })?
            .into_inner();
    let query_request = QueryRequest::from_query_pairs(&pairs, &topic.fields)?;
    answer(&state, topic, &query_request).await
}

async fn answer(
    state: &AppState,
    topic: &Topic,
    request: &QueryRequest,
) -> Result<HttpResponse, ApiError> {
    let plan = query::plan(
        &topic.name,
        request,
        &topic.fields,
        &state.limits,
        &state.cursor_key,
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
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let database = match state.pool.get().await {
        Ok(mut conn) => {
            use diesel_async::RunQueryDsl;
            diesel::sql_query("SELECT 1")
                .execute(&mut conn)
                .await
                .is_ok()
        }
        Err(_) => false,
    };
    let body = json!({"status": if database { "ok" } else { "degraded" }, "dependencies": {"postgres": if database { "ok" } else { "unreachable" }}});
    if database {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics_response(&state.registry)
}
