//! HTTP handlers: extract → authenticate → authorise → plan (core query language) → fetch → respond.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use eventgate_core::catalogue::Topic;
use eventgate_core::error::{ApiError, ErrorKind};
use eventgate_core::gate::Gatekeeping;
use eventgate_core::health::HealthReport;
use eventgate_core::http::{metrics_response, read_body, TopicReader};
use eventgate_core::limits;
use eventgate_core::query::{self, CountMode, QueryRequest};

use crate::{db, AppState};

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
        .route("/stats/{topic}/tail", web::get().to(crate::tail::tail))
        .route("/", web::get().to(crate::explorer::page))
        .route("/explorer/{file}", web::get().to(crate::explorer::asset))
        .route(
            "/stats/{topic}/dead-letters",
            web::get().to(crate::dead_letters::list),
        )
        .route(
            "/stats/{topic}/events/{id}",
            web::get().to(crate::lookup::lookup),
        )
        .route(
            "/stats/{topic}/events/{id}/status",
            web::get().to(crate::status::status),
        )
        .configure(eventgate_core::http::configure_token);
}

/// Probes and metrics: on `stats.admin_listen` when it is set, else beside the API.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/health/live", web::get().to(health_live))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
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

/// A query as a JSON body.
#[utoipa::path(
    post,
    path = "/stats/{topic}",
    tag = "queries",
    summary = "Query a topic's events",
    description = "One page of the events the filters select, newest first unless sorted otherwise, \
        with a cursor for the next page. A reader with field restrictions sees only the events they \
        allow. Answers as soon as the rows arrive, up to `limit` events or `stats.max_page_bytes`.",
    params(("topic" = String, Path, description = "The topic's name.")),
    request_body(content = crate::openapi::StatsBody, content_type = "application/json",
                 description = "An empty body is `{}`: the first page of every event. EventGate's \
                    stats request (`timestamp_start`/`timestamp_end` at the top) is answered in \
                    EventGate's shape, one row per job."),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of events (EventGate's request: a page of jobs).",
         body = crate::openapi::StatsAnswer),
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
pub(crate) async fn post_query(
    reader: TopicReader,
    request: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let restrictions = reader.read_filters()?;
    let body = read_json_body(&state, payload).await?;
    // EventGate's own request (`timestamp_start`/`timestamp_end` at the top): its one row per job.
    if crate::compat::eventgate::is_eventgate_form(&body) {
        return crate::compat::eventgate::answer(&state, &reader, &restrictions, &body).await;
    }
    let mut query_request = QueryRequest::from_json(&body)?;
    let preferred = prefer_count(&request, &mut query_request);
    answer(&state, &reader, &query_request, &restrictions, preferred).await
}

/// The same query as query parameters.
#[utoipa::path(
    get,
    path = "/stats/{topic}",
    tag = "queries",
    summary = "Query a topic's events (GET form)",
    description = "The POST form's query as parameters: each filter is a parameter of its own. \
        the-eye's `timestamp_after` / `timestamp_before` are `_gte` / `_lte` of a time field.",
    params(
        ("topic" = String, Path, description = "The topic's name."),
        ("sort" = Option<String>, Query, description = "Comma-separated field names; `-` sorts \
            descending."),
        ("limit" = Option<u64>, Query, minimum = 1, description = "Events per page."),
        ("page_size" = Option<u64>, Query, minimum = 1, description = "`limit` under audit-log's name."),
        ("page" = Option<u64>, Query, minimum = 1, description = "The page number, from 1."),
        ("cursor" = Option<String>, Query, description = "The `pagination.cursor` of the previous page."),
        ("fields" = Option<String>, Query, description = "Comma-separated fields each event keeps."),
        ("count" = Option<crate::openapi::CountMode>, Query, description = "Also count the matches."),
        ("filters" = Option<std::collections::HashMap<String, String>>, Query, style = Form, explode,
         description = "Filters: `<field>=value` (equality) or `<field>_<operator>=value` \
            (`_in` and `_between` take comma-separated values); the fields: \
            `GET /stats/{topic}/fields`."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of events.", body = crate::openapi::QueryPage),
        (status = 400, response = eventgate_core::http::openapi::BadRequest),
        (status = 401, response = eventgate_core::http::openapi::Unauthorized),
        (status = 403, response = eventgate_core::http::openapi::Forbidden),
        (status = 404, response = eventgate_core::http::openapi::NotFound),
        (status = 429, response = eventgate_core::http::openapi::TooManyRequests),
        (status = 503, response = eventgate_core::http::openapi::Unavailable),
    ),
)]
pub(crate) async fn get_query(
    reader: TopicReader,
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let restrictions = reader.read_filters()?;
    let pairs = query_pairs(&request)?;
    let mut query_request = QueryRequest::from_query_pairs(&pairs, &reader.topic.fields)?;
    let preferred = prefer_count(&request, &mut query_request);
    answer(&state, &reader, &query_request, &restrictions, preferred).await
}

