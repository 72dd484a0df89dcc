//! SIGHUP in the writer: the topics directory is read again, so a topic added while the system runs is
//! written without a restart. Its Kafka topic is created (when `kafka.create_topics`), its field indexes
//! are built (when `writer.run_migrations`), and the consumer's subscription grows to include it: with
//! cooperative-sticky assignment only the new partitions are assigned, the others keep being written
//! throughout, and whatever a rebalance hands back is read again from the committed offsets (the unique
//! key makes that harmless).
//!
//! A topic removed from the directory stays subscribed until the writer restarts: its messages still in
//! Kafka were accepted with a 202 and must reach Postgres. A directory that does not load (bad JSON, an
//! incompatible schema version) changes nothing; the failure is logged and counted
//! (`eventgate_topic_reloads_total{outcome="failed"}`).
//!
//! The handler is installed before the writer starts consuming: without one, SIGHUP's default action
//! ends the process, and operators send SIGHUP to every service after editing the configuration.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context;
use rdkafka::consumer::Consumer;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::Config;

use crate::metrics::WriterMetrics;
use crate::writer::WriterConsumer;

/// What a reload needs: the configuration read at start-up, the consumer, and what it subscribes to.
pub struct TopicReloader {
    config: Config,
    consumer: Arc<WriterConsumer>,
    metrics: Arc<WriterMetrics>,
    subscribed: tokio::sync::Mutex<BTreeSet<String>>,
    /// Why the last reload failed, until one succeeds (the readiness probe's warning).
    last_failure: std::sync::Mutex<Option<String>>,
}

impl TopicReloader {
    pub(crate) fn new(
        config: Config,
        consumer: Arc<WriterConsumer>,
        metrics: Arc<WriterMetrics>,
        subscribed: BTreeSet<String>,
    ) -> TopicReloader {
        metrics.topics_subscribed.set(subscribed.len() as i64);
        TopicReloader {
            config,
            consumer,
            metrics,
            subscribed: tokio::sync::Mutex::new(subscribed),
            last_failure: std::sync::Mutex::new(None),
        }
    }

    fn lock_last_failure(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The readiness probe's warning while the last reload failed.
    pub fn warning(&self) -> Option<String> {
        self.lock_last_failure().as_ref().map(|error| {
            format!("topics not reloaded: {error}; the writer goes on with the topics it has")
        })
    }

    /// Installs the SIGHUP handler now (a SIGHUP after this returns never ends the process) and spawns
    /// the task that reloads on each signal. Call it from within the runtime.
    pub fn reload_on_sighup(self: Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let mut hangups = signal(SignalKind::hangup())?;
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading topics");
                self.reload_now().await;
            }
        }))
    }

    /// One reload, as on SIGHUP; answers the topics added to the subscription.
    pub async fn reload_now(&self) -> Vec<String> {
        match self.reload().await {
            Ok(added) => {
                *self.lock_last_failure() = None;
                self.metrics.topic_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(added = ?added, "topics reloaded");
                added
            }
            Err(error) => {
                *self.lock_last_failure() = Some(format!("{error:#}"));
                self.metrics
                    .topic_reloads
                    .with_label_values(&["failed"])
                    .inc();
                tracing::error!(
                    error = format!("{error:#}"),
                    "topics not reloaded; the writer goes on with the topics it has"
                );
                Vec::new()
            }
        }
    }

    async fn reload(&self) -> anyhow::Result<Vec<String>> {
        let catalogue =
            Catalogue::load_dir(&self.config.catalogue.topics_dir).context("loading topics")?;
        let kafka = &self.config.kafka;
        let wanted = eventgate_core::kafka::kafka_topics(kafka, &catalogue);
        // One reload at a time: two SIGHUPs in a row must not race on the subscription.
        let mut subscribed = self.subscribed.lock().await;
        let added: Vec<String> = wanted
            .into_iter()
            .filter(|topic| !subscribed.contains(topic))
            .collect();
        if added.is_empty() {
            return Ok(added);
        }
        if let Err(error) = eventgate_core::kafka::ensure_topics(kafka, &catalogue).await {
            // As at start-up: the broker may be away, or its operators create topics.
            tracing::warn!(%error, "could not ensure Kafka topics exist");
        }
        if self.config.writer.run_migrations {
            // The new topics' partitions and indexes, before their first events arrive.
            let maintained = crate::maintenance::now(&self.config, &catalogue).await?;
            self.metrics.maintenance.record(&maintained);
        }
        let all: Vec<&str> = subscribed
            .iter()
            .map(String::as_str)
            .chain(added.iter().map(String::as_str))
            .collect();
        self.consumer
            .subscribe(&all)
            .context("subscribing to the topics")?;
        subscribed.extend(added.iter().cloned());
        self.metrics.topics_subscribed.set(subscribed.len() as i64);
        Ok(added)
    }
}
