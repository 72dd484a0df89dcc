//! The writer's Prometheus collectors (all listed in `docs/OPERATIONS.md`), served on `writer.listen`.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};
use rdkafka::statistics::Statistics;

use eventgate_core::db::PgPool;
use eventgate_core::metrics::{counter_vec, gauge_vec, HttpMetrics, PoolCollector};

use crate::alerts::AlertKind;
use crate::db::Written;

pub struct WriterMetrics {
    pub registry: Registry,
    pub http: HttpMetrics,
    pub rows_inserted: IntCounter,
    pub dead_letters: IntCounter,
    /// Events whose producer re-sent an id it had used on the topic with another payload (parked as
    /// `conflicting_duplicate` dead letters, also counted in `dead_letters`).
    pub conflicting_duplicates: IntCounter,
    pub write_retries: IntCounter,
    pub batch_size: Histogram,
    pub flush_seconds: Histogram,
    pub assigned_partitions: IntGauge,
    /// Messages not yet committed by the group, per Kafka topic and partition this writer owns, from
    /// librdkafka's statistics (every `telemetry.kafka_stats_interval_ms`).
    pub consumer_lag: IntGaugeVec,
    /// Errors the consumer reported (broker down, rebalance trouble…); it keeps polling.
    pub consumer_errors: IntCounter,
    /// Offset commits that failed after a batch was written (the batch is read again; harmless).
    pub commit_failures: IntCounter,
    /// Topic reloads (SIGHUP), by outcome (`ok`, `failed`).
    pub topic_reloads: IntCounterVec,
    /// Kafka topics the consumer subscribes to.
    pub topics_subscribed: IntGauge,
    /// Failure emails sent to the maintainers, by kind (`AlertKind::as_str`; `alerts/mailer.rs` counts them,
    /// see [`WriterMetrics::email`]).
    pub emails_sent: IntCounterVec,
    /// Failure emails that could not be sent, by kind.
    pub emails_failed: IntCounterVec,
    /// The history's partitions and their upkeep ([`crate::maintenance`]).
    pub maintenance: crate::maintenance::MaintenanceMetrics,
}

impl WriterMetrics {
    pub fn new() -> WriterMetrics {
        let registry = Registry::new();
        eventgate_core::metrics::register_build_info(&registry, "db-writer");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let rows_inserted = counter(
            "eventgate_writer_rows_inserted_total",
            "Events inserted (duplicates not counted)",
        );
        let dead_letters = counter(
            "eventgate_writer_dead_letters_total",
            "Messages parked in dead_letters",
        );
        let conflicting_duplicates = counter(
            "eventgate_writer_conflicting_duplicates_total",
            "Events re-sent by their producer with a stored id and another payload (parked)",
        );
        let write_retries = counter(
            "eventgate_writer_write_retries_total",
            "Failed batch writes that were retried",
        );
        let consumer_errors = counter(
            "eventgate_writer_consumer_errors_total",
            "Errors reported by the Kafka consumer",
        );
        let commit_failures = counter(
            "eventgate_writer_commit_failures_total",
            "Offset commits that failed after the batch was written",
        );
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("static metric definition");
            registry
                .register(Box::new(h.clone()))
                .expect("metric registered once");
            h
        };
        let batch_size = histogram(
            "eventgate_writer_batch_size",
            "Messages per written batch",
            vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0],
        );
        let flush_seconds = histogram(
            "eventgate_writer_flush_seconds",
            "Time to write a batch, retries included",
            prometheus::exponential_buckets(0.001, 2.0, 15).expect("static buckets"),
        );
        let assigned_partitions = IntGauge::new(
            "eventgate_writer_assigned_partitions",
            "Kafka partitions this writer currently owns",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(assigned_partitions.clone()))
            .expect("metric registered once");
        let consumer_lag = gauge_vec(
            &registry,
            "eventgate_writer_consumer_lag",
            "Messages of a partition not yet committed by the group (high watermark - committed offset)",
            &["topic", "partition"],
        );
        let emails_sent = counter_vec(
            &registry,
            "eventgate_writer_emails_sent_total",
            "Failure emails sent to the maintainers, by kind",
            &["kind"],
        );
        let emails_failed = counter_vec(
            &registry,
            "eventgate_writer_emails_failed_total",
            "Failure emails that could not be sent, by kind",
            &["kind"],
        );
        let topic_reloads = counter_vec(
            &registry,
            "eventgate_topic_reloads_total",
            "Reloads of the topics directory on SIGHUP, by outcome",
            &["outcome"],
        );
        for outcome in ["ok", "failed"] {
            topic_reloads.with_label_values(&[outcome]);
        }
        let topics_subscribed = IntGauge::new(
            "eventgate_writer_topics_subscribed",
            "Kafka topics the writer's consumer subscribes to",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(topics_subscribed.clone()))
            .expect("metric registered once");
        // Every kind starts at 0, so `increase()` in an alert sees the first email too.
        for kind in AlertKind::ALL {
            emails_sent.with_label_values(&[kind.as_str()]);
            emails_failed.with_label_values(&[kind.as_str()]);
        }
        WriterMetrics {
            http: HttpMetrics::new(&registry),
            maintenance: crate::maintenance::MaintenanceMetrics::new(&registry),
            assigned_partitions,
            registry,
            rows_inserted,
            dead_letters,
            conflicting_duplicates,
            write_retries,
            batch_size,
            flush_seconds,
            consumer_lag,
            consumer_errors,
            commit_failures,
            topic_reloads,
            topics_subscribed,
            emails_sent,
            emails_failed,
        }
    }

    /// Counts one failure email of `kind` (`AlertKind::as_str`), sent or given up on.
    pub fn email(&self, kind: &str, sent: bool) {
        let counter = if sent {
            &self.emails_sent
        } else {
            &self.emails_failed
        };
        counter.with_label_values(&[kind]).inc();
    }

    /// Adds the pool's usage (`eventgate_db_pool_*{pool="writer"}`), read at scrape time.
    pub fn register_pool(&self, pool: &PgPool, max_size: u32) {
        PoolCollector::register(&self.registry, "writer", pool.clone(), max_size);
    }

    pub fn record_flush(&self, messages: usize, written: Written, elapsed: Duration) {
        self.batch_size.observe(messages as f64);
        self.flush_seconds.observe(elapsed.as_secs_f64());
        self.rows_inserted.inc_by(written.events as u64);
        self.dead_letters.inc_by(written.dead_letters as u64);
        self.conflicting_duplicates
            .inc_by(written.conflicts.len() as u64);
    }

    /// Consumer lag per owned partition from one librdkafka statistics report. Partitions this writer no
    /// longer owns disappear from the gauge, so the sum over all writers is the group's lag.
    pub fn record_statistics(&self, statistics: &Statistics) {
        self.consumer_lag.reset();
        for (topic, topic_stats) in &statistics.topics {
            for (partition, stats) in &topic_stats.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if *partition < 0 || !owned(&stats.fetch_state) {
                    continue;
                }
                if let Some(lag) = partition_lag(
                    stats.consumer_lag,
                    stats.hi_offset,
                    stats.lo_offset,
                    stats.committed_offset,
                ) {
                    self.consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(lag);
                }
            }
        }
    }
}

