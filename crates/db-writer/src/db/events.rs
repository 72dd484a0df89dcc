//! The batch insert: a batch's events in one statement (`INSERT ... SELECT FROM unnest(...)`, one array
//! per column: the cheapest way to send many rows in one round trip short of `COPY`), in one transaction
//! with the batch's dead letters. Payloads go as the JSON text they arrived in (binary `jsonb` is a
//! version byte and that text): no `serde_json::Value` is built or serialised on the way.
//!
//! An event is stored once per (id, topic, producer) (migration
//! `2025-02-01-000000_idempotency_per_producer`): another producer's id, or the same id on another
//! topic, never suppresses an event. `events` is partitioned by time and topic (migration
//! `2025-04-01-000000_partitioned_events`), so the key is unique within each partition; an event near a
//! partition's boundary is first looked up in its neighbour within the idempotency window
//! ([`IdempotencyWindow`]). Keys stored already: the caller chooses ([`StoredIds`]).
//! `ON CONFLICT ... DO NOTHING` makes Postgres probe the key and write a speculative-insertion record for
//! every row (≈ 8 % of the writer's rate against `COPY`, see docs/PERFORMANCE.md), so the writer tries
//! the plain `INSERT` first and skips stored keys only when that met one (`crate::write::store_batch`).
//! Only that second path looks at what was skipped: a skipped event whose payload differs from the
//! stored one is a *conflicting duplicate* (the producer re-sent an id with other content), parked as a
//! dead letter in the same transaction. A Kafka redelivery carries the same payload and is no conflict;
//! `received_at` is not compared (every HTTP retry has its own), nor is `schema_version` (the same
//! payload re-sent naming another version that accepts it is the same event).

use std::collections::{BTreeMap, HashSet};

use time::OffsetDateTime;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, Transaction};

use eventgate_core::db::DbError;
use eventgate_core::retention::Period;

use crate::envelope::Envelope;
pub use crate::envelope::KafkaCoordinates as ParkedKey;

/// Why a message is parked: the `reason` column of `dead_letters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Not an event envelope (not JSON, a field missing or malformed, no payload).
    Undecodable,
    /// An envelope naming another topic than the Kafka topic it was read from.
    TopicMismatch,
    /// The database refused the event (a constraint, a NUL character, a value too large).
    Refused,
    /// The producer re-sent an id it had used on the topic, with a different payload; the first stays.
    ConflictingDuplicate,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Undecodable => "undecodable",
            DeadLetterReason::TopicMismatch => "topic_mismatch",
            DeadLetterReason::Refused => "refused",
            DeadLetterReason::ConflictingDuplicate => "conflicting_duplicate",
        }
    }
}

/// A message parked in `dead_letters` instead of `events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub topic: Option<String>,
    pub kafka_topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The message value as read from Kafka.
    pub raw: Option<Vec<u8>>,
    pub reason: DeadLetterReason,
    pub error: String,
    /// The event's id and producer when the message was this topic's event (refused, conflicting
    /// duplicates): the stats-api's status of an event finds its dead letters by them.
    pub event: Option<(uuid::Uuid, String)>,
}

/// How many rows a write actually added (the rest were already there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    pub events: usize,
    pub dead_letters: usize,
    /// Kafka coordinates of the dead letters this write parked; a replayed poison message that was
    /// parked before is not among them, so it is not reported twice.
    pub parked: Vec<ParkedKey>,
    /// The conflicting duplicates this write parked (also among `parked`): a redelivered one that was
    /// parked before is not among them, so it is counted once.
    pub conflicts: Vec<DeadLetter>,
}

impl DeadLetter {
    pub fn key(&self) -> ParkedKey {
        ParkedKey {
            kafka_topic: self.kafka_topic.clone(),
            kafka_partition: self.partition,
            kafka_offset: self.offset,
        }
    }

    /// An event parked for `reason`, with its message as read.
    pub fn of_event(event: &Envelope, reason: DeadLetterReason, error: String) -> DeadLetter {
        DeadLetter {
            topic: Some(event.topic.clone()),
            kafka_topic: event.origin.kafka_topic.clone(),
            partition: event.origin.kafka_partition,
            offset: event.origin.kafka_offset,
            raw: Some(event.raw().to_vec()),
            reason,
            error: format!("{}: {error}", reason.as_str()),
            event: Some((event.id, event.producer.clone())),
        }
    }
}

