//! A page of events: the page query of [`super::query_sql::page_sql`], one row more than the page to
//! know whether another follows.

use eventgate_core::db::{EventRow, PgPool};
use eventgate_core::envelope::Event;
use eventgate_core::query::QueryPlan;

use super::query_sql::page_sql;
use super::StoreError;

/// One page of a query: `plan.limit` events at most, and whether more follow.
pub struct Page {
    pub events: Vec<Event>,
    pub has_more: bool,
}

pub async fn fetch_page(pool: &PgPool, topic: &str, plan: &QueryPlan) -> Result<Page, StoreError> {
    let rows = load_events(pool, &page_sql(topic, plan)).await?;
    let limit = plan.limit as usize;
    let has_more = rows.len() > limit;
    let events = rows.into_iter().take(limit).map(Event::from).collect();
    Ok(Page { events, has_more })
}

/// Runs a statement that selects [`EventRow::COLUMNS`] (the page query; tests run it directly).
pub async fn load_events(
    pool: &PgPool,
    parts: &super::SqlParts,
) -> Result<Vec<EventRow>, StoreError> {
    super::query(pool, parts)
        .await?
        .iter()
        .map(|row| EventRow::from_row(row).map_err(|e| StoreError::Decode(e.to_string())))
        .collect()
}