/// A partition is fetched by this consumer unless librdkafka reports it idle.
fn owned(fetch_state: &str) -> bool {
    !matches!(fetch_state, "none" | "stopped" | "stopping")
}

/// librdkafka's own figure when it has one. It has none (-1) before the group's first commit on the
/// partition (the group starts from the earliest offset, so it lags by everything the partition holds),
/// nor when the high watermark it last saw trails the committed offset (caught up: 0).
fn partition_lag(consumer_lag: i64, hi: i64, lo: i64, committed: i64) -> Option<i64> {
    if consumer_lag >= 0 {
        Some(consumer_lag)
    } else if hi < 0 {
        None
    } else if committed < 0 {
        Some((hi - lo.max(0)).max(0))
    } else {
        Some((hi - committed).max(0))
    }
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_falls_back_to_the_partition_size_before_the_first_commit() {
        assert_eq!(partition_lag(7, 100, 0, 93), Some(7));
        assert_eq!(partition_lag(-1, 100, 20, -1001), Some(80));
        assert_eq!(partition_lag(-1, -1, -1, -1001), None);
        assert_eq!(partition_lag(-1, 90, 0, 93), Some(0));
        assert!(owned("active"));
        assert!(!owned("none"));
    }

    #[test]
    fn statistics_report_sets_lag_per_owned_partition() {
        let window = r#"{"min":0,"max":0,"avg":0,"sum":0,"stddev":0,"p50":0,"p75":0,"p90":0,"p95":0,"p99":0,"p99_99":0,"outofrange":0,"hdrsize":0,"cnt":0}"#;
        let report = format!(
            r#"{{"name": "c", "client_id": "c", "type": "consumer", "ts": 1, "time": 1, "age": 1,
            "replyq": 0, "msg_cnt": 0, "msg_size": 0, "msg_max": 0, "msg_size_max": 0,
            "tx": 0, "tx_bytes": 0, "rx": 0, "rx_bytes": 0, "txmsgs": 0, "txmsg_bytes": 0,
            "rxmsgs": 0, "rxmsg_bytes": 0, "simple_cnt": 0, "metadata_cache_cnt": 0, "brokers": {{}},
            "topics": {{"eventgate.audit.logs": {{"topic": "eventgate.audit.logs", "age": 1,
                "metadata_age": 1, "batchsize": {window}, "batchcnt": {window},
                "partitions": {{"0": {}, "1": {}, "-1": {}}}}}}}}}"#,
            partition(0, "active", 12),
            partition(1, "none", 5),
            partition(-1, "none", -1),
        );
        let statistics: Statistics = serde_json::from_str(&report).unwrap();
        let metrics = WriterMetrics::new();
        metrics.record_statistics(&statistics);
        let text = eventgate_core::metrics::render(&metrics.registry);
        assert!(
            text.contains(
                r#"eventgate_writer_consumer_lag{partition="0",topic="eventgate.audit.logs"} 12"#
            ),
            "{text}"
        );
        assert!(!text.contains(r#"partition="1""#), "{text}");
    }

    fn partition(id: i32, fetch_state: &str, lag: i64) -> String {
        format!(
            r#"{{"partition": {id}, "broker": 1, "leader": 1, "desired": true, "unknown": false,
            "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0, "xmit_msgq_bytes": 0,
            "fetchq_cnt": 0, "fetchq_size": 0, "fetch_state": "{fetch_state}", "query_offset": 0,
            "next_offset": 0, "app_offset": 0, "stored_offset": 0, "committed_offset": 88,
            "eof_offset": 0, "lo_offset": 0, "hi_offset": 100, "ls_offset": 100,
            "consumer_lag": {lag}, "consumer_lag_stored": {lag}, "txmsgs": 0, "txbytes": 0,
            "rxmsgs": 0, "rxbytes": 0, "msgs": 0, "rx_ver_drops": 0, "msgs_inflight": 0,
            "next_ack_seq": 0, "next_err_seq": 0, "acked_msgid": 0}}"#
        )
    }
}