/// What the events' insert does with a key stored already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredIds {
    /// A plain `INSERT`: a key stored already (or twice in the batch) fails the transaction with a
    /// unique violation. The common case, and the cheaper one.
    Refuse,
    /// `ON CONFLICT ... DO NOTHING`: stored keys are skipped, their first content stays; the skipped
    /// ones with other content are parked as conflicting duplicates.
    Skip,
}

const INSERT_NEW_EVENTS: &str =
    "INSERT INTO events (id, topic, received_at, producer, payload, schema_version) \
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[], \
     $6::int2[])";

/// `RETURNING` names the rows inserted; every other row of the batch was skipped.
const INSERT_EVENTS_SKIPPING_STORED: &str =
    "INSERT INTO events (id, topic, received_at, producer, payload, schema_version) \
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[], \
     $6::int2[]) \
     ON CONFLICT DO NOTHING \
     RETURNING id, topic, producer";

/// Which of the batch's events (by their index `$6`) are stored already in a partition near their own:
/// the lookup of [`IdempotencyWindow`]. `ON CONFLICT` above sees the unique key of the event's own
/// partition only (`events` is partitioned; a unique key across partitions would have to include
/// `received_at`, which every HTTP retry has anew).
/// `$7` and `$8` bound all the ranges: constants the planner prunes the partitions by, so the lookup
/// plans the few spans around the batch, not the whole history.
const STORED_NEARBY: &str = "SELECT n.i FROM unnest($1::uuid[], $2::text[], $3::text[], \
     $4::timestamptz[], $5::timestamptz[], $6::int[]) AS n (id, topic, producer, lo, hi, i) \
     WHERE EXISTS (SELECT FROM events e WHERE e.id = n.id AND e.topic = n.topic \
       AND e.producer = n.producer AND e.received_at >= n.lo AND e.received_at <= n.hi \
       AND e.received_at >= $7::timestamptz AND e.received_at <= $8::timestamptz)";

/// Which of the skipped rows (by their index `$5`) hold another payload than the stored event with
/// their key. A statement of its own, after the insert: under READ COMMITTED it sees what the insert
/// waited for (another writer's row committed meanwhile) and this transaction's own rows (the same key
/// twice in the batch). `jsonb` equality: key order, spaces and the spelling of numbers do not count.
const CONFLICTING_PAYLOADS: &str = "SELECT n.i FROM unnest($1::uuid[], $2::text[], $3::text[], \
     $4::jsonb[], $5::int[]) AS n (id, topic, producer, payload, i) \
     JOIN events e ON e.id = n.id AND e.topic = n.topic AND e.producer = n.producer \
     WHERE e.payload <> n.payload";

/// Dead letters always skip what is parked already: a replayed poison message is parked, and reported,
/// once (`RETURNING` tells which ones are new).
const INSERT_DEAD_LETTERS: &str = "INSERT INTO dead_letters (topic, kafka_topic, kafka_partition, kafka_offset, raw, reason, error, event_id, producer) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bytea[], $6::text[], $7::text[], $8::uuid[], $9::text[]) \
     ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING \
     RETURNING kafka_topic, kafka_partition, kafka_offset";

