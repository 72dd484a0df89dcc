//! Writing a batch into Postgres, whatever it takes: the batch is written whole, or its refused rows are
//! parked and the rest written, or it is kept and retried — decided by the failure's cause
//! ([`crate::error::Remedy`]). Offsets are not this module's business: the writer's loop commits them
//! once [`BatchStore::write`] says the batch is in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use eventgate_core::config::WriterConfig;
use eventgate_core::db::PgPool;

use crate::alerts::{AlertKind, Alerts};
use crate::batch::Batch;
use crate::db::{self, DeadLetter, DeadLetterReason, IdempotencyWindow, StoredIds, Written};
use crate::envelope::Envelope;
use crate::error::{Remedy, WriterError};
use crate::metrics::WriterMetrics;

/// Inserts events and dead letters in one transaction, each event once per (id, topic, producer). A
/// plain `INSERT` first; when it meets a key stored already (a unique violation), the transaction is
/// written again skipping the stored keys and parking the skipped events whose payload differs
/// (conflicting duplicates). Both give the same rows; the second costs round trips only when there are
/// duplicates.
/// Retries are recognised across partitions within the default `storage.idempotency_window_ms`
/// ([`store_batch_within`] takes the configured one).
pub async fn store_batch(
    conn: &mut Client,
    events: &[&Envelope],
    dead_letters: &[DeadLetter],
) -> Result<Written, WriterError> {
    store_batch_within(conn, events, dead_letters, &IdempotencyWindow::default()).await
}

/// [`store_batch`] with the idempotency window of the configuration.
pub async fn store_batch_within(
    conn: &mut Client,
    events: &[&Envelope],
    dead_letters: &[DeadLetter],
    window: &IdempotencyWindow,
) -> Result<Written, WriterError> {
    match insert(conn, events, dead_letters, StoredIds::Refuse, window).await {
        Err(error) if error.remedy() == Remedy::SkipStoredIds => {
            insert(conn, events, dead_letters, StoredIds::Skip, window).await
        }
        outcome => outcome,
    }
}

async fn insert(
    conn: &mut Client,
    events: &[&Envelope],
    dead_letters: &[DeadLetter],
    stored_ids: StoredIds,
    window: &IdempotencyWindow,
) -> Result<Written, WriterError> {
    db::insert_batch(conn, events, dead_letters, stored_ids, window)
        .await
        .map_err(|error| WriterError::write_batch(events.len(), dead_letters.len(), error))
}

/// The writer's side of Postgres: the pool, the retry policy, and who hears of failures.
pub(crate) struct BatchStore {
    pub pool: PgPool,
    pub alerts: Alerts,
    pub metrics: Arc<WriterMetrics>,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// `writer.commit_log_retention_ms`: older rows of the tail's commit log are deleted.
    pub commit_log_retention_ms: u64,
    /// When the commit log was last pruned (at most once per [`PRUNE_EVERY`]).
    pub last_prune: std::sync::Mutex<Option<Instant>>,
    /// `storage.idempotency_window_ms`: retries recognised across partitions.
    pub idempotency: IdempotencyWindow,
}

