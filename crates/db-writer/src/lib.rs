//! eventgate-db-writer: a member of a Kafka consumer group that writes events into Postgres.
//!
//! Run as many instances as there are partitions: the group shares the partitions among them.
//! Loop ([`writer`]): consume → batch (`batch`: flush at `batch_size` events, `max_batch_bytes` of
//! messages or `batch_timeout_ms`; payloads kept as the JSON text they arrived as, [`envelope`]) →
//! one transaction per batch ([`write`]: a plain `INSERT ... SELECT FROM unnest(...)` of the events plus
//! the batch's dead letters; only when that meets a key stored already — an event is unique per
//! (id, topic, producer) — is it written again with `ON CONFLICT ... DO NOTHING`, parking a re-sent id
//! with another payload as a `conflicting_duplicate`) → commit the batch's offsets. All of the writer's
//! SQL is in [`db`].
//!
//! Invariants:
//! - Offsets are committed only after the rows are committed, and only for partitions still owned since
//!   their messages were read ([`rebalance`]: cooperative-sticky assignment; a revoked partition's
//!   messages in hand are left to its next owner). A writer that dies mid-batch leaves the offsets where
//!   they were, the batch is read again, and the unique key makes the replay harmless.
//! - A database outage never drops a batch: the writer keeps it and retries with capped backoff.
//! - A message the database will never accept goes to `dead_letters` and its offset is committed, so it
//!   cannot block its partition. Which failure is which is decided by its SQLSTATE ([`error`]).
//! - Failure emails ([`alerts`]) never hold up the loop: the loop only signals, background tasks decide
//!   and send. `monitor` probes Postgres and the broker and keeps this run's row in `writer_runs` fresh
//!   for the crash-loop check ([`runs`]).
//!
//! [`Application`] is the service as its binary runs it: the writer plus its health and metrics listener
//! on `writer.listen`, stopped by SIGTERM/SIGINT; SIGHUP reloads the topics ([`reload`]); every few
//! minutes one of the writers maintains the history's partitions ([`maintenance`]).

pub mod alerts;
mod batch;
pub mod db;
pub mod envelope;
pub mod error;
pub mod health;
pub mod maintenance;
pub mod metrics;
mod monitor;
pub mod rebalance;
pub mod reload;
pub mod runs;
pub mod write;
pub mod writer;

use std::future::Future;

use actix_web::dev::Server;
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use eventgate_core::config::Config;
use eventgate_core::shutdown::Lifecycle;

pub use crate::error::WriterError;
pub use crate::metrics::WriterMetrics;
pub use crate::writer::{Writer, WRITES_IN_FLIGHT};

/// The writer with its health and metrics listener, as the binary runs it.
pub struct Application {
    writer: Writer,
    health: Server,
    port: u16,
    lifecycle: Lifecycle,
    reloading: tokio::task::JoinHandle<()>,
    /// The history's upkeep every `storage.maintenance_interval_ms` ([`maintenance`]).
    maintaining: tokio::task::JoinHandle<()>,
    maintenance_stop: CancellationToken,
}

impl Application {
    /// Builds the writer (migrations when configured, pool, consumer group) and binds `writer.listen`.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let writer = Writer::build(&config).await?;
        // Before anything else can take a while: from here on a SIGHUP reloads, never ends the writer.
        let reloading = writer
            .topic_reloader()
            .reload_on_sighup()
            .context("installing the SIGHUP handler")?;
        let lifecycle = Lifecycle::new();
        let (health, port) = health::serve(
            &config.writer.listen,
            writer.readiness(),
            writer.metrics.clone(),
            lifecycle.clone(),
        )
        .with_context(|| format!("binding {}", config.writer.listen))?;
        tracing::info!(port, "writer health and metrics listening");
        let maintenance_stop = CancellationToken::new();
        let maintaining = tokio::spawn(maintenance::run_every_interval(
            config.clone(),
            writer.metrics.clone(),
            maintenance_stop.clone(),
        ));
        Ok(Application {
            writer,
            health,
            port,
            lifecycle,
            reloading,
            maintaining,
            maintenance_stop,
        })
    }

    /// The port of the health and metrics listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until SIGTERM or SIGINT, then stops gracefully (see [`Application::run_until`]).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(eventgate_core::shutdown::signal()).await
    }

    /// Consumes and writes until `stop` resolves, then: readiness 503, the batch in hand written and
    /// committed, the group left (within `shutdown.timeout_ms`), queued failure emails sent, and the
    /// listener closed last, so that probes see the whole stop.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let health = self.health.handle();
        let health_task = tokio::spawn(self.health);
        let shutdown = CancellationToken::new();
        let writing = self.writer.run(shutdown.clone());
        tokio::pin!(writing);
        let result = tokio::select! {
            result = &mut writing => result,
            () = stop => {
                self.lifecycle.begin_stop();
                tracing::info!("shutdown requested: writing and committing the batch in hand");
                shutdown.cancel();
                writing.await
            }
        };
        self.reloading.abort();
        self.maintenance_stop.cancel();
        // A run in progress is cut short: every step is its own transaction, so nothing is left half done.
        self.maintaining.abort();
        health.stop(true).await;
        let _ = health_task.await;
        result
    }
}