/// PostgREST's `Prefer: count=exact|planned|estimated` (RFC 7240), used when the request itself has no
/// `count`; an unknown preference or value is ignored, as the RFC asks. Returns the preference applied.
fn prefer_count(request: &HttpRequest, query: &mut QueryRequest) -> Option<CountMode> {
    if query.count.is_some() {
        return None;
    }
    let mode = request
        .headers()
        .get_all(actix_web::http::header::HeaderName::from_static("prefer"))
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|preference| {
            let (name, value) = preference.split_once('=')?;
            (name.trim().eq_ignore_ascii_case("count"))
                .then(|| CountMode::parse(value.trim().trim_matches('"')))
                .flatten()
        })
        .next()?;
    query.count = Some(mode);
    Some(mode)
}

/// Plans and runs a query, timed by topic and outcome.
async fn answer(
    state: &AppState,
    reader: &TopicReader,
    request: &QueryRequest,
    restrictions: &[query::Filter],
    preferred: Option<CountMode>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let result = run_query(state, reader, request, restrictions)
        .await
        .map(|mut response| {
            if let Some(mode) = preferred {
                if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&format!(
                    "count={}",
                    mode.as_str()
                )) {
                    response.headers_mut().insert(
                        actix_web::http::header::HeaderName::from_static("preference-applied"),
                        value,
                    );
                }
            }
            response
        });
    state
        .metrics
        .observe_query(&reader.topic.name, &result, started.elapsed());
    result
}

