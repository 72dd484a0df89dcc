//! The batch insert: a batch's events in one statement (`INSERT ... SELECT FROM unnest(...)`, one array
//! per column: the cheapest way to send many rows in one round trip short of `COPY`), in one transaction
//! with the batch's dead letters.
//!
//! Ids stored already: the caller chooses ([`StoredIds`]). `ON CONFLICT (id) DO NOTHING` makes Postgres
//! probe the primary key and write a speculative-insertion record for every row (≈ 8 % of the writer's
//! rate against `COPY`, see docs/PERFORMANCE.md), so the writer tries the plain `INSERT` first and skips
//! stored ids only when that met one (`crate::write::store_batch`).

use time::OffsetDateTime;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use eventgate_core::db::DbError;
use eventgate_core::envelope::Event;

/// A message parked in `dead_letters` instead of `events`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: Option<String>,
    pub kafka_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub raw: Option<Vec<u8>>,
    pub error: String,
}

/// How many rows a write actually added (the rest were already there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    pub events: usize,
    pub dead_letters: usize,
    /// Kafka coordinates of the dead letters this write parked; a replayed poison message that was
    /// parked before is not among them, so it is not reported twice.
    pub parked: Vec<ParkedKey>,
}

/// Where a parked message came from: (Kafka topic, partition, offset), unique in `dead_letters`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParkedKey {
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

impl DeadLetter {
    pub fn key(&self) -> ParkedKey {
        ParkedKey {
            kafka_topic: self.kafka_topic.clone(),
            kafka_partition: self.partition,
            kafka_offset: self.offset,
        }
    }
}

/// What the events' insert does with an id stored already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredIds {
    /// A plain `INSERT`: an id stored already (or twice in the batch) fails the transaction with a
    /// unique violation. The common case, and the cheaper one.
    Refuse,
    /// `ON CONFLICT (id) DO NOTHING`: stored ids are skipped, their first content stays.
    Skip,
}

const INSERT_NEW_EVENTS: &str = "INSERT INTO events (id, topic, received_at, producer, payload) \
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[])";

const INSERT_EVENTS_SKIPPING_STORED: &str =
    "INSERT INTO events (id, topic, received_at, producer, payload) \
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[]) \
     ON CONFLICT (id) DO NOTHING";

/// Dead letters always skip what is parked already: a replayed poison message is parked, and reported,
/// once (`RETURNING` tells which ones are new).
const INSERT_DEAD_LETTERS: &str = "INSERT INTO dead_letters (topic, kafka_topic, kafka_partition, kafka_offset, raw, error) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bytea[], $6::text[]) \
     ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING \
     RETURNING kafka_topic, kafka_partition, kafka_offset";

/// Inserts events and dead letters in one transaction. Statements go with their parameter types
/// (`*_typed`): one round trip each, no statement to prepare first.
pub async fn insert_batch(
    conn: &mut Client,
    events: &[&Event],
    dead_letters: &[DeadLetter],
    stored_ids: StoredIds,
) -> Result<Written, DbError> {
    let transaction = conn.transaction().await?;
    let mut written = Written::default();
    if !events.is_empty() {
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
        let received_at: Vec<OffsetDateTime> = events.iter().map(|e| e.timestamp).collect();
        let producers: Vec<&str> = events.iter().map(|e| e.producer.as_str()).collect();
        let payloads: Vec<&serde_json::Value> = events.iter().map(|e| &e.payload).collect();
        let statement = match stored_ids {
            StoredIds::Refuse => INSERT_NEW_EVENTS,
            StoredIds::Skip => INSERT_EVENTS_SKIPPING_STORED,
        };
        let inserted = transaction
            .execute_typed(
                statement,
                &[
                    (&ids, Type::UUID_ARRAY),
                    (&topics, Type::TEXT_ARRAY),
                    (&received_at, Type::TIMESTAMPTZ_ARRAY),
                    (&producers, Type::TEXT_ARRAY),
                    (&payloads, Type::JSONB_ARRAY),
                ],
            )
            .await?;
        written.events = usize::try_from(inserted).unwrap_or(usize::MAX);
    }
    if !dead_letters.is_empty() {
        let topics: Vec<Option<&str>> = dead_letters.iter().map(|d| d.topic.as_deref()).collect();
        let kafka_topics: Vec<&str> = dead_letters
            .iter()
            .map(|d| d.kafka_topic.as_str())
            .collect();
        let partitions: Vec<i32> = dead_letters.iter().map(|d| d.partition).collect();
        let offsets: Vec<i64> = dead_letters.iter().map(|d| d.offset).collect();
        let raw: Vec<Option<&[u8]>> = dead_letters.iter().map(|d| d.raw.as_deref()).collect();
        let errors: Vec<&str> = dead_letters.iter().map(|d| d.error.as_str()).collect();
        let rows = transaction
            .query_typed(
                INSERT_DEAD_LETTERS,
                &[
                    (&topics, Type::TEXT_ARRAY),
                    (&kafka_topics, Type::TEXT_ARRAY),
                    (&partitions, Type::INT4_ARRAY),
                    (&offsets, Type::INT8_ARRAY),
                    (&raw, Type::BYTEA_ARRAY),
                    (&errors, Type::TEXT_ARRAY),
                ],
            )
            .await?;
        written.parked = rows
            .iter()
            .map(|row| {
                Ok(ParkedKey {
                    kafka_topic: row.try_get(0)?,
                    kafka_partition: row.try_get(1)?,
                    kafka_offset: row.try_get(2)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?;
        written.dead_letters = written.parked.len();
    }
    transaction.commit().await?;
    Ok(written)
}
