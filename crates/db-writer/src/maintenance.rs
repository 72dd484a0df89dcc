//! The writers' share of the history's upkeep: every `storage.maintenance_interval_ms`, one maintenance
//! run ([`eventgate_core::db::partitions`]) as the schema owner (`writer.migration_database_url`; a
//! writer without it leaves the upkeep to `eventgate maintain`), by whichever writer gets the advisory
//! lock first; the others skip that turn. The topics are read from
//! the topics directory at each run, so a topic added there gets its partitions even before a SIGHUP.
//! A failed run is logged and counted; the next one tries again (the alert
//! `EventgateMaintenanceNotRunning` fires when none succeeded for an hour).

use std::time::Duration;

use anyhow::Context;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Registry};
use tokio_util::sync::CancellationToken;

use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::Config;
use eventgate_core::db::partitions::{maintain, Maintained, StoragePolicy};
use eventgate_core::metrics::{counter_vec, gauge_vec};

/// What the last run saw, for dashboards and alerts (only the writer that ran it updates them).
pub struct MaintenanceMetrics {
    /// Runs by outcome: `ok`, `failed`, `skipped` (another writer held the lock).
    pub runs: IntCounterVec,
    /// When the last successful run ended (Unix seconds).
    pub last_success: IntGauge,
    /// Partitions (leaves) per topic; `(legacy)` and `(default)` for those holding several topics.
    pub partitions: IntGaugeVec,
    /// The start of a topic's oldest partition (Unix seconds).
    pub oldest_partition: IntGaugeVec,
    /// Bytes of a topic's partitions, indexes included.
    pub bytes: IntGaugeVec,
    /// Where the created partitions end (Unix seconds): later events go to `events_after`.
    pub covered_until: IntGauge,
    /// Events in `events_after` and the spans' default leaves, to be moved into their own (an estimate).
    pub default_events: IntGauge,
    /// Auto-indexed fields per topic (`eventgate_core::db::auto_index`).
    pub auto_indexes: IntGaugeVec,
}

impl MaintenanceMetrics {
    pub fn new(registry: &Registry) -> MaintenanceMetrics {
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let runs = counter_vec(
            registry,
            "eventgate_maintenance_runs_total",
            "Maintenance runs of the event history's partitions, by outcome (ok, failed, skipped)",
            &["outcome"],
        );
        for outcome in ["ok", "failed", "skipped"] {
            runs.with_label_values(&[outcome]);
        }
        MaintenanceMetrics {
            runs,
            last_success: gauge(
                "eventgate_maintenance_last_success_timestamp_seconds",
                "When the last successful maintenance run ended",
            ),
            partitions: gauge_vec(
                registry,
                "eventgate_partitions",
                "Partitions of the event history per topic",
                &["topic"],
            ),
            oldest_partition: gauge_vec(
                registry,
                "eventgate_oldest_partition_timestamp_seconds",
                "Start of the oldest partition holding the topic's events",
                &["topic"],
            ),
            bytes: gauge_vec(
                registry,
                "eventgate_topic_bytes",
                "Bytes of the topic's partitions, indexes included",
                &["topic"],
            ),
            covered_until: gauge(
                "eventgate_partitions_covered_until_timestamp_seconds",
                "End of the last created span: events received later land in events_after",
            ),
            default_events: gauge(
                "eventgate_default_partition_events",
                "Events in events_after and the spans' default leaves, waiting to be moved into their own partitions (estimate)",
            ),
            auto_indexes: gauge_vec(
                registry,
                "eventgate_auto_indexes",
                "Payload fields of the topic given an expression index because analysts filter or sort by them",
                &["topic"],
            ),
        }
    }

