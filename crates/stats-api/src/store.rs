//! Reading pages of events from the (read-only) database.

use diesel_async::RunQueryDsl;

use eventgate_core::envelope::Event;
use eventgate_core::error::{ApiError, ErrorKind};
use eventgate_core::query::QueryPlan;
use eventgate_core::schema::{EventRow, PgPool};

use crate::query_sql;

/// One page of a query: `plan.limit` events at most, and whether more follow.
pub struct Page {
    pub events: Vec<Event>,
    pub has_more: bool,
}

pub async fn fetch_page(pool: &PgPool, topic: &str, plan: &QueryPlan) -> Result<Page, ApiError> {
    let mut conn = pool.get().await.map_err(|error| {
        tracing::warn!(%error, "no database connection for a query");
        ApiError::new(
            ErrorKind::Database,
            "the event store is unavailable, retry later",
        )
    })?;
    // One row more than the page tells, exactly, whether another page exists.
    let rows: Vec<EventRow> = query_sql::page_query(topic, plan)
        .load(&mut conn)
        .await
        .map_err(database_error)?;
    let limit = plan.limit as usize;
    let has_more = rows.len() > limit;
    let events = rows.into_iter().take(limit).map(Event::from).collect();
    Ok(Page { events, has_more })
}

/// A statement timeout is the database protecting itself: 503 with Retry-After, like an outage. Any other
/// failure of a query we generated is our bug: 500, logged, with no SQL in the answer.
pub fn database_error(error: diesel::result::Error) -> ApiError {
    let text = error.to_string();
    if text.contains("statement timeout") {
        return ApiError::new(
            ErrorKind::Database,
            "the query took longer than the configured statement timeout; narrow it or retry later",
        );
    }
    if matches!(
        error,
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            _
        )
    ) {
        return ApiError::new(
            ErrorKind::Database,
            "the event store is unavailable, retry later",
        );
    }
    tracing::error!(error = %text, "query failed");
    ApiError::new(ErrorKind::Internal, "the query failed unexpectedly")
}
