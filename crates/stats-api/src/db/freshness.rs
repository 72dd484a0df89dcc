//! A topic's watermark (`topic_watermarks`, written by the writers in each batch's transaction): the
//! newest `received_at` stored and when the last batch of the topic was stored. One primary-key lookup.

use time::OffsetDateTime;
use tokio_postgres::types::Type;

use eventgate_core::db::PgPool;

use super::StoreError;

/// What the writers last recorded for a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// The newest `received_at` among the topic's stored events.
    pub newest_event_at: OffsetDateTime,
    /// When the last batch holding events of the topic was stored (the writer's clock, just before its
    /// commit).
    pub stored_at: OffsetDateTime,
}

const WATERMARK: &str =
    "SELECT newest_event_at, stored_at FROM topic_watermarks WHERE topic = $1::text";

/// The topic's watermark; `None` before its first stored batch.
pub async fn watermark(pool: &PgPool, topic: &str) -> Result<Option<Watermark>, StoreError> {
    let conn = pool.get().await?;
    let rows = conn.query_typed(WATERMARK, &[(&topic, Type::TEXT)]).await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let decode = |e: tokio_postgres::Error| StoreError::Decode(e.to_string());
    Ok(Some(Watermark {
        newest_event_at: row.try_get(0).map_err(decode)?,
        stored_at: row.try_get(1).map_err(decode)?,
    }))
}