/// The batch's commit, per topic, in the batch's transaction (one statement, whatever the number of
/// rows): the rollups (`event_counts`: the events this transaction inserted, per topic and minute of
/// `received_at`; migration `2025-04-05-000000_event_counts`), the topic's watermark (newest `received_at` stored, when), a row of the commit log a live tail
/// follows (this transaction's id, which is also the `xmin` of its rows, and the received-at range that
/// finds them; migration `2025-03-01-000000_topic_watermarks`), and a `NOTIFY eventgate_events` with the
/// topic, delivered to listening stats-apis when the transaction commits. Watermarks are upserted in
/// topic order ($1 is sorted), so two writers' batches lock them in the same order and never deadlock.
const RECORD_COMMIT: &str = "WITH batch AS ( \
       SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::int[]) \
       AS b (topic, oldest, newest, events)), \
     marks AS ( \
       INSERT INTO topic_watermarks AS w (topic, newest_event_at, stored_at) \
       SELECT topic, newest, clock_timestamp() FROM batch ORDER BY topic \
       ON CONFLICT (topic) DO UPDATE SET \
         newest_event_at = GREATEST(w.newest_event_at, EXCLUDED.newest_event_at), \
         stored_at = GREATEST(w.stored_at, EXCLUDED.stored_at)), \
     commits AS ( \
       INSERT INTO event_commits (topic, xact_id, oldest_received_at, newest_received_at, events) \
       SELECT topic, pg_current_xact_id()::text::bigint, oldest, newest, events FROM batch), \
     counts AS ( \
       INSERT INTO event_counts (topic, minute, xact_id, events) \
       SELECT topic, minute, pg_current_xact_id()::text::bigint, events \
       FROM unnest($5::text[], $6::timestamptz[], $7::bigint[]) AS c (topic, minute, events)) \
     SELECT count(pg_notify('eventgate_events', topic)) FROM batch";

/// The channel of [`RECORD_COMMIT`]'s notifications (the payload is the topic).
pub const COMMIT_CHANNEL: &str = "eventgate_events";

/// The commit log's rows older than `retention_ms` (at most 10,000 per call, so one call is short).
const PRUNE_COMMITS: &str = "DELETE FROM event_commits WHERE ctid = ANY(ARRAY( \
       SELECT ctid FROM event_commits \
       WHERE committed_at < clock_timestamp() - $1::bigint * interval '1 millisecond' LIMIT 10000))";

/// JSON text sent as a `jsonb` parameter: binary `jsonb` is a version byte (1) and the text, which
/// Postgres parses as it would parse the text of a `serde_json::Value`.
#[derive(Debug)]
struct JsonbText<'a>(&'a [u8]);

impl ToSql for JsonbText<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&[1]);
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    tokio_postgres::types::to_sql_checked!();
}

/// How far apart in time a producer's retry of an event may reach a writer and still be recognised
/// (`storage.idempotency_window_ms`). Within one partition (a span of `storage.partition_span`) the
/// partition's unique key recognises it whatever the time between. An event within the window of its
/// span's start or end may have its first copy in the neighbouring span: it is looked up there first
/// (one statement for the batch's few such events; none when the window is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyWindow {
    pub window: time::Duration,
    /// `storage.partition_span`, the length of the spans ([`Period::start_of`] says where they start).
    pub span: Period,
}

impl Default for IdempotencyWindow {
    fn default() -> Self {
        IdempotencyWindow::of(&eventgate_core::config::StorageConfig::default())
    }
}

impl IdempotencyWindow {
    pub fn of(storage: &eventgate_core::config::StorageConfig) -> IdempotencyWindow {
        IdempotencyWindow {
            window: time::Duration::milliseconds(
                i64::try_from(storage.idempotency_window_ms).unwrap_or(i64::MAX / 2),
            ),
            span: storage.partition_span,
        }
    }

    /// The time range to look an event up in, when it lies within the window of a span boundary.
    fn lookup_range(&self, at: OffsetDateTime) -> Option<(OffsetDateTime, OffsetDateTime)> {
        if self.window <= time::Duration::ZERO {
            return None;
        }
        // In whole seconds, as `received_at` is compared with the span's bounds.
        let since_start =
            time::Duration::seconds(at.unix_timestamp() - self.span.start_of(at).unix_timestamp());
        let to_end = self.span.duration() - since_start;
        let near = since_start < self.window || to_end <= self.window;
        near.then(|| (at - self.window, at + self.window))
    }
}

