//! All of the writer's SQL, on the services' shared pool (`eventgate_core::db::PgPool`, tokio-postgres):
//! - [`events`]: the batch insert, events and dead letters in one transaction with the topics' watermarks
//!   and commit log (what the stats-api's freshness and live tail read), and the commit log's pruning;
//! - [`runs`]: the run bookkeeping of the crash-loop check (`writer_runs`, `alert_state` under a row
//!   lock).
//!
//! Every function fails with an `eventgate_core::db::DbError`, whose cause (by SQLSTATE) the callers
//! decide by: `crate::error` says what the writer does about each. Nothing here decides anything.

pub mod events;
pub mod runs;

pub use events::{
    insert_batch, prune_commit_log, DeadLetter, DeadLetterReason, IdempotencyWindow, ParkedKey,
    StoredIds, Written,
};
