//! The consume → batch → write → commit loop of one member of the consumer group.
//!
//! Up to [`WRITES_IN_FLIGHT`] batches are written at once (each on its own connection) while the next
//! one is consumed (each closed by count, bytes or time: [`crate::batch`], so a writer holds at most
//! `WRITES_IN_FLIGHT + 1` batches' bytes of messages, plus librdkafka's prefetch, bounded by the same
//! `writer.max_batch_bytes`); their offsets are committed in batch order, each only once it and every earlier
//! batch are written ([`crate::write`] writes them), and only for partitions still owned since their
//! messages were read ([`crate::rebalance`]). A stopping writer writes and commits the batch in hand,
//! records its clean stop and leaves the group.
//!
//! Batches adapt to the load: a batch is written as soon as the consumer has nothing more ready for
//! it and a write can start (an idle writer writes each event at once), and grows while both writes
//! are busy (under load batches fill up to `writer.batch_size`, as large as before). The count, bytes
//! and `writer.batch_timeout_ms` still bound each batch.
//!
//! The loop never stops polling the consumer for long: when the batch being collected is full and the
//! writes in progress are stalled (retried while the database is down, or slow), it pauses its
//! partitions and keeps polling, which keeps the member in the group (`max.poll.interval.ms`) and serves
//! rebalances; it resumes them once there is room again.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::{AlertsConfig, Config, KafkaConfig, WriterConfig};
use eventgate_core::db::pool::PoolSettings;
use eventgate_core::db::PgPool;

use crate::alerts::{AlertTasks, Alerts};
use crate::batch::{Batch, BatchLimits, Consumed};
use crate::error::WriterError;
use crate::health;
use crate::metrics::WriterMetrics;
use crate::monitor::Monitor;
use crate::rebalance::{SharedOwnership, WriterContext};
use crate::runs;
use crate::write::BatchStore;

/// Batches written at once, each on its own pool connection. Two keep Postgres busy while the writer
/// consumes and decodes, and while the other write waits for its commit (WAL flush) — and on 2 cores two
/// backends insert about 1.3× as fast as one (docs/PERFORMANCE.md, writer).
pub const WRITES_IN_FLIGHT: usize = 2;

/// A batch being written: gives back the batch, whether it was written (false: abandoned at shutdown),
/// and the spans that end once it is committed.
type WriteInFlight<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Batch, bool, Vec<tracing::Span>)> + Send + 'a>,
>;

/// How long a stopping writer lets queued failure emails go out.
const ALERTS_GRACE: Duration = Duration::from_secs(5);
/// How long a stopping writer waits for the group to take its partitions back.
const LEAVE_GRACE: Duration = Duration::from_secs(5);
/// How long the batch being collected may stay full, waiting for a stalled write, before the writer
/// pauses its partitions and polls again. Ordinary writes take far less, so the common back-pressure
/// costs no pause: pausing drops the messages librdkafka fetched ahead, which are fetched again on
/// resume. At most a quarter of `max.poll.interval.ms`.
const STALL_BEFORE_PAUSE: Duration = Duration::from_secs(1);

pub(crate) type WriterConsumer = StreamConsumer<WriterContext>;

pub struct Writer {
    consumer: Arc<WriterConsumer>,
    /// The partitions owned and since when, kept by the rebalance callbacks.
    ownership: SharedOwnership,
    store: BatchStore,
    config: WriterConfig,
    kafka: KafkaConfig,
    pub metrics: Arc<WriterMetrics>,
    /// How long a stopping writer keeps trying to write the batch in hand (`shutdown.timeout_ms`).
    shutdown_grace: Duration,
    /// Trace contexts of the batch being collected (one insert span per traced event).
    traces: std::sync::Mutex<eventgate_core::telemetry::kafka_context::BatchTraces>,
    alert_tasks: AlertTasks,
    alerts_config: AlertsConfig,
    instance: String,
    /// Reads the topics again on SIGHUP and subscribes to the new ones.
    topic_reloader: Arc<crate::reload::TopicReloader>,
}

