//! A page of a topic's dead letters, newest first, keyset by `(created_at, id)`.

use time::OffsetDateTime;

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
        })
    }
}

/// The newest `limit` dead letters of `topic` after `(created_at, id)` (from the start when `None`).
/// Served by the index `(topic, created_at, id)` read backwards.
pub async fn fetch(
    pool: &PgPool,
    topic: &str,
    after: Option<(OffsetDateTime, i64)>,
    limit: i64,
) -> Result<Vec<DeadLetterRow>, StoreError> {
    const FIRST_PAGE: &str =
        "SELECT id, topic, kafka_topic, kafka_partition, kafka_offset, raw, error, created_at \
         FROM dead_letters WHERE topic = $1 ORDER BY created_at DESC, id DESC LIMIT $2";
    const NEXT_PAGE: &str =
        "SELECT id, topic, kafka_topic, kafka_partition, kafka_offset, raw, error, created_at \
         FROM dead_letters WHERE topic = $1 AND (created_at, id) < ($3, $4) \
         ORDER BY created_at DESC, id DESC LIMIT $2";
    let conn = pool.get().await?;
    let rows = match after {
        None => conn.query(FIRST_PAGE, &[&topic, &limit]).await?,
        Some((created_at, id)) => {
            conn.query(NEXT_PAGE, &[&topic, &limit, &created_at, &id])
                .await?
        }
    };
    rows.iter()
        .map(|row| DeadLetterRow::from_row(row).map_err(|e| StoreError::Decode(e.to_string())))
        .collect()
}