/// The answer is written as the rows arrive (payloads spliced as JSON text), until `limit` rows or
/// `stats.max_page_bytes`; a page the budget cut keeps `has_more` and a cursor after its last row.
async fn run_query(
    state: &AppState,
    reader: &TopicReader,
    request: &QueryRequest,
    restrictions: &[query::Filter],
) -> Result<HttpResponse, ApiError> {
    let topic: &Topic = &reader.topic;
    let selection = request
        .fields
        .as_deref()
        .map(|names| query::selection(names, &topic.fields, state.limits.max_selected_fields))
        .transpose();
    let plan = query::plan_restricted(
        &topic.name,
        request,
        &topic.fields,
        &state.limits,
        &state.cursor_key,
        restrictions,
    );
    // Every mistake at once: the fields' and the query's.
    let (selection, mut plan) = match (selection, plan) {
        (Ok(selection), Ok(plan)) => (selection, plan),
        (Err(mut a), Err(b)) => {
            a.details.extend(b.details);
            return Err(a);
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    state.field_usage.record(&topic.name, &plan);
    state.field_usage.mark_indexed(&topic.name, &mut plan);
    // Read before the page: the answer holds at least what the watermark says.
    let freshness = crate::freshness::current(state, &topic.name).await;
    // `page` (audit-log's offset paging) answers `total_records`: it needs the total.
    let count = request.count.or(request.page.map(|_| CountMode::Exact));
    let slot = state.slot(&reader.principal.user)?;
    let page = db::page::fetch_page(
        &state.pool,
        &topic.name,
        &plan,
        br#"{"success":true,"statusCode":200,"data":["#.to_vec(),
        state.answers.max_page_bytes,
        |out, index, event| {
            if index > 0 {
                out.push(b',');
            }
            event.write_json_as(out, selection.as_ref());
        },
    )
    .await
    .map_err(|e| state.store_error(e))?;
    let total = match count {
        Some(mode) => Some(
            db::count::total(&state.pool, &topic.name, &plan, mode)
                .await
                .map_err(|e| state.store_error(e))?,
        ),
        None => None,
    };
    drop(slot);
    if page.cut_by_bytes {
        state.metrics.limit_hit("page_bytes");
    }
    let cursor = match (page.has_more, &page.last) {
        (true, Some(last)) => Some(plan.next_cursor(last, &state.cursor_key)),
        _ => None,
    };
    let mut body = page.body;
    body.extend_from_slice(b"],\"pagination\":");
    let mut pagination = json!({"cursor": cursor, "has_more": page.has_more, "limit": plan.limit});
    if let Some(total) = total {
        pagination["total"] = json!(total.total);
        pagination["total_exact"] = json!(total.exact);
        if total.timed_out {
            pagination["total_timed_out"] = json!(true);
        }
    }
    write_json(&mut body, &pagination);
    if let (Some(page), Some(total)) = (request.page, total) {
        body.extend_from_slice(b",\"metadata\":");
        write_json(&mut body, &page_metadata(page, plan.limit, total.total));
    }
    body.extend_from_slice(b",\"freshness\":");
    write_json(
        &mut body,
        &crate::freshness::json_member(freshness.as_ref()),
    );
    body.push(b'}');
    let mut response = HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body);
    if let Some(freshness) = &freshness {
        freshness.apply(&mut response);
    }
    Ok(response)
}

/// The `metadata` of offset paging, in audit-log's terms: the page, its size, the first and last page
/// and the number of matching events (`total_records`).
fn page_metadata(page: u64, page_size: u32, total: u64) -> serde_json::Value {
    let size = u64::from(page_size.max(1));
    json!({
        "current_page": page,
        "page_size": page_size,
        "first_page": 1,
        "last_page": total.div_ceil(size).max(1),
        "total_records": total,
    })
}

/// Appends a small JSON value (writing into a `Vec` cannot fail).
pub(crate) fn write_json(out: &mut Vec<u8>, value: &serde_json::Value) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The fields a topic can be filtered and sorted by, with their types: what an analyst (or the explorer
/// page) needs to build a query.
#[utoipa::path(
    get,
    path = "/stats/{topic}/fields",
    tag = "topics",
    summary = "The fields of a topic",
    params(("topic" = String, Path, description = "The topic's name.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The fields, with their types.", body = crate::openapi::FieldList),
        (status = 401, response = eventgate_core::http::openapi::Unauthorized),
        (status = 403, response = eventgate_core::http::openapi::Forbidden),
        (status = 404, response = eventgate_core::http::openapi::NotFound),
        (status = 429, response = eventgate_core::http::openapi::TooManyRequests),
        (status = 503, response = eventgate_core::http::openapi::Unavailable),
    ),
)]
pub(crate) async fn fields(reader: TopicReader) -> Result<HttpResponse, ApiError> {
    let topic = &reader.topic;
    let fields: Vec<_> = topic
        .fields
        .fields()
        .map(|f| json!({"name": f.name, "type": f.ty.as_str()}))
        .collect();
    Ok(HttpResponse::Ok()
        .json(json!({"success": true, "statusCode": 200, "topic": topic.name, "fields": fields})))
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

/// Ready when the (replica) database answers `SELECT 1`; 503 when it does not or a shutdown started.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers.", body = eventgate_core::health::HealthReport),
        (status = 503, description = "The database does not answer, or a shutdown started.",
         body = eventgate_core::health::HealthReport),
    ),
)]
pub(crate) async fn ready(
    state: web::Data<AppState>,
    gate: web::Data<Gatekeeping>,
) -> HttpResponse {
    let postgres = eventgate_core::http::check_dependency(READY_TIMEOUT, async {
        db::ping(&state.pool).await.map_err(|e| e.to_string())
    })
    .await;
    let report = HealthReport::ready(
        SERVICE,
        state.lifecycle.is_stopping(),
        [("postgres".to_owned(), postgres)],
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
