//! The diesel definition of every table, written to match `migrations/` (the test
//! `crates/core/tests/db.rs` compares them with the migrated database's catalogue, column by
//! column, so a migration that changes a table fails until this file follows).

diesel::table! {
    /// The event history: one row per accepted event, keyed by (id, topic, producer) in each of its
    /// partitions (`events` is partitioned by time and topic: `crate::db::partitions`); the writer
    /// looks the key up across neighbouring partitions within `storage.idempotency_window_ms`.
    events (id, topic, producer) {
        id -> Uuid,
        topic -> Text,
        received_at -> Timestamptz,
        producer -> Text,
        payload -> Jsonb,
        /// The version of the topic's schema the event was validated against (1 for events stored
        /// before versions were recorded).
        schema_version -> SmallInt,
    }
}

diesel::table! {
    /// Messages a writer can never store, parked with their raw bytes and Kafka coordinates.
    dead_letters (id) {
        id -> BigInt,
        topic -> Nullable<Text>,
        kafka_topic -> Text,
        kafka_partition -> Integer,
        kafka_offset -> BigInt,
        raw -> Nullable<Bytea>,
        error -> Text,
        created_at -> Timestamptz,
        /// `undecodable`, `topic_mismatch`, `refused` or `conflicting_duplicate`.
        reason -> Text,
        /// The event's id and producer when the message was one (`refused`, `conflicting_duplicate`).
        event_id -> Nullable<Uuid>,
        producer -> Nullable<Text>,
        /// `replayed` or `discarded` (`eventgate dead-letters`); NULL while unresolved.
        resolution -> Nullable<Text>,
        resolved_at -> Nullable<Timestamptz>,
        resolved_by -> Nullable<Text>,
        /// Why it was discarded, or where its replay went.
        resolution_note -> Nullable<Text>,
    }
}

diesel::table! {
    /// Every start of a writer process (crash-loop detection).
    writer_runs (id) {
        id -> BigInt,
        group_id -> Text,
        instance -> Text,
        started_at -> Timestamptz,
        last_seen -> Timestamptz,
        stopped_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Alert state shared by the writers of a group.
    alert_state (group_id, kind) {
        group_id -> Text,
        kind -> Text,
        active -> Bool,
        since -> Nullable<Timestamptz>,
        last_alert -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Per topic: the newest `received_at` stored and when the last batch of it was stored (freshness).
    topic_watermarks (topic) {
        topic -> Text,
        newest_event_at -> Timestamptz,
        stored_at -> Timestamptz,
    }
}

diesel::table! {
    /// The commit log a live tail follows: one row per batch transaction and topic.
    event_commits (topic, xact_id) {
        topic -> Text,
        /// The batch transaction's `pg_current_xact_id()`, the `xmin` of its rows.
        xact_id -> BigInt,
        oldest_received_at -> Timestamptz,
        newest_received_at -> Timestamptz,
        events -> Integer,
        committed_at -> Timestamptz,
    }
}

diesel::table! {
    /// Rollups: events stored per topic and minute of `received_at`; a minute's count is the sum of its
    /// rows (one per batch transaction until the maintenance folds them). Kept by the writers in their
    /// batch transactions (migration `2025-04-05-000000_event_counts`).
    event_counts (topic, minute, xact_id) {
        topic -> Text,
        minute -> Timestamptz,
        xact_id -> BigInt,
        events -> BigInt,
    }
}

diesel::table! {
    /// Auto-indexes: how often analysts filtered or sorted by a payload field, per topic and hour, as
    /// the stats-api counts it (migration `2025-04-10-000000_field_usage`).
    field_usage (topic, field, hour) {
        topic -> Text,
        field -> Text,
        hour -> Timestamptz,
        uses -> BigInt,
    }
}

diesel::table! {
    /// The fields the maintenance gave an expression index for their use (`db::auto_index`).
    auto_indexed_fields (topic, field) {
        topic -> Text,
        field -> Text,
        chosen_at -> Timestamptz,
        ready_at -> Nullable<Timestamptz>,
        last_used -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    events,
    dead_letters,
    writer_runs,
    alert_state,
    topic_watermarks,
    event_commits,
    event_counts,
    field_usage,
    auto_indexed_fields
);