/// How often a writer prunes the commit log, after a batch (every writer does: the deletes are
/// idempotent and short).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl BatchStore {
    pub fn new(
        pool: PgPool,
        alerts: Alerts,
        metrics: Arc<WriterMetrics>,
        config: &WriterConfig,
        storage: &eventgate_core::config::StorageConfig,
    ) -> BatchStore {
        BatchStore {
            pool,
            alerts,
            metrics,
            retry_initial: Duration::from_millis(config.retry_initial_ms),
            retry_max: Duration::from_millis(config.retry_max_ms),
            commit_log_retention_ms: config.commit_log_retention_ms,
            last_prune: std::sync::Mutex::new(None),
            idempotency: IdempotencyWindow::of(storage),
        }
    }

    /// Writes the batch, retrying with capped backoff until it is written or `shutdown` is cancelled
    /// (then false), without committing its offsets.
    pub async fn write(&self, batch: &Batch, shutdown: &CancellationToken) -> bool {
        let started = Instant::now();
        let mut events: Vec<&Envelope> = Vec::with_capacity(batch.len());
        let mut dead_letters: Vec<DeadLetter> = Vec::new();
        for message in &batch.messages {
            match &message.decoded {
                Ok(event) => events.push(event),
                Err(dead) => dead_letters.push(dead.clone()),
            }
        }
        let mut backoff = self.retry_initial;
        let mut failed = false;
        let (written, parked) = loop {
            match self.try_write(batch, &events, &dead_letters).await {
                Ok(written) => break written,
                Err(error) => {
                    failed = true;
                    self.alerts.down(AlertKind::DatabaseUnreachable, &error);
                    self.metrics.write_retries.inc();
                    tracing::warn!(
                        %error,
                        db.cause = ?error.cause(),
                        db.sqlstate = error.db_error().sqlstate(),
                        retry.in_ms = backoff.as_millis() as u64,
                        batch.size = batch.len(),
                        "batch not written, will retry"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.retry_max);
                }
            }
        };
        if failed {
            self.alerts.up(AlertKind::DatabaseUnreachable);
        }
        // Only the messages parked by this write: a replayed poison message was reported already.
        let mut newly_parked: Vec<DeadLetter> = parked
            .into_iter()
            .filter(|dead| written.parked.binary_search(&dead.key()).is_ok())
            .collect();
        newly_parked.extend(written.conflicts.iter().cloned());
        self.alerts.dead_letters(&newly_parked);
        self.metrics
            .record_flush(batch.len(), written, started.elapsed());
        self.prune_commit_log().await;
        true
    }

    /// Deletes the commit log's expired rows when a minute has passed since the last time. Outside the
    /// batch's transaction; a failure is only logged (the rows wait for the next time).
    async fn prune_commit_log(&self) {
        {
            let mut last = self.last_prune.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let pruned = match self.pool.get().await {
            Ok(conn) => db::prune_commit_log(&conn, self.commit_log_retention_ms).await,
            Err(error) => Err(error.into()),
        };
        match pruned {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "commit log pruned"),
            Err(error) => tracing::warn!(%error, "commit log not pruned; will retry"),
        }
    }

    /// One attempt at writing the batch; an error is one to retry later. When the database refuses data
    /// of the batch, the rows it refuses one by one become dead letters and the rest are written.
    async fn try_write(
        &self,
        batch: &Batch,
        events: &[&Envelope],
        dead_letters: &[DeadLetter],
    ) -> Result<(Written, Vec<DeadLetter>), WriterError> {
        let mut conn =
            self.pool.get().await.map_err(|error| {
                WriterError::write_batch(events.len(), dead_letters.len(), error)
            })?;
        let error =
            match store_batch_within(&mut conn, events, dead_letters, &self.idempotency).await {
                Ok(mut written) => {
                    written.parked.sort();
                    return Ok((written, dead_letters.to_vec()));
                }
                Err(error) => error,
            };
        if error.remedy() != Remedy::IsolateRefusedRows {
            return Err(error);
        }
        tracing::warn!(%error, db.sqlstate = error.db_error().sqlstate(), "database refused the batch; isolating the messages it cannot store");
        let mut good: Vec<&Envelope> = Vec::new();
        let mut parked: Vec<DeadLetter> = dead_letters.to_vec();
        // Conflicting duplicates are parked by the row's own write; the final write finds them parked.
        let mut conflicts: Vec<DeadLetter> = Vec::new();
        let mut inserted = 0;
        for message in &batch.messages {
            let Ok(event) = &message.decoded else {
                continue;
            };
            match store_batch_within(&mut conn, &[event], &[], &self.idempotency).await {
                Ok(single) => {
                    inserted += single.events;
                    conflicts.extend(single.conflicts);
                    good.push(event);
                }
                Err(refused) if refused.remedy() == Remedy::IsolateRefusedRows => {
                    parked.push(DeadLetter {
                        // The error text starts as it always did ("database refused …").
                        error: format!("database refused the event: {}", refused.refusal()),
                        ..DeadLetter::of_event(event, DeadLetterReason::Refused, String::new())
                    })
                }
                Err(outage) => return Err(outage),
            }
        }
        // The good rows are in already; writing them again is a no-op that parks the refused ones in the
        // same transaction as the batch's other dead letters.
        let mut written = store_batch_within(&mut conn, &good, &parked, &self.idempotency).await?;
        written.events = inserted;
        written.dead_letters += conflicts.len();
        written.parked.extend(conflicts.iter().map(DeadLetter::key));
        written.conflicts.extend(conflicts);
        written.parked.sort();
        Ok((written, parked))
    }
}
