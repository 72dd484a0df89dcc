//! What became of one producer's event: stored (when it was received), parked as dead letters (why,
//! when), or neither. Both statements are keyed by (topic, id, producer): the primary key of `events`
//! and the `dead_letters_topic_event_id_producer` index, so a status read costs two index probes.
//! Nothing of a payload or a raw message is read.

use time::OffsetDateTime;
use tokio_postgres::types::Type;

use eventgate_core::db::PgPool;

use super::StoreError;

/// A dead letter of the event: why and when it was parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub reason: String,
    pub parked_at: OffsetDateTime,
}

/// The event's traces in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStatus {
    /// `received_at` of the stored event (when the ingest-api accepted it).
    pub stored: Option<OffsetDateTime>,
    /// Its dead letters, oldest first (a later re-send with another payload is one).
    pub dead_letters: Vec<Parked>,
}

/// At most this many dead letters of one event are listed.
const MAX_PARKED: i64 = 20;

pub async fn event_status(
    pool: &PgPool,
    topic: &str,
    id: uuid::Uuid,
    producer: &str,
) -> Result<EventStatus, StoreError> {
    const STORED: &str =
        "SELECT received_at FROM events WHERE id = $1 AND topic = $2 AND producer = $3";
    const PARKED: &str = "SELECT reason, created_at FROM dead_letters \
         WHERE topic = $2 AND event_id = $1 AND producer = $3 ORDER BY created_at, id LIMIT $4";
    let conn = pool.get().await?;
    let key = [
        (
            &id as &(dyn tokio_postgres::types::ToSql + Sync),
            Type::UUID,
        ),
        (&topic, Type::TEXT),
        (&producer, Type::TEXT),
    ];
    let decode = |e: tokio_postgres::Error| StoreError::Decode(e.to_string());
    let stored = match conn.query_typed(STORED, &key).await?.first() {
        Some(row) => Some(row.try_get(0).map_err(decode)?),
        None => None,
    };
    let mut parked_params = key.to_vec();
    parked_params.push((&MAX_PARKED, Type::INT8));
    let dead_letters = conn
        .query_typed(PARKED, &parked_params)
        .await?
        .iter()
        .map(|row| {
            Ok(Parked {
                reason: row.try_get(0).map_err(decode)?,
                parked_at: row.try_get(1).map_err(decode)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(EventStatus {
        stored,
        dead_letters,
    })
}
