//! Every statement of `eventgate dead-letters`, on one connection as the schema owner (the only role
//! that may resolve a dead letter: migration `2025-03-10-000000_dead_letter_resolution`).

use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Row, Transaction};

use eventgate_core::db::{Cause, DbError};

use crate::error::Failure;

/// One row of `dead_letters`, as the command line shows and replays it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetterRow {
    pub id: i64,
    pub topic: Option<String>,
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    /// The message value as the writer read it (absent when the message had none).
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
    pub reason: String,
    pub error: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub event_id: Option<uuid::Uuid>,
    pub producer: Option<String>,
    pub resolution: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    pub resolved_by: Option<String>,
    pub resolution_note: Option<String>,
}

const COLUMNS: &str = "id, topic, kafka_topic, kafka_partition, kafka_offset, raw, reason, error, \
     created_at, event_id, producer, resolution, resolved_at, resolved_by, resolution_note";

impl DeadLetterRow {
    fn from_row(row: &Row) -> Result<DeadLetterRow, tokio_postgres::Error> {
        Ok(DeadLetterRow {
            id: row.try_get(0)?,
            topic: row.try_get(1)?,
            kafka_topic: row.try_get(2)?,
            kafka_partition: row.try_get(3)?,
            kafka_offset: row.try_get(4)?,
            raw: row.try_get(5)?,
            reason: row.try_get(6)?,
            error: row.try_get(7)?,
            created_at: row.try_get(8)?,
            event_id: row.try_get(9)?,
            producer: row.try_get(10)?,
            resolution: row.try_get(11)?,
            resolved_at: row.try_get(12)?,
            resolved_by: row.try_get(13)?,
            resolution_note: row.try_get(14)?,
        })
    }
}

/// Which dead letters a listing shows.
#[derive(Debug, Clone)]
pub struct Listing<'a> {
    pub topic: Option<&'a str>,
    /// Resolved ones too (else only those waiting for a decision).
    pub all: bool,
    pub limit: i64,
}

/// Opens the connection; a failure says which setting to look at.
pub async fn connect(database_url: &str) -> Result<Client, Failure> {
    eventgate_core::db::tls::connect(database_url)
        .await
        .map_err(|e| failure(e, "connecting to the database"))
}

/// Newest first, at most `limit`.
pub async fn list(client: &Client, listing: &Listing<'_>) -> Result<Vec<DeadLetterRow>, Failure> {
    let sql = format!(
        "SELECT {COLUMNS} FROM dead_letters \
         WHERE ($1::text IS NULL OR topic = $1) AND ($2 OR resolution IS NULL) \
         ORDER BY created_at DESC, id DESC LIMIT $3"
    );
    let rows = client
        .query_typed(
            &sql,
            &[
                (&listing.topic, Type::TEXT),
                (&listing.all, Type::BOOL),
                (&listing.limit, Type::INT8),
            ],
        )
        .await
        .map_err(|e| failure(e.into(), "listing dead letters"))?;
    rows.iter()
        .map(DeadLetterRow::from_row)
        .collect::<Result<_, _>>()
        .map_err(|e| failure(e.into(), "reading dead letters"))
}

pub async fn get(client: &Client, id: i64) -> Result<Option<DeadLetterRow>, Failure> {
    let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1");
    let row = client
        .query_opt(&sql, &[&id])
        .await
        .map_err(|e| failure(e.into(), "reading the dead letter"))?;
    row.as_ref()
        .map(DeadLetterRow::from_row)
        .transpose()
        .map_err(|e| failure(e.into(), "reading the dead letter"))
}

/// The ids of a topic's unresolved dead letters, oldest first (the order they were parked in).
pub async fn unresolved_ids(client: &Client, topic: &str) -> Result<Vec<i64>, Failure> {
    let rows = client
        .query(
            "SELECT id FROM dead_letters WHERE topic = $1 AND resolution IS NULL \
             ORDER BY created_at, id",
            &[&topic],
        )
        .await
        .map_err(|e| failure(e.into(), "listing the topic's unresolved dead letters"))?;
    rows.iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(|e| failure(e.into(), "reading dead letter ids"))
}

/// Starts the transaction a replay runs in.
pub async fn begin(client: &mut Client) -> Result<Transaction<'_>, Failure> {
    client
        .transaction()
        .await
        .map_err(|e| failure(e.into(), "starting a transaction"))
}

/// The dead letter, locked until the transaction ends: two operators replaying it at once take turns,
/// and the second finds it replayed.
pub async fn lock(
    transaction: &Transaction<'_>,
    id: i64,
) -> Result<Option<DeadLetterRow>, Failure> {
    let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE");
    let row = transaction
        .query_opt(&sql, &[&id])
        .await
        .map_err(|e| failure(e.into(), "locking the dead letter"))?;
    row.as_ref()
        .map(DeadLetterRow::from_row)
        .transpose()
        .map_err(|e| failure(e.into(), "reading the dead letter"))
}

/// Records a replay (a forced one overwrites the earlier resolution); returns when.
pub async fn mark_replayed(
    transaction: &Transaction<'_>,
    id: i64,
    by: &str,
    note: &str,
) -> Result<OffsetDateTime, Failure> {
    let row = transaction
        .query_one(
            "UPDATE dead_letters SET resolution = 'replayed', resolved_at = now(), \
             resolved_by = $2, resolution_note = $3 WHERE id = $1 RETURNING resolved_at",
            &[&id, &by, &note],
        )
        .await
        .map_err(|e| failure(e.into(), "recording the replay"))?;
    row.try_get(0)
        .map_err(|e| failure(e.into(), "recording the replay"))
}

/// Marks the unresolved ones of `ids` discarded; returns the ids it marked.
pub async fn discard(
    client: &Client,
    ids: &[i64],
    by: &str,
    reason: Option<&str>,
) -> Result<Vec<i64>, Failure> {
    let rows = client
        .query(
            "UPDATE dead_letters SET resolution = 'discarded', resolved_at = now(), \
             resolved_by = $2, resolution_note = $3 \
             WHERE id = ANY($1) AND resolution IS NULL RETURNING id",
            &[&ids, &by, &reason],
        )
        .await
        .map_err(|e| failure(e.into(), "discarding"))?;
    rows.iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(|e| failure(e.into(), "reading discarded ids"))
}

/// A database failure as the command's failure: an outage is exit 3, a missing right says which URL
/// to use, a database without the resolution columns says to migrate it.
pub fn failure(error: DbError, doing: &str) -> Failure {
    // The server's message or the connection's cause ("Connection refused") is in the source chain.
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    let code = match &error {
        DbError::Statement(e) => e.code().cloned(),
        _ => None,
    };
    match code {
        Some(code) if code == SqlState::INSUFFICIENT_PRIVILEGE => Failure::Auth(format!(
            "{doing}: {text}: this role may not resolve dead letters; use the schema owner's URL \
             (--database-url or EVENTGATE_WRITER__MIGRATION_DATABASE_URL), as for `eventgate migrate`"
        )),
        Some(code) if code == SqlState::UNDEFINED_COLUMN => Failure::Usage(format!(
            "{doing}: {text}: the database lacks the dead letters' resolution columns; run \
             `eventgate migrate` first"
        )),
        _ if matches!(error, DbError::Tls(_)) => Failure::Usage(format!("{doing}: {text}")),
        _ => match error.cause() {
            Cause::Unavailable | Cause::Timeout | Cause::Conflict => {
                Failure::Unreachable(format!("{doing}: {text}"))
            }
            _ => Failure::Usage(format!("{doing}: {text}")),
        },
    }
}
