//! A page of a topic's dead letters, newest first, keyset by `(created_at, id)`.

use futures_util::{pin_mut, TryStreamExt};
use time::OffsetDateTime;
use tokio_postgres::types::{ToSql, Type};

use eventgate_core::db::PgPool;

use super::StoreError;

/// One row of `dead_letters`.
#[derive(Debug)]
pub struct DeadLetterRow {
    pub id: i64,
    pub topic: Option<String>,
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub raw: Option<Vec<u8>>,
    pub error: String,
    pub created_at: OffsetDateTime,
    /// Why it was parked: `undecodable`, `topic_mismatch`, `refused` or `conflicting_duplicate`.
    pub reason: String,
    /// `replayed` or `discarded` (`eventgate dead-letters`), with when and by whom; `None`: unresolved.
    pub resolution: Option<String>,
    pub resolved_at: Option<OffsetDateTime>,
    pub resolved_by: Option<String>,
}

impl DeadLetterRow {
    fn from_row(row: &tokio_postgres::Row) -> Result<DeadLetterRow, tokio_postgres::Error> {
        Ok(DeadLetterRow {
            id: row.try_get(0)?,
            topic: row.try_get(1)?,
            kafka_topic: row.try_get(2)?,
            kafka_partition: row.try_get(3)?,
            kafka_offset: row.try_get(4)?,
            raw: row.try_get(5)?,
            error: row.try_get(6)?,
            created_at: row.try_get(7)?,
            reason: row.try_get(8)?,
            resolution: row.try_get(9)?,
            resolved_at: row.try_get(10)?,
            resolved_by: row.try_get(11)?,
        })
    }
}

/// A page of dead letters, written.
pub struct DeadLetterPage {
    /// What the caller started with, then the rows as its writer wrote them.
    pub body: Vec<u8>,
    pub rows: usize,
    pub has_more: bool,
    /// The byte budget ended the page before `limit`.
    pub cut_by_bytes: bool,
    /// `(created_at, id)` of the last row written: where the next page starts.
    pub last: Option<(OffsetDateTime, i64)>,
}

/// The newest `limit` dead letters of `topic` (with one of `reasons`, when given; resolved or not, when
/// `resolved` is given) after
/// `(created_at, id)` (from the start when `None`),
/// each written after `body` by `write(body, index, row)` as it arrives, until the next row would take
/// `body` past `max_bytes` (the first row is always written: a raw message can be as large as a Kafka
/// message). Served by the index `(topic, created_at, id)` read backwards.
#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    pool: &PgPool,
    topic: &str,
    reasons: Option<&[String]>,
    resolved: Option<bool>,
    after: Option<(OffsetDateTime, i64)>,
    limit: i64,
    body: Vec<u8>,
    max_bytes: usize,
    mut write: impl FnMut(&mut Vec<u8>, usize, &DeadLetterRow),
) -> Result<DeadLetterPage, StoreError> {
    const FIRST_PAGE: &str =
        "SELECT id, topic, kafka_topic, kafka_partition, kafka_offset, raw, error, created_at, reason, \
                resolution, resolved_at, resolved_by \
         FROM dead_letters WHERE topic = $1 AND ($3::text[] IS NULL OR reason = ANY($3::text[])) \
         AND ($4::boolean IS NULL OR (resolution IS NOT NULL) = $4) \
         ORDER BY created_at DESC, id DESC LIMIT $2";
    const NEXT_PAGE: &str =
        "SELECT id, topic, kafka_topic, kafka_partition, kafka_offset, raw, error, created_at, reason, \
                resolution, resolved_at, resolved_by \
         FROM dead_letters WHERE topic = $1 AND ($3::text[] IS NULL OR reason = ANY($3::text[])) \
         AND ($4::boolean IS NULL OR (resolution IS NOT NULL) = $4) \
         AND (created_at, id) < ($5, $6) ORDER BY created_at DESC, id DESC LIMIT $2";
    let conn = pool.get().await?;
    // One row more than the page tells whether another page exists.
    let fetched = limit.saturating_add(1);
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
        (&topic, Type::TEXT),
        (&fetched, Type::INT8),
        (&reasons, Type::TEXT_ARRAY),
        (&resolved, Type::BOOL),
    ];
    let sql = match &after {
        None => FIRST_PAGE,
        Some((created_at, id)) => {
            params.push((created_at, Type::TIMESTAMPTZ));
            params.push((id, Type::INT8));
            NEXT_PAGE
        }
    };
    let stream = conn.query_typed_raw(sql, params).await?;
    pin_mut!(stream);
    let mut page = DeadLetterPage {
        body,
        rows: 0,
        has_more: false,
        cut_by_bytes: false,
        last: None,
    };
    while let Some(row) = stream.try_next().await? {
        if page.rows as i64 == limit {
            page.has_more = true;
            break;
        }
        let row = DeadLetterRow::from_row(&row).map_err(|e| StoreError::Decode(e.to_string()))?;
        let mark = page.body.len();
        write(&mut page.body, page.rows, &row);
        if page.rows > 0 && page.body.len() > max_bytes {
            page.body.truncate(mark);
            page.has_more = true;
            page.cut_by_bytes = true;
            break;
        }
        page.rows += 1;
        page.last = Some((row.created_at, row.id));
    }
    Ok(page)
}
