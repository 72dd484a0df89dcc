//! A page of events: the page query of [`super::query_sql::page_sql`], read row by row as Postgres sends
//! it and written out at once, until `plan.limit` rows or the byte budget, whichever comes first (one
//! row more tells whether another page follows). Payloads stay JSON text ([`crate::raw_json`]): the
//! memory of a page is its answer's bytes plus one row, whatever the events hold.

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::{FromSql, Type};

use eventgate_core::db::{EventRow, PgPool};
use eventgate_core::envelope::Event;
use eventgate_core::query::QueryPlan;

use super::query_sql::page_sql;
use super::StoreError;
use crate::raw_json::RawEvent;

/// One page, written.
pub struct Page {
    /// What the caller started with, then the rows as its writer wrote them, in the query's order.
    pub body: Vec<u8>,
    pub rows: usize,
    /// More rows follow (beyond `limit`, or beyond the byte budget).
    pub has_more: bool,
    /// The byte budget ended the page before `limit`.
    pub cut_by_bytes: bool,
    /// The last row written, its payload reduced to the sort keys: where the next page starts.
    pub last: Option<Event>,
}

/// Runs the page query of `plan` and writes each row after `body` with `write(body, index, event)` until
/// `plan.limit` rows are written or the next one would take `body` past `max_bytes` (the first row is
/// always written, so a page makes progress whatever the size of one event). Rows after the page are not
/// read: dropping the stream leaves the connection to discard them.
pub async fn fetch_page(
    pool: &PgPool,
    topic: &str,
    plan: &QueryPlan,
    body: Vec<u8>,
    max_bytes: usize,
    mut write: impl FnMut(&mut Vec<u8>, usize, &RawEvent),
) -> Result<Page, StoreError> {
    let parts = page_sql(topic, plan);
    let conn = pool.get().await?;
    let rows = conn.query_typed_raw(&parts.sql, parts.params()).await?;
    pin_mut!(rows);
    let limit = plan.limit as usize;
    let mut page = Page {
        body,
        rows: 0,
        has_more: false,
        cut_by_bytes: false,
        last: None,
    };
    let mut last_row = None;
    while let Some(row) = rows.try_next().await? {
        if page.rows == limit {
            page.has_more = true;
            break;
        }
        let mark = page.body.len();
        write(&mut page.body, page.rows, &raw_event(&row)?);
        if page.rows > 0 && page.body.len() > max_bytes {
            page.body.truncate(mark);
            page.has_more = true;
            page.cut_by_bytes = true;
            break;
        }
        page.rows += 1;
        last_row = Some(row);
    }
    if let Some(row) = last_row {
        page.last = Some(raw_event(&row)?.sort_key_event(plan));
    }
    Ok(page)
}

/// Runs the page query of `plan` (at most `plan.limit + 1` events) and hands each row to `on_event`
/// until it breaks; returns how many rows it was handed. For answers whose rows are not events (the
/// EventGate form's one row per job, `crate::compat::eventgate`): the caller does its own cutting.
pub async fn stream_page(
    pool: &PgPool,
    topic: &str,
    plan: &QueryPlan,
    mut on_event: impl FnMut(&RawEvent) -> std::ops::ControlFlow<()>,
) -> Result<usize, StoreError> {
    let parts = page_sql(topic, plan);
    let conn = pool.get().await?;
    let rows = conn.query_typed_raw(&parts.sql, parts.params()).await?;
    pin_mut!(rows);
    let mut seen = 0;
    while let Some(row) = rows.try_next().await? {
        seen += 1;
        if on_event(&raw_event(&row)?).is_break() {
            break;
        }
    }
    Ok(seen)
}

/// A row of the page query (`id, topic, received_at, producer, payload, …`), the payload as text; the
/// schema version by its column's name (the tail's rows hold other columns after the payload).
pub(crate) fn raw_event(row: &tokio_postgres::Row) -> Result<RawEvent<'_>, StoreError> {
    let decode = |e: tokio_postgres::Error| StoreError::Decode(e.to_string());
    Ok(RawEvent {
        id: row.try_get(0).map_err(decode)?,
        topic: row.try_get(1).map_err(decode)?,
        received_at: row.try_get(2).map_err(decode)?,
        producer: row.try_get(3).map_err(decode)?,
        payload: row.try_get::<_, JsonText>(4).map_err(decode)?.0,
        schema_version: row.try_get("schema_version").map_err(decode)?,
    })
}

/// A `jsonb` (or `json`) value as its text, borrowed from the row: `jsonb`'s binary form is a version
/// byte (1) and the text. Never parsed here.
struct JsonText<'a>(&'a str);

impl<'a> FromSql<'a> for JsonText<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = if *ty == Type::JSONB {
            match raw.split_first() {
                Some((1, text)) => text,
                _ => return Err("unsupported jsonb version".into()),
            }
        } else {
            raw
        };
        Ok(JsonText(std::str::from_utf8(text)?))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSONB | Type::JSON | Type::TEXT)
    }
}

/// Runs a statement that selects [`EventRow::COLUMNS`] and loads every row as a tree (the tests compare
/// them with the in-memory reference).
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
