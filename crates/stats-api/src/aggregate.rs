//! `POST /stats/{topic}/aggregate`: the gate (401, 429, 404, 403, restrictions) → plan
//! (`eventgate_core::query::aggregate`, 400) → time zone known to the database (400) → one SQL statement
//! (`db::aggregate`) → groups, totals.

use actix_web::{web, HttpResponse};

use eventgate_core::error::{ApiError, ErrorDetail};
use eventgate_core::http::TopicReader;
use eventgate_core::query::aggregate::{plan_aggregate, AggregateLimits, AggregateRequest};
use eventgate_core::query::value::shorten;

use crate::db;
use crate::AppState;

#[utoipa::path(
    post,
    path = "/stats/{topic}/aggregate",
    tag = "aggregates",
    summary = "Count and summarise a topic's events",
    description = "Groups by fields and/or time buckets, with metrics, in one statement; the same \
        filters, read rules and limits as queries (503 beyond the statement timeout).",
    params(("topic" = String, Path, description = "The topic's name.")),
    request_body(content = crate::openapi::AggregateBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The groups, and the totals over all of them.",
         body = crate::openapi::AggregateAnswer),
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
pub(crate) async fn post_aggregate(
    reader: TopicReader,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let restrictions = reader.read_filters()?;
    let topic = &reader.topic;
    let started = std::time::Instant::now();
    let result = async {
        // The same bounds as a query body: size, time to send it, nesting.
        let body = crate::routes::read_json_body(&state, payload).await?;
        let aggregate_request = AggregateRequest::from_json(&body)?;
        let mut plan = plan_aggregate(
            &topic.name,
            &aggregate_request,
            &topic.fields,
            &state.limits,
            &AggregateLimits::default(),
            &restrictions,
        )?;
        let freshness = crate::freshness::current(&state, &topic.name).await;
        let slot = state.slot(&reader.principal.user)?;
        if let Some(bucketing) = plan.interval.as_mut() {
            bucketing.time_zone = resolve_time_zone(&state, &bucketing.time_zone).await?;
        }
        let (result, cut) = db::aggregate::fetch_aggregate(
            &state.pool,
            &topic.name,
            &plan,
            state.answers.max_page_bytes,
        )
        .await
        .map_err(|e| state.store_error(e))?;
        drop(slot);
        if cut {
            state.metrics.limit_hit("page_bytes");
        }
        // Core writes the answer's members; the HTTP envelope is this service's.
        let mut answer = serde_json::Map::new();
        answer.insert("success".to_owned(), true.into());
        answer.insert("statusCode".to_owned(), 200.into());
        answer.extend(plan.to_json(&result));
        answer.insert(
            "freshness".to_owned(),
            crate::freshness::json_member(freshness.as_ref()),
        );
        let mut response = HttpResponse::Ok().json(answer);
        if let Some(freshness) = &freshness {
            freshness.apply(&mut response);
        }
        Ok(response)
    }
    .await;
    state
        .metrics
        .observe_query(&topic.name, &result, started.elapsed());
    result
}

/// The database's spelling of a time zone name (matched case-insensitively), or a 400. Only names from
/// `pg_timezone_names` pass: no abbreviations, no POSIX strings (whose sign is the opposite of ISO's).
async fn resolve_time_zone(state: &AppState, name: &str) -> Result<String, ApiError> {
    if name == "UTC" {
        return Ok(name.to_owned());
    }
    db::aggregate::time_zone_spelling(&state.pool, name)
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or_else(|| {
            ErrorDetail::validation(
                "interval.time_zone",
                format!(
                    "unknown time zone `{}`; use an IANA name such as Europe/Berlin, America/New_York or UTC",
                    shorten(name, 64)
                ),
            )
            .into()
        })
}