/// The indexes of the events whose key is stored already near them (see [`IdempotencyWindow`]).
async fn stored_nearby(
    transaction: &Transaction<'_>,
    events: &[&Envelope],
    window: &IdempotencyWindow,
) -> Result<Vec<usize>, DbError> {
    let near: Vec<(usize, (OffsetDateTime, OffsetDateTime))> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| window.lookup_range(e.received_at).map(|range| (i, range)))
        .collect();
    if near.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<uuid::Uuid> = near.iter().map(|(i, _)| events[*i].id).collect();
    let topics: Vec<&str> = near
        .iter()
        .map(|(i, _)| events[*i].topic.as_str())
        .collect();
    let producers: Vec<&str> = near
        .iter()
        .map(|(i, _)| events[*i].producer.as_str())
        .collect();
    let lows: Vec<OffsetDateTime> = near.iter().map(|(_, r)| r.0).collect();
    let highs: Vec<OffsetDateTime> = near.iter().map(|(_, r)| r.1).collect();
    let indexes: Vec<i32> = near
        .iter()
        .map(|(i, _)| i32::try_from(*i).unwrap_or(i32::MAX))
        .collect();
    let (Some(lowest), Some(highest)) = (lows.iter().min().copied(), highs.iter().max().copied())
    else {
        return Ok(Vec::new());
    };
    let rows = transaction
        .query_typed(
            STORED_NEARBY,
            &[
                (&ids, Type::UUID_ARRAY),
                (&topics, Type::TEXT_ARRAY),
                (&producers, Type::TEXT_ARRAY),
                (&lows, Type::TIMESTAMPTZ_ARRAY),
                (&highs, Type::TIMESTAMPTZ_ARRAY),
                (&indexes, Type::INT4_ARRAY),
                (&lowest, Type::TIMESTAMPTZ),
                (&highest, Type::TIMESTAMPTZ),
            ],
        )
        .await?;
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        let index: i32 = row.try_get(0)?;
        if let Ok(index) = usize::try_from(index) {
            found.push(index);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Inserts events and dead letters in one transaction. Statements go with their parameter types
/// (`*_typed`): one round trip each, no statement to prepare first.
pub async fn insert_batch(
    conn: &mut Client,
    events: &[&Envelope],
    dead_letters: &[DeadLetter],
    stored_ids: StoredIds,
    window: &IdempotencyWindow,
) -> Result<Written, DbError> {
    let transaction = conn.transaction().await?;
    let mut written = Written::default();
    // Retries whose first copy is in a neighbouring partition: not inserted again, and parked as
    // conflicting duplicates when their payload differs.
    let nearby = stored_nearby(&transaction, events, window).await?;
    let mut conflicts: Vec<DeadLetter> = conflicting(&transaction, events, &nearby).await?;
    let fresh: Vec<&Envelope>;
    let events: &[&Envelope] = if nearby.is_empty() {
        events
    } else {
        fresh = events
            .iter()
            .enumerate()
            .filter(|(i, _)| nearby.binary_search(i).is_err())
            .map(|(_, e)| *e)
            .collect();
        &fresh
    };
    // The events this transaction adds (all of them, unless stored keys are skipped): the rollups count
    // these and no others.
    let mut inserted: Vec<&Envelope> = Vec::new();
    if !events.is_empty() {
        inserted = events.to_vec();
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
        let received_at: Vec<OffsetDateTime> = events.iter().map(|e| e.received_at).collect();
        let producers: Vec<&str> = events.iter().map(|e| e.producer.as_str()).collect();
        let payloads: Vec<JsonbText<'_>> =
            events.iter().map(|e| JsonbText(e.payload_json())).collect();
        let versions: Vec<i16> = events.iter().map(|e| e.schema_version).collect();
        let params: [(&(dyn ToSql + Sync), Type); 6] = [
            (&ids, Type::UUID_ARRAY),
            (&topics, Type::TEXT_ARRAY),
            (&received_at, Type::TIMESTAMPTZ_ARRAY),
            (&producers, Type::TEXT_ARRAY),
            (&payloads, Type::JSONB_ARRAY),
            (&versions, Type::INT2_ARRAY),
        ];
        match stored_ids {
            StoredIds::Refuse => {
                let inserted = transaction
                    .execute_typed(INSERT_NEW_EVENTS, &params)
                    .await?;
                written.events = usize::try_from(inserted).unwrap_or(usize::MAX);
            }
            StoredIds::Skip => {
                let rows = transaction
                    .query_typed(INSERT_EVENTS_SKIPPING_STORED, &params)
                    .await?;
                written.events = rows.len();
                let skipped = skipped_rows(events, &rows)?;
                conflicts.extend(conflicting(&transaction, events, &skipped).await?);
                inserted = events
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| skipped.binary_search(i).is_err())
                    .map(|(_, e)| *e)
                    .collect();
            }
        }
    }
    let parking: Vec<&DeadLetter> = dead_letters.iter().chain(conflicts.iter()).collect();
    if !parking.is_empty() {
        let topics: Vec<Option<&str>> = parking.iter().map(|d| d.topic.as_deref()).collect();
        let kafka_topics: Vec<&str> = parking.iter().map(|d| d.kafka_topic.as_str()).collect();
        let partitions: Vec<i32> = parking.iter().map(|d| d.partition).collect();
        let offsets: Vec<i64> = parking.iter().map(|d| d.offset).collect();
        let raw: Vec<Option<&[u8]>> = parking.iter().map(|d| d.raw.as_deref()).collect();
        let reasons: Vec<&str> = parking.iter().map(|d| d.reason.as_str()).collect();
        let errors: Vec<&str> = parking.iter().map(|d| d.error.as_str()).collect();
        let event_ids: Vec<Option<uuid::Uuid>> = parking
            .iter()
            .map(|d| d.event.as_ref().map(|e| e.0))
            .collect();
        let producers: Vec<Option<&str>> = parking
            .iter()
            .map(|d| d.event.as_ref().map(|e| e.1.as_str()))
            .collect();
        let rows = transaction
            .query_typed(
                INSERT_DEAD_LETTERS,
                &[
                    (&topics, Type::TEXT_ARRAY),
                    (&kafka_topics, Type::TEXT_ARRAY),
                    (&partitions, Type::INT4_ARRAY),
                    (&offsets, Type::INT8_ARRAY),
                    (&raw, Type::BYTEA_ARRAY),
                    (&reasons, Type::TEXT_ARRAY),
                    (&errors, Type::TEXT_ARRAY),
                    (&event_ids, Type::UUID_ARRAY),
                    (&producers, Type::TEXT_ARRAY),
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
        let parked: HashSet<&ParkedKey> = written.parked.iter().collect();
        conflicts.retain(|dead| parked.contains(&dead.key()));
        written.conflicts = conflicts;
    }
    // Last, so the watermark rows are locked only for the commit itself (a topic's batches from two
    // writers queue here, not for their whole insert).
    if !events.is_empty() {
        record_commit(&transaction, events, &inserted).await?;
    }
    transaction.commit().await?;
    Ok(written)
}

/// Runs [`RECORD_COMMIT`] for the batch's topics: per topic its oldest and newest `received_at` and its
/// number of events, sorted by topic; and per topic and minute the number of `inserted` events.
async fn record_commit(
    transaction: &Transaction<'_>,
    events: &[&Envelope],
    inserted: &[&Envelope],
) -> Result<(), DbError> {
    let mut per_topic: BTreeMap<&str, (OffsetDateTime, OffsetDateTime, i32)> = BTreeMap::new();
    for event in events {
        let entry = per_topic.entry(event.topic.as_str()).or_insert((
            event.received_at,
            event.received_at,
            0,
        ));
        entry.0 = entry.0.min(event.received_at);
        entry.1 = entry.1.max(event.received_at);
        entry.2 = entry.2.saturating_add(1);
    }
    let topics: Vec<&str> = per_topic.keys().copied().collect();
    let oldest: Vec<OffsetDateTime> = per_topic.values().map(|v| v.0).collect();
    let newest: Vec<OffsetDateTime> = per_topic.values().map(|v| v.1).collect();
    let counts: Vec<i32> = per_topic.values().map(|v| v.2).collect();
    let per_minute = count_per_minute(inserted);
    let minute_topics: Vec<&str> = per_minute.keys().map(|k| k.0).collect();
    let minutes: Vec<OffsetDateTime> = per_minute.keys().map(|k| k.1).collect();
    let minute_counts: Vec<i64> = per_minute.values().copied().collect();
    transaction
        .query_typed(
            RECORD_COMMIT,
            &[
                (&topics, Type::TEXT_ARRAY),
                (&oldest, Type::TIMESTAMPTZ_ARRAY),
                (&newest, Type::TIMESTAMPTZ_ARRAY),
                (&counts, Type::INT4_ARRAY),
                (&minute_topics, Type::TEXT_ARRAY),
                (&minutes, Type::TIMESTAMPTZ_ARRAY),
                (&minute_counts, Type::INT8_ARRAY),
            ],
        )
        .await?;
    Ok(())
}

/// The events per topic and minute of `received_at` (the minute's start, UTC, as
/// `date_trunc('minute', received_at, 'UTC')` computes it).
fn count_per_minute<'a>(events: &[&'a Envelope]) -> BTreeMap<(&'a str, OffsetDateTime), i64> {
    let mut per_minute = BTreeMap::new();
    for event in events {
        let seconds = event.received_at.unix_timestamp();
        let minute = OffsetDateTime::from_unix_timestamp(seconds - seconds.rem_euclid(60))
            .unwrap_or(event.received_at);
        *per_minute
            .entry((event.topic.as_str(), minute))
            .or_insert(0) += 1;
    }
    per_minute
}

