//! Writing a batch into Postgres: one statement per batch (`INSERT ... SELECT FROM unnest(...)`), in one
//! transaction with the batch's dead letters, idempotent by event id.
//!
//! Idempotence costs: `ON CONFLICT (id) DO NOTHING` makes Postgres probe the primary key and write a
//! speculative-insertion record for every row (≈ 8 % of the writer's rate against `COPY`, see
//! docs/PERFORMANCE.md). Almost every batch is new, so a batch is first written with a plain `INSERT`;
//! only when that meets an id already stored (a redelivery after a crash or a rebalance, a producer
//! retry) is the transaction rolled back and written again with `ON CONFLICT (id) DO NOTHING`. Both give
//! the same rows; the second only costs a round trip when there are duplicates.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{
    Array, BigInt, Bytea, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, QueryableByName)]
pub struct ParkedKey {
    #[diesel(sql_type = Text)]
    pub kafka_topic: String,
    #[diesel(sql_type = Integer)]
    pub kafka_partition: i32,
    #[diesel(sql_type = BigInt)]
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

/// The fast path: fails with a unique violation when an id is stored already (or twice in the batch).
const INSERT_NEW_EVENTS: &str = "INSERT INTO events (id, topic, received_at, producer, payload) \
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[])";

/// The replay path: skips the ids stored already.
const INSERT_EVENTS_SKIPPING_STORED: &str =
    "INSERT INTO events (id, topic, received_at, producer, payload) \
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[]) \
     ON CONFLICT (id) DO NOTHING";

const INSERT_DEAD_LETTERS: &str = "INSERT INTO dead_letters (topic, kafka_topic, kafka_partition, kafka_offset, raw, error) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bytea[], $6::text[]) \
     ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING \
     RETURNING kafka_topic, kafka_partition, kafka_offset";

/// Inserts events and dead letters in one transaction; events whose id is stored already are skipped.
pub async fn write_batch(
    conn: &mut AsyncPgConnection,
    events: &[&Event],
    dead_letters: &[DeadLetter],
) -> Result<Written, DieselError> {
    match write_batch_with(conn, events, dead_letters, INSERT_NEW_EVENTS).await {
        // Only the events' primary key is unique among what the fast path inserts without
        // `ON CONFLICT` (dead letters always skip what is parked already).
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            write_batch_with(conn, events, dead_letters, INSERT_EVENTS_SKIPPING_STORED).await
        }
        outcome => outcome,
    }
}

async fn write_batch_with(
    conn: &mut AsyncPgConnection,
    events: &[&Event],
    dead_letters: &[DeadLetter],
    insert_events: &'static str,
) -> Result<Written, DieselError> {
    conn.transaction(async |conn| {
        let mut written = Written::default();
        if !events.is_empty() {
            written.events = diesel::sql_query(insert_events)
                .bind::<Array<SqlUuid>, _>(events.iter().map(|e| e.id).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(events.iter().map(|e| e.topic.as_str()).collect::<Vec<_>>())
                .bind::<Array<Timestamptz>, _>(
                    events.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
                )
                .bind::<Array<Text>, _>(
                    events
                        .iter()
                        .map(|e| e.producer.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Jsonb>, _>(events.iter().map(|e| &e.payload).collect::<Vec<_>>())
                .execute(conn)
                .await?;
        }
        if !dead_letters.is_empty() {
            written.parked = diesel::sql_query(INSERT_DEAD_LETTERS)
                .bind::<Array<Nullable<Text>>, _>(
                    dead_letters
                        .iter()
                        .map(|d| d.topic.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Text>, _>(
                    dead_letters
                        .iter()
                        .map(|d| d.kafka_topic.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Integer>, _>(
                    dead_letters.iter().map(|d| d.partition).collect::<Vec<_>>(),
                )
                .bind::<Array<BigInt>, _>(dead_letters.iter().map(|d| d.offset).collect::<Vec<_>>())
                .bind::<Array<Nullable<Bytea>>, _>(
                    dead_letters
                        .iter()
                        .map(|d| d.raw.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Text>, _>(
                    dead_letters
                        .iter()
                        .map(|d| d.error.as_str())
                        .collect::<Vec<_>>(),
                )
                .load::<ParkedKey>(conn)
                .await?;
            written.dead_letters = written.parked.len();
        }
        Ok(written)
    })
    .await
}

/// Whether the database answers at all. After a failed write this tells a data problem (the database
/// is fine but refuses these rows: isolate the poison message) from an outage (keep the batch and retry).
pub async fn ping(conn: &mut AsyncPgConnection) -> bool {
    diesel::sql_query("SELECT 1").execute(conn).await.is_ok()
}