impl Writer {
    /// Applies migrations (when configured), creates the pool and joins the consumer group.
    pub async fn build(config: &Config) -> anyhow::Result<Writer> {
        let catalogue =
            Catalogue::load_dir(&config.catalogue.topics_dir).context("loading topics")?;
        let url = config.writer.database_url.expose();
        if config.writer.run_migrations {
            // As the schema owner: the writer's own role may only insert and read.
            let owner_url = config.writer.migration_url();
            let applied = eventgate_core::db::run_migrations(owner_url)
                .await
                .context("applying migrations")?;
            tracing::info!(applied, "migrations up to date");
            // The topics' partitions for now and ahead, and their indexes, before the first insert.
            crate::maintenance::now(config, &catalogue).await?;
        }
        let pool_settings = PoolSettings {
            // A lock held on `events` fails the write with a timeout, which is retried.
            lock_timeout_ms: (config.writer.lock_timeout_ms > 0)
                .then_some(config.writer.lock_timeout_ms),
            ..PoolSettings::new(config.writer.pool_size)
        };
        let pool = eventgate_core::db::build_pool(url, &pool_settings).context("database_url")?;
        // Refused credentials or certificates stop the start; unreachable brokers do not.
        eventgate_core::kafka::start_up(&config.kafka, &catalogue).await?;
        let metrics = Arc::new(WriterMetrics::new());
        metrics.register_pool(&pool, config.writer.pool_size);
        let instance = runs::instance_name();
        let (alerts, alert_tasks) = Alerts::start(
            config,
            format!("db-writer {instance}, group {}", config.writer.group_id),
            metrics.clone(),
        )
        .context("setting up failure emails")?;
        let session_timeout_ms = config.writer.session_timeout_ms;
        let max_poll_interval_ms = config.writer.max_poll_interval_ms;
        if max_poll_interval_ms < session_timeout_ms {
            anyhow::bail!(
                "writer.max_poll_interval_ms ({max_poll_interval_ms}) must be at least \
                 writer.session_timeout_ms ({session_timeout_ms})"
            );
        }
        let ownership = SharedOwnership::default();
        let consumer: WriterConsumer = eventgate_core::kafka::client_config(&config.kafka)
            .set("group.id", &config.writer.group_id)
            // Offsets are committed by hand, after the rows are committed.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A new group starts at the beginning: nothing already in the topic is skipped.
            .set("auto.offset.reset", "earliest")
            // Pick up partitions of topics created after start-up quickly.
            .set("topic.metadata.refresh.interval.ms", "5000")
            // How long a fetch may wait for data. Kafka answers as soon as there is some, but brokers that
            // hold every fetch for the whole wait (tansu, the local stack's) would add up to this much
            // to every event's way into Postgres (default 500 ms; docs/PERFORMANCE.md, end to end).
            // 10 ms: an idle writer's fetches then cost a few requests per second more, and an event
            // waits at most that long for its fetch (the idle target is 50 ms from 202 to readable).
            .set("fetch.wait.max.ms", "10")
            // What librdkafka prefetches is bounded by the operator's batch budget too, not by its
            // default of 64 MiB (unless set in `kafka.client`).
            .set("queued.max.messages.kbytes", prefetch_kbytes(config))
            // Statistics feed the consumer lag gauges (0 turns them off).
            .set(
                "statistics.interval.ms",
                config.telemetry.kafka_stats_interval_ms.to_string(),
            )
            // A killed writer's partitions move to the others after this long.
            .set("session.timeout.ms", session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (session_timeout_ms / 3).clamp(1, 3000).to_string(),
            )
            // A writer that has not polled for this long is dropped from the group. It keeps polling
            // while its writes are retried, so this catches only a wedged writer.
            .set("max.poll.interval.ms", max_poll_interval_ms.to_string())
            // A member joining or leaving moves only the partitions that change owner; the others
            // keep being written throughout the rebalance (eager assignors revoke every partition of
            // every member). Revocation: `crate::rebalance`.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create_with_context(WriterContext {
                metrics: metrics.clone(),
                ownership: ownership.clone(),
            })
            .context("creating Kafka consumer")?;
        let topics = eventgate_core::kafka::kafka_topics(&config.kafka, &catalogue);
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topic_refs)
            .context("subscribing to topics")?;
        tracing::info!(group = %config.writer.group_id, topics = ?topics, "joined consumer group");
        let consumer = Arc::new(consumer);
        let topic_reloader = Arc::new(crate::reload::TopicReloader::new(
            config.clone(),
            consumer.clone(),
            metrics.clone(),
            topics.into_iter().collect(),
        ));
        Ok(Writer {
            consumer,
            ownership,
            store: BatchStore::new(
                pool,
                alerts,
                metrics.clone(),
                &config.writer,
                &config.storage,
            ),
            config: config.writer.clone(),
            kafka: config.kafka.clone(),
            metrics,
            shutdown_grace: Duration::from_millis(config.shutdown.timeout_ms),
            traces: Default::default(),
            alert_tasks,
            alerts_config: config.alerts.clone(),
            instance,
            topic_reloader,
        })
    }

    /// What SIGHUP runs ([`crate::reload`]).
    pub fn topic_reloader(&self) -> Arc<crate::reload::TopicReloader> {
        self.topic_reloader.clone()
    }

    pub fn pool(&self) -> &PgPool {
        &self.store.pool
    }

    /// What the readiness probe checks: the pool, and the broker through the consumer's client.
    pub fn readiness(&self) -> health::Readiness {
        health::Readiness::new(
            self.store.pool.clone(),
            self.consumer.clone(),
            self.topic_reloader.clone(),
        )
    }

    fn lock_traces(
        &self,
    ) -> std::sync::MutexGuard<'_, eventgate_core::telemetry::kafka_context::BatchTraces> {
        // Poisoned only if a push panicked; the contexts are still usable.
        self.traces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Consumes and writes until `shutdown` is cancelled, then writes and commits the batch in hand and
    /// leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let monitor_stop = CancellationToken::new();
        let monitor = tokio::spawn(
            Monitor {
                pool: self.store.pool.clone(),
                consumer: self.consumer.clone(),
                alerts: self.store.alerts.clone(),
                group_id: self.config.group_id.clone(),
                instance: self.instance.clone(),
                run_id: None,
                interval: Duration::from_millis(self.alerts_config.probe_interval_ms.max(1)),
                crash_loop_crashes: self.alerts_config.crash_loop_crashes,
            }
            .run(monitor_stop.clone()),
        );
        let timeout = Duration::from_millis(self.config.batch_timeout_ms);
        let limits = BatchLimits::of(&self.config);
        let stall_before_pause =
            STALL_BEFORE_PAUSE.min(Duration::from_millis(self.config.max_poll_interval_ms / 4));
        let mut batch = Batch::default();
        // The batches being written while the next one is collected, oldest first: they complete in
        // this order, and each one's offsets are committed here, after its rows and every earlier
        // batch's rows.
        let mut writing: FuturesOrdered<WriteInFlight<'_>> = FuturesOrdered::new();
        // Batches not (known to be) written and committed when the writer was told to stop.
        let mut unwritten: Vec<Batch> = Vec::new();
        // Since when the collected batch has been full with no write to hand it to.
        let mut full_since: Option<tokio::time::Instant> = None;
        let mut paused = false;
        // Whether the consumer had nothing more ready when last polled.
        let mut drained = false;
        let mut revocations_seen = 0;
        loop {
            let deadline = batch.started.map(|started| started + timeout);
            let room = !batch.is_full(limits);
            let pause_at = full_since
                .filter(|_| !paused)
                .map(|since| since + stall_before_pause);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((done, written, spans)) = writing.next(), if !writing.is_empty() => {
                    if !written {
                        unwritten.push(done);
                        break;
                    }
                    self.commit(&done).await;
                    drop(spans);
                }
                // A batch that is due waits while the writes in progress are as many as allowed.
                _ = sleep_until_or_forever(deadline), if writing.len() < WRITES_IN_FLIGHT => {}
                _ = sleep_until_or_forever(pause_at) => {
                    paused = self.pause_partitions();
                    if !paused {
                        // Try again after another stall period, not in a tight loop.
                        full_since = Some(tokio::time::Instant::now());
                    }
                }
                // Paused partitions deliver nothing, but the poll keeps the member in the group and
                // serves rebalances. What still arrives (fetched before the pause took effect) is
                // kept: a message taken from the consumer and dropped would be skipped for good.
                received = self.consumer.recv(), if room || paused => {
                    let mut received = Some(received);
                    // Then whatever else is ready at once, up to a full batch: when nothing more is,
                    // the consumer is drained and the batch may go.
                    while let Some(next) = received.take() {
                        match next {
                            Ok(message) => self.collect(&mut batch, &message),
                            Err(error) => {
                                self.metrics.consumer_errors.inc();
                                tracing::warn!(%error, "consumer error");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                break;
                            }
                        }
                        if batch.is_full(limits) && !paused {
                            break;
                        }
                        received = self.consumer.recv().now_or_never();
                    }
                    drained = received.is_none();
                }
            }
            let revocations = self.ownership.lock().revocations();
            if revocations != revocations_seen {
                revocations_seen = revocations;
                let dropped = batch.retain_owned(&self.ownership.lock());
                if dropped > 0 {
                    tracing::info!(
                        messages = dropped,
                        "dropped the revoked partitions' messages from the batch being collected"
                    );
                }
            }
            let due = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            // Drained: nothing more to wait for, so a free write takes the batch now.
            let full = batch.is_full(limits) || ((due || drained) && !batch.is_empty());
            if full && writing.len() < WRITES_IN_FLIGHT {
                let next = std::mem::take(&mut batch);
                // Now, before more messages arrive: the spans are those of this batch's messages.
                // They end once the batch is committed.
                let spans = self.lock_traces().open_insert_spans(next.len());
                let (writer, shutdown) = (&self, &shutdown);
                writing.push_back(Box::pin(async move {
                    let written = writer.store.write(&next, shutdown).await;
                    (next, written, spans)
                }));
            }
            if batch.is_full(limits) {
                full_since.get_or_insert_with(tokio::time::Instant::now);
            } else {
                full_since = None;
                if paused {
                    paused = !self.resume_partitions();
                }
            }
        }
        // Stopping: the writes in progress end (a first attempt is not interrupted) and are committed in
        // order, as long as every earlier batch was.
        while let Some((done, written, spans)) = writing.next().await {
            if written && unwritten.is_empty() {
                self.commit(&done).await;
            } else {
                unwritten.push(done);
            }
            drop(spans);
        }
        drop(writing);
        let in_hand: Vec<Batch> = unwritten
            .into_iter()
            .chain((!batch.is_empty()).then_some(batch))
            .collect();
        if !in_hand.is_empty() {
            // Shutting down: write what is in hand, oldest first, within a grace period; if that fails,
            // the offsets stay uncommitted and the group reads the batches again.
            let grace = CancellationToken::new();
            let cancel_grace = grace.clone();
            let grace_period = self.shutdown_grace;
            let timer = tokio::spawn(async move {
                tokio::time::sleep(grace_period).await;
                cancel_grace.cancel();
            });
            for mut batch in in_hand {
                let spans = self.lock_traces().open_insert_spans(batch.len());
                if !self.flush(&mut batch, spans, &grace).await {
                    // A later batch must not commit past this one's offsets.
                    tracing::warn!(
                        batch.size = batch.len(),
                        "batch abandoned at shutdown; it will be read again"
                    );
                    break;
                }
            }
            timer.abort();
        }
        self.consumer.unsubscribe();
        // Leaving the group takes the revocation, which librdkafka hands over on poll: poll until it
        // happened (bounded), so that the partitions go to the other members now, not after the session
        // timeout. Messages still arriving are dropped uncommitted; their next owner reads them.
        let _ = tokio::time::timeout(LEAVE_GRACE, async {
            while self.metrics.assigned_partitions.get() > 0 {
                tokio::select! {
                    _ = self.consumer.recv() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
        .await;
        monitor_stop.cancel();
        if let Ok(Some(run_id)) = monitor.await {
            // A clean stop is not a crash: it must not count towards a crash loop.
            let recorded = tokio::time::timeout(
                ALERTS_GRACE,
                crate::db::runs::record_clean_stop(&self.store.pool, run_id),
            )
            .await;
            match recorded {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(
                    error = %WriterError::RecordCleanStop(error),
                    "could not record the clean stop; it may count as a crash"
                ),
                Err(_) => tracing::warn!(
                    "could not record the clean stop in time; it may count as a crash"
                ),
            }
        }
        self.alert_tasks.stop(ALERTS_GRACE).await;
        tracing::info!("writer stopped");
        Ok(())
    }

    /// Adds a message to the batch being collected, unless its partition was revoked already (then it
    /// is its next owner's).
    fn collect(&self, batch: &mut Batch, message: &rdkafka::message::BorrowedMessage<'_>) {
        let epoch = self
            .ownership
            .lock()
            .epoch(message.topic(), message.partition());
        if let Some(epoch) = epoch {
            self.lock_traces().push(message);
            batch.push(Consumed::from_message(
                message,
                &self.kafka.topic_prefix,
                epoch,
            ));
        }
    }

    /// Writes the batch, retrying with capped backoff until it is written or `shutdown` is cancelled,
    /// then commits its offsets. Returns false when abandoned because of shutdown. `insert_spans` (of
    /// the batch's traced messages) end when this returns: after the commit, or when abandoned.
    async fn flush(
        &self,
        batch: &mut Batch,
        insert_spans: Vec<tracing::Span>,
        shutdown: &CancellationToken,
    ) -> bool {
        let _insert_spans = insert_spans;
        if !self.store.write(batch, shutdown).await {
            return false;
        }
        self.commit(batch).await;
        batch.clear();
        true
    }

    /// Pauses every assigned partition (and, through the rebalance callbacks, those assigned while
    /// paused). Returns whether they are paused.
    fn pause_partitions(&self) -> bool {
        let assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(error) => {
                tracing::warn!(%error, "cannot read the assignment to pause it");
                return false;
            }
        };
        self.ownership.lock().set_paused(true);
        if let Err(error) = self.consumer.pause(&assignment) {
            self.ownership.lock().set_paused(false);
            tracing::warn!(%error, "cannot pause the partitions");
            return false;
        }
        tracing::info!(
            kafka.partitions = assignment.count(),
            "writes stalled with a full batch: partitions paused, still polling"
        );
        true
    }

    /// Resumes every assigned partition; they are fetched again from the last message read. Returns
    /// whether they were resumed.
    fn resume_partitions(&self) -> bool {
        let resumed = self
            .consumer
            .assignment()
            .and_then(|assignment| self.consumer.resume(&assignment));
        match resumed {
            Ok(()) => {
                self.ownership.lock().set_paused(false);
                tracing::info!("room in the batch again: partitions resumed");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot resume the partitions; trying again");
                false
            }
        }
    }

    /// Commits the offsets of a written batch, for the partitions still owned since its messages were
    /// read; the others are left to their next reader ([`crate::rebalance`]).
    async fn commit(&self, batch: &Batch) {
        let plan = batch.offsets_to_commit(&self.ownership.lock());
        if !plan.abandoned.is_empty() {
            tracing::info!(
                kafka.partitions = ?plan.abandoned,
                "not committing the offsets of partitions revoked while their batch was written"
            );
        }
        if plan.offsets.is_empty() {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in plan.offsets {
            if let Err(error) =
                offsets.add_partition_offset(&topic, partition, Offset::Offset(next))
            {
                tracing::error!(%error, "cannot build offset list");
                return;
            }
        }
        let consumer = self.consumer.clone();
        let result =
            tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => {}
            // After a rebalance another member owns the partition and reads it again from its last
            // committed offset; the rows are already written, so the replay is harmless.
            Ok(Err(error)) => {
                self.metrics.commit_failures.inc();
                tracing::warn!(%error, "offset commit failed; the batch may be read again")
            }
            Err(error) => tracing::error!(%error, "offset commit task failed"),
        }
    }
}

/// `queued.max.messages.kbytes` for the consumer: `writer.max_batch_bytes` in KiB, unless the operator
/// set the property in `kafka.client`.
fn prefetch_kbytes(config: &Config) -> String {
    match config
        .kafka
        .client
        .properties()
        .get("queued.max.messages.kbytes")
    {
        Some(value) => (*value).to_owned(),
        None => (config.writer.max_batch_bytes / 1024)
            .clamp(1, 2_097_151)
            .to_string(),
    }
}

async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
