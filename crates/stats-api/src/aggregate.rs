//! `POST /stats/{topic}/aggregate`: token (401) → topic (404) → may read (403, restrictions) → plan
//! (`eventgate_core::query::aggregate`, 400) → time zone known to the database (400) → one SQL statement
//! (`aggregate_sql`) → groups, totals.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use diesel_async::RunQueryDsl;
use tokio::sync::OnceCell;

use eventgate_core::error::{ApiError, ErrorDetail, ErrorKind};
use eventgate_core::query::aggregate::{
    plan_aggregate, AggregateLimits, AggregatePlan, AggregateRequest, AggregateResult,
};
use eventgate_core::query::value::shorten;
use eventgate_core::schema::PgPool;

use crate::aggregate_sql::{aggregate_query, decode, AggregateRow};
use crate::routes::readable_topic_restricted;
use crate::store::database_error;
use crate::AppState;

pub(crate) async fn post_aggregate(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (topic, restrictions) = readable_topic_restricted(&request, &state, &path)?;
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
        if let Some(bucketing) = plan.interval.as_mut() {
            bucketing.time_zone = resolve_time_zone(&state.pool, &bucketing.time_zone).await?;
        }
        let result = fetch_aggregate(&state.pool, &topic.name, &plan).await?;
        Ok(HttpResponse::Ok().json(plan.to_json(&result)))
    }
    .await;
    state
        .metrics
        .observe_query(&topic.name, &result, started.elapsed());
    result
}

/// No pooled connection: the store is unreachable (503).
pub(crate) fn no_connection<E: std::fmt::Display>(error: E) -> ApiError {
    tracing::warn!(%error, "no database connection");
    ApiError::new(
        ErrorKind::Database,
        "the event store is unavailable, retry later",
    )
}

/// Runs the plan's statement (bounded by the pool's statement timeout, like queries).
pub async fn fetch_aggregate(
    pool: &PgPool,
    topic: &str,
    plan: &AggregatePlan,
) -> Result<AggregateResult, ApiError> {
    let query = aggregate_query(topic, plan).map_err(|reason| {
        tracing::error!(reason, "aggregate cannot be translated");
        ApiError::new(ErrorKind::Internal, "the aggregate failed unexpectedly")
    })?;
    let mut conn = pool.get().await.map_err(no_connection)?;
    let rows: Vec<AggregateRow> = query.load(&mut conn).await.map_err(database_error)?;
    decode(plan, rows).map_err(|reason| {
        tracing::error!(%reason, "aggregate rows do not decode");
        ApiError::new(ErrorKind::Internal, "the aggregate failed unexpectedly")
    })
}

/// The database's time zone names, lower-cased, to their own spelling. The names are those of the
/// server's tz database (what `date_trunc` will interpret), the same on every connection: loaded once per
/// process, on first use; a failed load is retried by the next request.
static TIME_ZONES: OnceCell<HashMap<String, String>> = OnceCell::const_new();

/// The database's spelling of a time zone name (matched case-insensitively), or a 400. Only names from
/// `pg_timezone_names` pass: no abbreviations, no POSIX strings (whose sign is the opposite of ISO's).
pub async fn resolve_time_zone(pool: &PgPool, name: &str) -> Result<String, ApiError> {
    if name == "UTC" {
        return Ok(name.to_owned());
    }
    let zones = TIME_ZONES
        .get_or_try_init(|| async {
            #[derive(diesel::QueryableByName)]
            struct Zone {
                #[diesel(sql_type = diesel::sql_types::Text)]
                name: String,
            }
            let mut conn = pool.get().await.map_err(no_connection)?;
            let zones: Vec<Zone> = diesel::sql_query("SELECT name FROM pg_timezone_names")
                .load(&mut conn)
                .await
                .map_err(database_error)?;
            Ok::<_, ApiError>(
                zones
                    .into_iter()
                    .map(|z| (z.name.to_ascii_lowercase(), z.name))
                    .collect(),
            )
        })
        .await?;
    zones
        .get(&name.to_ascii_lowercase())
        .cloned()
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