    pub fn record(&self, maintained: &Maintained) {
        self.runs.with_label_values(&["ok"]).inc();
        self.last_success
            .set(time::OffsetDateTime::now_utc().unix_timestamp());
        self.partitions.reset();
        self.oldest_partition.reset();
        self.bytes.reset();
        for (topic, share) in &maintained.layout.topics {
            self.partitions
                .with_label_values(&[topic])
                .set(i64::try_from(share.partitions).unwrap_or(i64::MAX));
            self.bytes.with_label_values(&[topic]).set(share.bytes);
            if let Some(start) = share.oldest_span_start {
                self.oldest_partition.with_label_values(&[topic]).set(start);
            }
        }
        if let Some(until) = maintained.layout.covered_until {
            self.covered_until.set(until);
        }
        self.default_events
            .set(maintained.layout.default_events_estimate);
        self.auto_indexes.reset();
        for (topic, fields) in &maintained.auto_indexes {
            self.auto_indexes
                .with_label_values(&[topic])
                .set(i64::try_from(fields.len()).unwrap_or(i64::MAX));
        }
    }
}

/// One run now, after the one running (if any), for `catalogue`: a writer at start and after a reload,
/// so that a new topic has its partitions and indexes before its first events.
pub async fn now(config: &Config, catalogue: &Catalogue) -> anyhow::Result<Maintained> {
    let policy = StoragePolicy::new(catalogue, &config.storage);
    let maintained = eventgate_core::db::maintain_now(config.writer.migration_url(), &policy)
        .await
        .context("maintaining the event history's partitions")?;
    log(&maintained);
    Ok(maintained)
}

/// The policy of the topics as they are on disk now.
pub fn current_policy(config: &Config) -> anyhow::Result<StoragePolicy> {
    let catalogue = Catalogue::load_dir(&config.catalogue.topics_dir)?;
    Ok(StoragePolicy::new(&catalogue, &config.storage))
}

/// One run: logs what it did. `Ok(false)`: another writer was running it.
pub async fn run_once(config: &Config, metrics: &MaintenanceMetrics) -> anyhow::Result<bool> {
    let policy = current_policy(config)?;
    let client = eventgate_core::db::tls::connect(config.writer.migration_url()).await?;
    let now = time::OffsetDateTime::now_utc();
    match maintain(&client, &policy, now).await? {
        None => {
            metrics.runs.with_label_values(&["skipped"]).inc();
            Ok(false)
        }
        Some(maintained) => {
            log(&maintained);
            metrics.record(&maintained);
            Ok(true)
        }
    }
}

pub fn log(maintained: &Maintained) {
    let report = &maintained.report;
    tracing::info!(
        created = report.created.len(),
        moved_events = report.moved_events,
        dropped = ?report.dropped,
        dropped_bytes = report.dropped_bytes,
        indexes_built = report.indexes_built.len(),
        indexes_rebuilt = ?report.indexes_rebuilt,
        dead_letters_deleted = report.dead_letters_deleted,
        auto_indexes_chosen = ?report.auto_indexes_chosen,
        auto_indexes_dropped = ?report.auto_indexes_dropped,
        deferred = ?report.deferred,
        "maintenance of the event history done"
    );
}

/// Runs the maintenance every `storage.maintenance_interval_ms` until `stop` (not at all when 0).
pub async fn run_every_interval(
    config: Config,
    metrics: std::sync::Arc<crate::metrics::WriterMetrics>,
    stop: CancellationToken,
) {
    let every = config.storage.maintenance_interval_ms;
    if every == 0 {
        tracing::info!("maintenance of the event history left to `eventgate maintain` (storage.maintenance_interval_ms = 0)");
        return;
    }
    // The writer's own role may not create or drop partitions: without the owner's URL there is
    // nothing this loop could do but fail every time.
    if config
        .writer
        .migration_database_url
        .expose()
        .trim()
        .is_empty()
    {
        tracing::warn!(
            "maintenance of the event history not run by this writer: writer.migration_database_url \
             is empty; run `eventgate maintain` on a schedule, or set it"
        );
        return;
    }
    let mut ticks = tokio::time::interval(Duration::from_millis(every));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(error) = run_once(&config, &metrics.maintenance).await {
            metrics
                .maintenance
                .runs
                .with_label_values(&["failed"])
                .inc();
            tracing::error!(
                error = format!("{error:#}"),
                "maintenance of the event history failed"
            );
        }
    }
}
