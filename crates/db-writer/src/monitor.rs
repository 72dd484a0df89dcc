//! The writer's watch on what it depends on, every `alerts.probe_interval_ms`, beside the event loop:
//! - Postgres answers `SELECT 1` → database up/down for the alerts (the write path reports too, the
//!   probe covers an idle writer);
//! - the broker answers a metadata request → broker up/down;
//! - this run is alive in `writer_runs`, and the group's crash-loop check (see [`crate::runs`]).
//!
//! The probes are the ones readiness uses: `eventgate_core::db::ping` and
//! `eventgate_core::kafka::broker_reachable`.
//!
//! Nothing here touches a batch or an offset; a slow probe delays only the next probe.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use eventgate_core::db::PgPool;

use crate::alerts::{AlertKind, Alerts};
use crate::error::WriterError;
use crate::runs;
use crate::writer::WriterConsumer;

/// A probe never waits less than this for an answer, however short the interval.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Monitor {
    pub pool: PgPool,
    pub consumer: Arc<WriterConsumer>,
    pub alerts: Alerts,
    pub group_id: String,
    pub instance: String,
    pub run_id: Option<i64>,
    pub interval: Duration,
    pub crash_loop_crashes: u32,
}

impl Monitor {
    pub async fn run(mut self, stop: CancellationToken) -> Option<i64> {
        let stale_after = self.interval * runs::STALE_INTERVALS;
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut database_up_since: Option<Instant> = None;
        let mut checked_once = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            self.probe_broker().await;
            if !self.probe_database().await {
                database_up_since = None;
                continue;
            }
            let up_since = *database_up_since.get_or_insert_with(Instant::now);
            if let Err(error) = self.heartbeat().await {
                tracing::warn!(%error, "cannot record that this writer is alive");
                continue;
            }
            // After an outage the other writers' heartbeats are old too: judge crashes only once every
            // live writer has had time to refresh its own (the start-up check has no such history).
            if !checked_once || up_since.elapsed() >= stale_after {
                checked_once = true;
                self.check_crash_loop(stale_after).await;
            }
        }
        self.run_id
    }

    async fn probe_database(&self) -> bool {
        let timeout = self.interval.max(MIN_PROBE_TIMEOUT);
        let result = match tokio::time::timeout(timeout, eventgate_core::db::ping(&self.pool)).await
        {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        match result {
            Ok(()) => {
                self.alerts.up(AlertKind::DatabaseUnreachable);
                true
            }
            Err(error) => {
                self.alerts.down(AlertKind::DatabaseUnreachable, error);
                false
            }
        }
    }

    async fn probe_broker(&self) {
        let timeout = self.interval.max(MIN_PROBE_TIMEOUT);
        match eventgate_core::kafka::broker_reachable(self.consumer.clone(), timeout).await {
            Ok(()) => self.alerts.up(AlertKind::BrokerUnreachable),
            Err(error) => self.alerts.down(AlertKind::BrokerUnreachable, error),
        }
    }

    async fn heartbeat(&mut self) -> Result<(), WriterError> {
        match self.run_id {
            Some(run_id) => {
                // Runs older than two windows matter to no check.
                let keep = self.alerts.policy().window * 2;
                crate::db::runs::heartbeat(&self.pool, run_id, &self.group_id, keep)
                    .await
                    .map_err(WriterError::Heartbeat)?;
            }
            // The database was down when this writer started: record the start now.
            None => {
                let run_id =
                    crate::db::runs::record_start(&self.pool, &self.group_id, &self.instance)
                        .await
                        .map_err(WriterError::RecordStart)?;
                self.run_id = Some(run_id);
            }
        }
        Ok(())
    }

    async fn check_crash_loop(&self, stale_after: Duration) {
        let checked = runs::check_crash_loop(
            &self.pool,
            &self.group_id,
            self.crash_loop_crashes,
            self.alerts.policy(),
            stale_after,
        )
        .await;
        match checked {
            Ok(Some(notice)) => self.alerts.notice(notice),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "crash-loop check failed"),
        }
    }
}