/// Deletes commit-log rows older than `retention_ms` (a batch of them); returns how many went.
pub async fn prune_commit_log(conn: &Client, retention_ms: u64) -> Result<u64, DbError> {
    let retention = i64::try_from(retention_ms).unwrap_or(i64::MAX);
    Ok(conn
        .execute_typed(PRUNE_COMMITS, &[(&retention, Type::INT8)])
        .await?)
}

/// The indexes of the batch's rows the insert skipped, given the keys it `RETURNING`ed: a key inserted
/// is its first row in the batch (rows go in in order); every other row with that key, and every row of
/// a key not returned, was skipped.
fn skipped_rows(
    events: &[&Envelope],
    inserted: &[tokio_postgres::Row],
) -> Result<Vec<usize>, tokio_postgres::Error> {
    let mut keys: HashSet<(uuid::Uuid, &str, &str)> = HashSet::with_capacity(inserted.len());
    for row in inserted {
        keys.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
    }
    Ok(events
        .iter()
        .enumerate()
        .filter(|(_, e)| !keys.remove(&(e.id, e.topic.as_str(), e.producer.as_str())))
        .map(|(i, _)| i)
        .collect())
}

/// The skipped rows whose payload differs from the stored event's, as dead letters.
async fn conflicting(
    transaction: &Transaction<'_>,
    events: &[&Envelope],
    skipped: &[usize],
) -> Result<Vec<DeadLetter>, DbError> {
    if skipped.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<uuid::Uuid> = skipped.iter().map(|&i| events[i].id).collect();
    let topics: Vec<&str> = skipped.iter().map(|&i| events[i].topic.as_str()).collect();
    let producers: Vec<&str> = skipped
        .iter()
        .map(|&i| events[i].producer.as_str())
        .collect();
    let payloads: Vec<JsonbText<'_>> = skipped
        .iter()
        .map(|&i| JsonbText(events[i].payload_json()))
        .collect();
    let indexes: Vec<i32> = skipped
        .iter()
        .map(|&i| i32::try_from(i).unwrap_or(i32::MAX))
        .collect();
    let rows = transaction
        .query_typed(
            CONFLICTING_PAYLOADS,
            &[
                (&ids, Type::UUID_ARRAY),
                (&topics, Type::TEXT_ARRAY),
                (&producers, Type::TEXT_ARRAY),
                (&payloads, Type::JSONB_ARRAY),
                (&indexes, Type::INT4_ARRAY),
            ],
        )
        .await?;
    let mut conflicts = Vec::with_capacity(rows.len());
    for row in rows {
        let index: i32 = row.try_get(0)?;
        let Some(event) = usize::try_from(index).ok().and_then(|i| events.get(i)) else {
            continue;
        };
        conflicts.push(DeadLetter::of_event(
            event,
            DeadLetterReason::ConflictingDuplicate,
            format!(
                "event id {} was stored before for this topic and producer with another payload; \
                 the first payload stays",
                event.id
            ),
        ));
    }
    Ok(conflicts)
}
